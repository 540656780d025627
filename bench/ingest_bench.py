"""Ingest throughput: verified 1 MiB chunks per second through the whole HTTP path, against a raw PUT.

Full path, per chunk: signed announce (entry stored, upload target), PUT of the bytes, signed
verify (hash, signature, chain, media demux, receipt signed and stored), with the first-keyframe
decode running after each receipt as in production. Baselines in the same run with the same bytes
and concurrency: a bare aiohttp PUT handler writing each body to its own file with O_EXCL and
fsync (same durability as the local store); for S3, bare presigned PUTs to the same endpoint.

    .venv/bin/python bench/ingest_bench.py [--chunks 200] [--devices 8] [--backends sqlite-local,...]

Backends: sqlite-local, postgres-local, postgres-s3 (PostgreSQL and LocalStack are started here,
as in the tests). Prints one line per run; copy the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custody.clock import SystemClock
from server.app import start_server
from server.storage.base import object_key
from tests.helpers.device import SimDevice
from tests.helpers.media import Chunk, make_chunk
from tests.integration.server.conftest import server_config
from tests.services.postgres import PostgresServer
from tests.services.s3 import LocalStackS3


def one_mib_chunk() -> Chunk:
    """A real 5 s 640x360 MP4 of about 1 MiB (noise at a fixed bitrate)."""
    return make_chunk(seconds=5, fps=30, width=640, height=360, bitrate=1_600_000)


async def run_full(url: str, admin_token: str, chunk: Chunk, devices: int, per_device: int) -> float:
    """Seconds to deliver and verify devices * per_device chunks."""
    clock = SystemClock()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=devices * 2)) as session:
        sims = []
        for _ in range(devices):
            async with session.post(url + "/api/v1/enrollment-tokens", json={},
                                    headers={"Authorization": f"Bearer {admin_token}"}) as r:
                token = (await r.json())["token"]
            sim = SimDevice(url, session, clock)
            await sim.enroll(token)
            await sim.announce(sim.event("start"))
            sims.append(sim)

        async def device_loop(sim: SimDevice) -> None:
            for _ in range(per_device):
                result = await sim.deliver(chunk)
                assert result["state"] == "verified"

        start = time.perf_counter()
        await asyncio.gather(*(device_loop(s) for s in sims))
        return time.perf_counter() - start


async def run_raw_disk(chunk: Chunk, devices: int, per_device: int, root: Path) -> float:
    """Seconds for the same PUTs to a bare aiohttp handler that writes each body with O_EXCL + fsync."""
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        data = await request.read()
        path = root / request.match_info["name"]

        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(write)
        return web.Response(status=201)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_put("/{name}", put)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=devices * 2)) as session:
            async def loop(d: int) -> None:
                for i in range(per_device):
                    async with session.put(f"http://127.0.0.1:{port}/{d}-{i}", data=chunk.data,
                                           headers={"Content-Type": "video/mp4"}) as r:
                        assert r.status == 201

            start = time.perf_counter()
            await asyncio.gather(*(loop(d) for d in range(devices)))
            return time.perf_counter() - start
    finally:
        await runner.cleanup()


async def run_raw_s3(store: Any, chunk: Chunk, devices: int, per_device: int) -> float:
    """Seconds for the same bytes PUT to presigned S3 URLs (checksum and lock headers, no server in between)."""
    sha = hashlib.sha256(chunk.data).hexdigest()
    now = SystemClock().now_ms()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=devices * 2)) as session:
        async def loop(d: int) -> None:
            for i in range(per_device):
                target = store.upload_target(object_key("b" * 24, d * 100_000 + i, sha), sha, len(chunk.data), now,
                                             900)
                async with session.put(target.url, data=chunk.data, headers=target.headers) as r:
                    assert r.status == 200, await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(loop(d) for d in range(devices)))
        return time.perf_counter() - start


def line(label: str, seconds: float, n: int, size: int) -> str:
    rate, mbps = n / seconds, n * size / seconds / 1e6
    return f"{label:<34} {rate:8.1f} chunks/s {mbps:8.1f} MB/s  ({n} chunks, {seconds:.2f} s)"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200, help="chunks per run")
    parser.add_argument("--devices", type=int, default=8, help="concurrent devices")
    parser.add_argument("--backends", default="sqlite-local,postgres-local,postgres-s3")
    args = parser.parse_args()
    per_device = max(1, args.chunks // args.devices)
    n = per_device * args.devices
    chunk = one_mib_chunk()
    print(f"chunk: {len(chunk.data)} bytes, {chunk.codec.video_frames} frames; {args.devices} devices x "
          f"{per_device} chunks; cpu count {os.cpu_count()}")
    backends = args.backends.split(",")
    tmp_services = tempfile.TemporaryDirectory()
    pg = PostgresServer() if any(b.startswith("postgres") for b in backends) else None
    s3 = LocalStackS3(Path(tmp_services.name) / "localstack") if any(b.endswith("s3") for b in backends) else None
    if pg:
        pg.start()
    if s3:
        s3.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw_disk = await run_raw_disk(chunk, args.devices, per_device, Path(tmp) / "raw")
            print(line("raw aiohttp PUT to disk (fsync)", raw_disk, n, len(chunk.data)))
            for backend in backends:
                data_dir = Path(tmp) / backend
                config = server_config(
                    data_dir,
                    database_url=pg.create_database(backend.replace("-", "_")) if pg and
                    backend.startswith("postgres") else None,
                    s3=s3 if backend.endswith("s3") else None,
                    bucket=s3.make_bucket(object_lock=True) if s3 and backend.endswith("s3") else None)
                server = await start_server(config)
                try:
                    token = server.services.datadir.admin_token.read_text().strip()
                    full = await run_full(server.url, token, chunk, args.devices, per_device)
                    print(line(f"full ingest path [{backend}]", full, n, len(chunk.data))
                          + f"  = {raw_disk / full:.2f}x raw disk")
                    if backend.endswith("s3"):
                        raw_s3 = await run_raw_s3(server.services.store, chunk, args.devices, per_device)
                        print(line("raw presigned PUT to S3", raw_s3, n, len(chunk.data))
                              + f"  full path = {raw_s3 / full:.2f}x raw S3")
                finally:
                    await server.stop()
    finally:
        if s3:
            s3.stop()
        if pg:
            pg.stop()
        tmp_services.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
