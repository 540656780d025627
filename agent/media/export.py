"""Joining a recording's chunks into one MP4 without re-encoding.

The chunks of one recording come from one continuous encoder session, so their H.264 and AAC
streams continue each other exactly; only the container timestamps start again at 0 in each
chunk. Export demuxes every chunk in order, shifts its timestamps by the running video duration
and muxes the packets into one file. A chunk's audio pre-roll (packets before its start, with
negative timestamps, copies of the previous chunk's last packets) is dropped except in the first
chunk, so the sound is continuous and no packet appears twice.

Chunks from different encoder sessions (different parameter sets) cannot be joined this way;
export refuses them rather than write a file that plays wrongly. It never overwrites a file.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from agent.errors import ChunkFormatError

log = logging.getLogger(__name__)

ChunkInput = bytes | str | Path


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What was written."""

    path: Path
    chunks: int
    video_frames: int
    duration_ms: int
    audio_packets: int


@dataclass(frozen=True, slots=True)
class _StreamShape:
    codec: str
    extradata: bytes
    params: tuple[int, ...]


@contextmanager
def _open_chunk(item: ChunkInput, index: int) -> Iterator[Any]:
    try:
        container = av.open(io.BytesIO(item)) if isinstance(item, bytes) else av.open(str(item))
    except (av.FFmpegError, OSError) as exc:
        raise ChunkFormatError(f"chunk {index} cannot be opened: {exc}") from exc
    try:
        yield container
    finally:
        container.close()


def _shape(stream: Any) -> _StreamShape:
    ctx = stream.codec_context
    if stream.type == "video":
        params: tuple[int, ...] = (ctx.width, ctx.height)
    else:
        params = (ctx.sample_rate, ctx.channels)
    return _StreamShape(ctx.name, bytes(ctx.extradata or b""), params)


def export_recording(chunks: Iterable[ChunkInput], out_path: str | Path) -> ExportResult:
    """Remux ``chunks`` (bytes or file paths, in recording order) into one MP4 at ``out_path``."""
    items = list(chunks)
    out = Path(out_path)
    if not items:
        raise ChunkFormatError("nothing to export: no chunks")
    if out.exists():
        raise ChunkFormatError(f"{out} exists; export never overwrites a file")

    # (1) Every chunk must continue the same streams: same codec, size and parameter sets.
    video_shape: _StreamShape | None = None
    audio_shape: _StreamShape | None = None
    video_tpl_index, audio_tpl_index = 0, None
    for i, item in enumerate(items):
        with _open_chunk(item, i) as c:
            if not c.streams.video:
                raise ChunkFormatError(f"chunk {i} has no video stream")
            shape = _shape(c.streams.video[0])
            if video_shape is None:
                video_shape = shape
            elif shape != video_shape:
                raise ChunkFormatError(
                    f"chunk {i} has different video parameters from chunk 0; "
                    "chunks of different encoder sessions cannot be joined without re-encoding"
                )
            if c.streams.audio:
                ashape = _shape(c.streams.audio[0])
                if audio_shape is None:
                    audio_shape, audio_tpl_index = ashape, i
                elif ashape != audio_shape:
                    raise ChunkFormatError(
                        f"chunk {i} has different audio parameters from the chunks before it"
                    )

    # (2) Remux with timestamps shifted by the video duration of the chunks before.
    tmp = out.with_name(f".{out.name}.partial")
    offset = Fraction(0)
    frames = audio_packets = 0
    with _open_chunk(items[video_tpl_index], video_tpl_index) as vt:
        audio_rate = audio_shape.params[0] if audio_shape else None
        options = {"movflags": "+faststart", "movie_timescale": str(audio_rate or 90_000)}
        try:
            output = av.open(str(tmp), "w", format="mp4", options=options)
        except (av.FFmpegError, OSError) as exc:
            raise ChunkFormatError(f"cannot write {out}: {exc}") from exc
        try:
            out_v = output.add_stream_from_template(vt.streams.video[0])
            out_a = None
            if audio_tpl_index is not None:
                with _open_chunk(items[audio_tpl_index], audio_tpl_index) as at:
                    out_a = output.add_stream_from_template(at.streams.audio[0])
            for i, item in enumerate(items):
                with _open_chunk(item, i) as c:
                    vs = c.streams.video[0]
                    streams = [vs] + ([c.streams.audio[0]] if c.streams.audio and out_a is not None else [])
                    video_ticks = 0
                    for packet in c.demux(*streams):
                        if packet.size == 0 or packet.pts is None:
                            continue  # demuxer's end-of-stream marker
                        if i > 0 and packet.stream.type == "audio" and packet.pts < 0:
                            # Pre-roll: the chunk before holds these samples. (A pre-roll shifted
                            # to a positive time would be played, not hidden, so it goes too.)
                            continue
                        tb = packet.time_base
                        shift = round(offset / tb)
                        packet.pts += shift
                        packet.dts = (packet.dts if packet.dts is not None else packet.pts - shift) + shift
                        if packet.stream.type == "video":
                            video_ticks += packet.duration or 0
                            frames += 1
                            packet.stream = out_v
                        else:
                            audio_packets += 1
                            packet.stream = out_a
                        output.mux(packet)
                    offset += Fraction(video_ticks) * vs.time_base
            output.close()
        except BaseException:
            output.close()
            tmp.unlink(missing_ok=True)
            raise
    # Link rather than rename: fails instead of replacing a file that appeared meanwhile.
    try:
        os.link(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    duration_ms = round(offset * 1000)
    log.info("exported %d chunks, %d frames, %d ms to %s", len(items), frames, duration_ms, out)
    return ExportResult(out, len(items), frames, duration_ms, audio_packets)
