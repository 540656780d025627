"""Agent benchmark, part 2: what committing a chunk costs, and the agent's memory while recording.

1. Per-chunk commit cost through the buffer (SHA-256, manifest build and Ed25519 signature, one
   atomic durable write of media + envelope, index update) against a bare atomic durable write of
   the same bytes (temporary file created exclusively, fsync, rename, directory fsync), measured
   alternately in the same run on the same file system. Goal: <= 1.25x. Wall time, because fsync
   waits on the disk.
2. Peak RSS of ``custody agent record`` recording synthetic 720p30 at 4 Mbit/s for 60 s of footage
   (with sound, 5 s chunks, 30 s pre-event setting), read from the child's rusage. Goal: <= 150 MB.
   ``--realtime`` records at real speed (60 s); by default the simulated clock runs it as fast as
   the encoder allows, which keeps more frames in flight, not fewer.

Usage: python bench/agent_commit_bench.py [--chunk-bytes N] [--commits N] [--realtime]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.buffer import ChunkBuffer
from agent.fsops import FileOps
from custody.clock import SystemClock
from protocol.keys import SigningKey
from tests.unit.agent.buffer_helpers import FakeMeta


def meta(start_ms: int) -> FakeMeta:
    """Chunk metadata of a 720p30, 5 s chunk (the tests' FakeMeta, at the benchmark's frame size)."""
    return FakeMeta(start_ms=start_ms, width=1280, height=720)


def bare_write(directory: Path, name: str, data: bytes) -> None:
    """The baseline: exclusive temp file, fsync, rename, directory fsync."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def commit_cost(chunk_bytes: int, commits: int, where: Path) -> tuple[float, float]:
    """Median ms per commit through the buffer and per bare durable write."""
    key = SigningKey.generate()
    clock = SystemClock()
    buf = ChunkBuffer(where / "buffer", key, clock, ops=FileOps(), reserve_bytes=0)
    buf.open()
    bare_dir = where / "bare"
    bare_dir.mkdir()
    full, bare = [], []
    for i in range(commits):
        data = os.urandom(chunk_bytes)  # a fresh body each time: nothing cached by content
        t0 = time.perf_counter()
        buf.commit_chunk(data, meta(clock.now_ms()), recording_id="bench", index=i, officer_id="o-1",
                         case_step=None)
        t1 = time.perf_counter()
        bare_write(bare_dir, f"{i:012d}.chunk", data)
        t2 = time.perf_counter()
        full.append((t1 - t0) * 1000)
        bare.append((t2 - t1) * 1000)
    buf.close()
    return statistics.median(full), statistics.median(bare)


def peak_rss(realtime: bool) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of the agent recording 60 s of 720p30."""
    with tempfile.TemporaryDirectory() as d:
        args = [sys.executable, "-m", "custody", "-q", "agent", "record", "--data-dir", d, "--seconds", "60",
                "--size", "1280x720", "--fps", "30", "--bitrate", "4000000", "--chunk-seconds", "5"]
        if not realtime:
            args.append("--fast")
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunk-bytes", type=int, default=2_500_000, help="bytes per chunk (720p 4 Mbit/s 5 s)")
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--realtime", action="store_true", help="record the RSS run at real speed")
    parser.add_argument("--dir", type=Path, default=None, help="file system to measure on (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        full, bare = commit_cost(args.chunk_bytes, args.commits, Path(d))
    print(f"commit of a {args.chunk_bytes / 1e6:.1f} MB chunk: {full:.2f} ms through the buffer, "
          f"{bare:.2f} ms bare atomic durable write; ratio {full / bare:.2f}x (goal <= 1.25x)")
    rss, wall = peak_rss(args.realtime)
    print(f"peak RSS recording 60 s of 720p30 at 4 Mbit/s: {rss:.0f} MB (goal <= 150 MB), "
          f"{wall:.1f} s wall{' (real time)' if args.realtime else ' (simulated clock)'}")


if __name__ == "__main__":
    main()
