"""``custody verify`` throughput in MB/s against ``sha256sum`` over the same files, in the same run.

A real server records ``--chunks`` chunks (about 1 MB each: 5 s of noise at 1.6 Mbit/s, 320x240
H.264 + AAC) in recordings of 10, ``custody export`` downloads the package through the API, and
the package is unpacked. Then, in alternating rounds: ``sha256sum`` over every unpacked file
(the floor: reading and hashing the bytes once, nothing else), ``custody verify --no-media`` on
the unpacked directory and on the ZIP (hashes, signatures, chains, receipts, proofs), and
``custody verify`` with PyAV checking that every chunk decodes. Wall-clock medians; MB/s is
package bytes over seconds, each command a fresh process as a court would run it.

    .venv/bin/python bench/verify_bench.py [--chunks 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from custody.cli import main as cli_main
from custody.clock import FakeClock
from server.app import start_server
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api, server_config

CUSTODY = str(Path(sys.executable).with_name("custody"))


async def make_package(tmp: Path, chunks: int) -> tuple[Path, str]:
    """Record, export; return the package and the log's verifier key."""
    clock = FakeClock(start_ms=time.time_ns() // 1_000_000)
    cfg = server_config(tmp / "data", **{"scrub.enabled": False, "ingest.decode_after_receipt": False})
    srv = await start_server(cfg, clock)
    try:
        async with aiohttp.ClientSession() as session:
            admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
            device = await admin.enroll(clock)
            recordings = []
            done = 0
            while done < chunks:
                device.recording_id, device.index = f"rec-{done:05d}", 0
                await device.announce(device.event("start"))
                for i in range(min(10, chunks - done)):
                    await device.deliver(make_chunk(seconds=5.0, fps=10, width=320, height=240,
                                                    bitrate=1_600_000, seed=(done + i) % 16))
                done += min(10, chunks - done)
                await device.announce(device.event("stop"))
                recordings.append(f"{device.device_id}/{device.recording_id}")
            out = tmp / "case.zip"
            args = ["-q", "export", "-o", str(out), "--reason", "benchmark", "--no-progress",
                    "--data-dir", str(srv.services.datadir.root)]
            for r in recordings:
                args += ["--recording", r]
            assert await asyncio.to_thread(cli_main, args) == 0
            return out, srv.services.log.key_info()["vkey"]
    finally:
        await srv.stop()


def timed(cmd: list[str]) -> float:
    """Wall seconds of one command (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    """Run and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        package, vkey = asyncio.run(make_package(tmp, args.chunks))
        unpacked = tmp / "unpacked"
        with zipfile.ZipFile(package) as z:
            z.extractall(unpacked)
        files = sorted(str(p) for p in unpacked.rglob("*") if p.is_file())
        total = sum(Path(f).stat().st_size for f in files)
        runs: dict[str, list[float]] = {"sha256sum": [], "verify --no-media (dir)": [], "verify --no-media (zip)": [],
                                        "verify with media decode (zip)": []}
        commands = {
            "sha256sum": ["sha256sum", *files],
            "verify --no-media (dir)": [CUSTODY, "verify", str(unpacked), "--server-key", vkey, "--no-media"],
            "verify --no-media (zip)": [CUSTODY, "verify", str(package), "--server-key", vkey, "--no-media"],
            "verify with media decode (zip)": [CUSTODY, "verify", str(package), "--server-key", vkey],
        }
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                runs[name].append(timed(cmd))
        base = statistics.median(runs["sha256sum"])
        print(f"package: {args.chunks} chunks, {len(files)} files, {total / 1e6:.1f} MB "
              f"(zip {package.stat().st_size / 1e6:.1f} MB); median of {args.rounds} rounds, wall clock")
        print("| what | seconds | MB/s | vs sha256sum |")
        print("|---|---|---|---|")
        for name, times in runs.items():
            t = statistics.median(times)
            print(f"| {name} | {t:.2f} | {total / 1e6 / t:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
