"""Record a few chunks through the real encoder and check each one: the device's self-test.

    python -m agent.media.selftest --source synthetic --seconds 12
    python -m agent.media.selftest --source v4l2:/dev/video0+alsa:hw:1,0 --encoder h264_v4l2m2m

Each chunk must decode on its own, start on a keyframe at time 0, hold the frames and the
duration it claims, and (with sound) carry audio as long as its video. With the synthetic
source the A/V offset is measured from its flash and beep marks. A synthetic source runs as fast
as the encoder allows unless ``--realtime``, so the run also tells how much faster than real time
this machine encodes. Prints one line per chunk and a verdict; exit status 0 pass, 1 fail,
2 could not run (the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from agent.errors import AgentError
from agent.media.chunk import EncodedChunk
from agent.media.chunk_check import check_chunk
from agent.media.config import MediaConfig
from agent.media.recorder import Recorder
from agent.media.sources.spec import open_source, parse_source_spec
from agent.media.sync_marks import sync_offsets
from custody.clock import Clock, FakeClock, SystemClock

MAX_AV_OFFSET_S = 0.045  # the lip-sync a viewer tolerates (ITU-R BT.1359: +45/-125 ms)


@dataclass
class ChunkVerdict:
    """The checks of one chunk."""

    index: int
    size: int
    frames: int
    duration_ms: int
    audio_samples: int | None
    problems: list[str] = field(default_factory=list)
    av_offsets_ms: list[float] = field(default_factory=list)


@dataclass
class SelfTestResult:
    """The whole run."""

    source: str
    encoder: str | None
    chunks: list[ChunkVerdict]
    wall_s: float
    media_s: float
    dropped_frames: int
    repeated_frames: int

    @property
    def passed(self) -> bool:
        """Every chunk passed and there was at least one."""
        return bool(self.chunks) and not any(c.problems for c in self.chunks)


def check(index: int, chunk: EncodedChunk, expected_frames: int | None, synthetic: bool) -> ChunkVerdict:
    """Run every check on one chunk."""
    v = ChunkVerdict(index, chunk.size, chunk.video_frames, chunk.duration_ms, chunk.audio_samples)
    try:
        r = check_chunk(chunk.data)
    except AgentError as exc:
        v.problems.append(str(exc))
        return v
    if not r.first_frame_keyframe:
        v.problems.append("first frame is not a keyframe")
    if r.start_time_s != 0:
        v.problems.append(f"starts at {r.start_time_s} s, not 0")
    if r.video_frames != chunk.video_frames:
        v.problems.append(f"decodes to {r.video_frames} frames, claims {chunk.video_frames}")
    if expected_frames is not None and abs(chunk.video_frames - expected_frames) > 1:
        v.problems.append(f"{chunk.video_frames} frames where {expected_frames} were due")
    if abs(float(r.video_duration_s) * 1000 - chunk.duration_ms) > 1:
        v.problems.append(f"lasts {float(r.video_duration_s):.3f} s, claims {chunk.duration_ms} ms")
    if chunk.audio_codec is not None:
        if r.audio_samples == 0:
            v.problems.append("no decodable sound")
        elif abs(r.av_offset_s) > 0.05:
            v.problems.append(f"sound lasts {1000 * r.av_offset_s:+.0f} ms longer than the picture")
        if synthetic:
            try:
                v.av_offsets_ms = [1000 * x for x in sync_offsets(chunk.data, chunk.duration_ms / 1000)]
            except ValueError as exc:
                v.problems.append(f"sync marks: {exc}")
            if any(abs(x) > 1000 * MAX_AV_OFFSET_S for x in v.av_offsets_ms):
                v.problems.append(f"A/V offset {max(v.av_offsets_ms, key=abs):+.1f} ms")
    return v


async def run_selftest(
    source_spec: str,
    config: MediaConfig,
    *,
    seconds: float,
    realtime: bool = False,
    keep: Path | None = None,
    device_id: str = "selftest",
) -> SelfTestResult:
    """Record ``seconds`` from ``source_spec`` and check every chunk."""
    spec = parse_source_spec(source_spec)
    synthetic = spec.kind == "synthetic"
    clock: Clock = FakeClock(auto_advance=True) if synthetic and not realtime else SystemClock()
    source = open_source(
        spec, clock, width=config.width, height=config.height, fps=config.fps, audio=config.audio,
        audio_rate=config.audio_rate, audio_channels=config.audio_channels,
        seconds=seconds if synthetic else None,
    )  # fmt: skip
    chunks: list[EncodedChunk] = []

    async def sink(chunk: EncodedChunk) -> None:
        chunks.append(chunk)
        if keep is not None:
            await asyncio.to_thread(_write, keep / f"chunk-{len(chunks):04d}.mp4", chunk.data)

    recorder = Recorder(source, config, clock, sink, device_id=device_id, officer_id="SELFTEST")
    t0 = time.perf_counter()
    await recorder.start_recording()
    if synthetic:
        await recorder.wait_ended()
    else:
        try:
            # A file may end first; a camera runs until stopped.
            await asyncio.wait_for(recorder.wait_ended(), timeout=seconds)
        except TimeoutError:
            await recorder.stop_recording()
            await recorder.disarm()
    wall = time.perf_counter() - t0
    per_chunk = config.chunk_frames(source.video_format.fps)
    verdicts = [
        check(i, c, per_chunk if i < len(chunks) - 1 else None, synthetic) for i, c in enumerate(chunks)
    ]
    dropped = int(getattr(source, "dropped_frames", 0))
    return SelfTestResult(
        source=source.description,
        encoder=recorder.video_codec,
        chunks=verdicts,
        wall_s=wall,
        media_s=sum(c.duration_ms for c in chunks) / 1000,
        dropped_frames=dropped,
        repeated_frames=recorder.stats.frames_repeated,
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m agent.media.selftest", description=summary)
    parser.add_argument("--source", default="synthetic", help="synthetic, v4l2:DEV[+alsa:DEV] or file:PATH")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--encoder", default="auto", help="auto, libx264 or h264_v4l2m2m")
    parser.add_argument("--size", type=_size, default=(1280, 720), help="WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--fps", type=Fraction, default=Fraction(30))
    parser.add_argument("--chunk-seconds", type=int, default=5)
    parser.add_argument("--bitrate", type=int, default=4_000_000)
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--realtime", action="store_true", help="pace a synthetic source by the real clock")
    parser.add_argument("--keep", type=Path, help="write the chunks to this directory")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = MediaConfig(
            width=args.size[0], height=args.size[1], fps=args.fps, chunk_seconds=args.chunk_seconds,
            pre_event_seconds=0, video_bitrate=args.bitrate, video_encoder=args.encoder,
            audio=not args.no_audio,
        )  # fmt: skip
        result = asyncio.run(
            run_selftest(args.source, config, seconds=args.seconds, realtime=args.realtime, keep=args.keep)
        )
    except AgentError as exc:
        print(f"selftest: {exc}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    if args.json:
        print(json.dumps({**asdict(result), "passed": result.passed}, indent=2))
    else:
        print(f"source {result.source}, encoder {result.encoder}")
        for c in result.chunks:
            sync = f" A/V {','.join(f'{x:+.1f}' for x in c.av_offsets_ms)} ms" if c.av_offsets_ms else ""
            state = "ok" if not c.problems else "FAIL " + "; ".join(c.problems)
            print(f"  chunk {c.index}: {c.frames} frames {c.duration_ms} ms {c.size} B "
                  f"{c.audio_samples or 0} samples{sync}: {state}")  # fmt: skip
        speed = result.media_s / result.wall_s if result.wall_s else 0.0
        print(f"{result.media_s:.1f} s of media in {result.wall_s:.1f} s ({speed:.2f}x real time), "
              f"{result.dropped_frames} frames dropped, {result.repeated_frames} repeated")  # fmt: skip
        print("PASS" if result.passed else "FAIL")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
