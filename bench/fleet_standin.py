"""A stand-in for the server's device ingest endpoints, so the fleet bench can measure the fleet alone.

The real server cannot (yet) take the chunk rate of a thousand devices, so a fleet run against it
cannot show whether the fleet itself would keep up at that rate. This stand-in answers exactly
what a device asks during recording — announce, PUT, verify — with answers a device accepts:
upload targets on itself and receipts signed with the real server's key (read from the data
directory the devices enrolled with), also published over MQTT as the server does. It checks
nothing, stores nothing and keeps no database: its CPU is not what is measured. Enrollment and
connection set-up happen against the real server; the stand-in then takes over its port.

Run by ``bench/fleet_bench.py --stand-in``; never part of a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing.connection
import os
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from protocol.canonical import b64d
from protocol.chain import entry_hash
from protocol.envelope import Envelope
from protocol.httpsig import H_DEVICE
from protocol.keys import SigningKey
from protocol.messages import ChunkManifest, Receipt, parse_entry
from protocol.topics import DeviceTopic, device_topic


def load_server_key(keys_dir: Path) -> SigningKey:
    """The real server's (only) signing key, as server/keyring.py writes it: ``ALG:BASE64``."""
    files = sorted(keys_dir.glob("server-*.key"))
    if len(files) != 1:
        raise RuntimeError(f"expected one server key in {keys_dir}, found {len(files)}")
    _, _, b64 = files[0].read_text(encoding="ascii").strip().partition(":")
    return SigningKey.from_private_bytes(b64d(b64, field="server key"))


@dataclass(frozen=True)
class StandInPlan:
    """Where the stand-in listens and what it signs with (picklable: it crosses to a spawned process)."""

    host: str
    port: int
    keys_dir: Path
    broker_host: str
    broker_port: int
    core: int | None


class StandIn:
    """The handlers; announced chunks are remembered until their verify."""

    def __init__(self, key: SigningKey, base_url: str) -> None:
        self.key = key
        self.base_url = base_url
        self.pending: dict[tuple[str, int], tuple[str, str]] = {}  # (device, seq) -> (entry hash, sha256)
        self.outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def _receipt(self, device_id: str, seq: int, h: str, sha256: str | None) -> bytes:
        receipt = Receipt(v=1, device_id=device_id, seq=seq, entry_hash=h,
                          object_key=f"{device_id}/{seq:012d}" if sha256 else "", stored_sha256=sha256,
                          server_time_ms=1_767_225_600_000 + seq, log_index=None, tree_size=None,
                          server_key_id=self.key.key_id)
        raw = receipt.sign(self.key).raw
        # As the server does: the receipt also goes to the device over MQTT.
        self.outbox.put_nowait((device_topic(device_id, DeviceTopic.RECEIPT), raw))
        return raw

    async def announce(self, request: web.Request) -> web.Response:
        """A chunk gets an upload target on this stand-in; an event its receipt at once."""
        envelope = Envelope.from_bytes(await request.read())
        entry = parse_entry(envelope)
        h = entry_hash(envelope.raw)
        answer: dict[str, object] = {"device_id": entry.device_id, "seq": entry.seq, "entry_hash": h}
        if isinstance(entry, ChunkManifest):
            self.pending[(entry.device_id, entry.seq)] = (h, entry.sha256)
            answer.update(kind="chunk", state="announced", receipt=None, upload={
                "method": "PUT", "url": f"{self.base_url}/put/{entry.device_id}/{entry.seq}",
                "headers": {"Content-Type": "video/mp4"}, "expires_ms": 4_102_444_800_000})
        else:
            answer.update(kind="event", state="verified",
                          receipt=self._receipt(entry.device_id, entry.seq, h, None).decode("ascii"))
        return web.json_response(answer, status=201)

    async def put(self, request: web.Request) -> web.Response:
        """Take the bytes (all of them, as a server must) and drop them."""
        await request.read()
        return web.json_response({"stored": True}, status=201)

    async def verify(self, request: web.Request) -> web.Response:
        """The receipt of an announced chunk."""
        device_id = request.headers.get(H_DEVICE, "")
        seq = int(request.match_info["seq"])
        found = self.pending.pop((device_id, seq), None)
        if found is None:
            return web.json_response({"code": "unknown_entry", "detail": "not announced here"}, status=404)
        h, sha256 = found
        raw = self._receipt(device_id, seq, h, sha256)
        return web.json_response({"device_id": device_id, "seq": seq, "state": "verified",
                                  "receipt": raw.decode("ascii")})

    async def publish(self, host: str, port: int) -> None:
        """Send queued receipts to the broker (QoS 1), reconnecting as needed."""
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(host, port, identifier=f"fleet-standin-{os.getpid()}") as client:
                    while True:
                        topic, payload = await self.outbox.get()
                        await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)


def serve(plan: StandInPlan, conn: multiprocessing.connection.Connection) -> None:
    """Entry point of the spawned stand-in process: pin, listen, say so, run until told to stop."""
    if plan.core is not None:
        os.sched_setaffinity(0, {plan.core})

    async def run() -> None:
        standin = StandIn(load_server_key(plan.keys_dir), f"http://{plan.host}:{plan.port}")
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/api/v1/device/entries", standin.announce)
        app.router.add_post("/api/v1/device/entries/{seq}/verify", standin.verify)
        app.router.add_put("/put/{device}/{seq}", standin.put)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, plan.host, plan.port, reuse_address=True)
        for _ in range(100):  # the real server has just let go of the port
            try:
                await site.start()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"port {plan.port} stayed busy")
        publisher = asyncio.create_task(standin.publish(plan.broker_host, plan.broker_port))
        conn.send(json.dumps({"url": standin.base_url}))
        await asyncio.to_thread(conn.recv)
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await runner.cleanup()

    asyncio.run(run())
