"""Chunk close to verified receipt back at the agent: p50/p95/p99 over at least 500 chunks.

On loopback with a real Mosquitto, for the local store and for the S3 endpoint (LocalStack, started
here as in the tests). Devices are the agent's own classes (DeviceAgent: crash-safe buffer,
signing, MQTT link, uploader) with replayed 5 s chunks of about 600 kB, on a clock sped up
``--speed`` times, so a chunk closes on each device every 5/speed real seconds. Latency is measured
in real milliseconds from the moment the chunk's durable commit returns to the moment its receipt
has verified and freed it. Goal: p50 <= 150 ms, p99 <= 1 s.

    .venv/bin/python bench/latency_bench.py [--chunks 500] [--devices 5] [--speed 5] [--stores local,s3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.device import DeviceAgent
from agent.media.config import MediaConfig
from custody.clock import ScaledClock
from server.app import start_server
from simulators.replay import ReplayRecorder, templates
from tests.integration.server.conftest import server_config
from tests.services.mosquitto import MosquittoBroker
from tests.services.s3 import LocalStackS3


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def run(store: str, chunks: int, devices: int, speed: float, work: Path, broker: MosquittoBroker,
              s3: LocalStackS3 | None) -> list[float]:
    """Latencies (ms) of ``chunks`` chunks through one store."""
    clock = ScaledClock(speed)
    overrides: dict[str, Any] = {"mqtt.url": broker.url, "mqtt.shared_subscriptions": False,
                                 "http.access_log": False}
    kw: dict[str, Any] = {}
    if s3 is not None:
        kw = {"s3": s3, "bucket": s3.make_bucket()}
    srv = await start_server(server_config(work / "server", **kw, **overrides), clock)
    replay = templates(width=640, height=360, bitrate=1_000_000, chunk_seconds=5, count=3)
    agents: list[DeviceAgent] = []
    try:
        admin = srv.services.datadir.admin_token.read_text().strip()
        async with aiohttp.ClientSession() as s:
            for i in range(devices):
                async with s.post(srv.url + "/api/v1/enrollment-tokens", json={},
                                  headers={"Authorization": f"Bearer {admin}"}) as r:
                    token = (await r.json())["token"]

                def factory(sink: Any, device_id: str, officer: str | None) -> ReplayRecorder:
                    return ReplayRecorder(replay, clock, sink, device_id)

                agent = DeviceAgent(work / f"dev-{i}", clock, media=MediaConfig(width=640, height=360),
                                    recorder_factory=factory)
                await agent.open()
                await agent.enroll(token)
                await agent.connect(mqtt=True)
                agents.append(agent)
        per_device = -(-chunks // devices)
        await asyncio.gather(*(a.start_recording(reason="bench") for a in agents))

        async def done(a: DeviceAgent) -> None:
            assert a.uploader is not None
            while len(a.uploader.stats.latencies_ms) < per_device:
                await asyncio.sleep(0.1)

        await asyncio.gather(*(done(a) for a in agents))
        await asyncio.gather(*(a.stop_recording(reason="bench") for a in agents))
        return [ms for a in agents if a.uploader for ms in a.uploader.stats.latencies_ms[:per_device]]
    finally:
        for a in agents:
            await a.close()
        await srv.stop()


async def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--speed", type=float, default=5.0, help="simulated seconds per real second")
    parser.add_argument("--stores", default="local,s3")
    args = parser.parse_args()
    stores = args.stores.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(work / "mosquitto")
        broker.start()
        s3 = LocalStackS3(work / "localstack") if "s3" in stores else None
        if s3 is not None:
            s3.start()
        try:
            for store in stores:
                lat = await run(store, args.chunks, args.devices, args.speed, work / store, broker,
                                s3 if store == "s3" else None)
                print(f"{store:5s} store: {len(lat)} chunks of ~600 kB, {args.devices} devices, one chunk per device "
                      f"every {5 / args.speed:.1f} s: p50 {pct(lat, 50):.0f} ms, p95 {pct(lat, 95):.0f} ms, "
                      f"p99 {pct(lat, 99):.0f} ms, max {max(lat):.0f} ms, mean {statistics.mean(lat):.0f} ms "
                      "(goal p50 <= 150 ms, p99 <= 1000 ms)", flush=True)
        finally:
            if s3 is not None:
                s3.stop()
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
