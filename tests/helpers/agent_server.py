"""The agent's own classes against a real server in tests: enroll it, record and deliver, read what arrived."""

from __future__ import annotations

import aiohttp

from agent.device import DeviceAgent
from server.app import RunningServer


async def enrollment_token(srv: RunningServer) -> str:
    """A fresh enrollment token, asked of ``srv``'s API with its admin token."""
    admin = srv.services.datadir.admin_token.read_text().strip()
    async with aiohttp.ClientSession() as s, s.post(srv.url + "/api/v1/enrollment-tokens", json={},
                                                    headers={"Authorization": f"Bearer {admin}"}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["token"])


async def server_entries(srv: RunningServer, device_id: str) -> list[dict[str, object]]:
    """Every entry ``srv`` holds for the device, in sequence."""
    return await srv.services.ingest.list_entries(device_id, 0, 10_000)


async def delivered_entries(srv: RunningServer, agent: DeviceAgent) -> list[dict[str, object]]:
    """The agent's entries on ``srv``, checked to be all it committed, each verified, once, in sequence."""
    head = agent.buffer.head_seq
    assert head is not None, "the agent has committed nothing"
    entries = await server_entries(srv, agent.device_id)
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(head + 1)), f"the server holds seqs {seqs}; the agent committed 0..{head}"
    states = {e["state"] for e in entries}
    assert states == {"verified"}, f"entry states on the server: {states}"
    return entries


async def record_and_drain(agent: DeviceAgent, *reasons: str, media_ms: int) -> None:
    """Arm a connected agent, make one recording per reason, then wait until the uploader has delivered all.

    Recording n (from 1) stops once the footage reaches n * ``media_ms`` after the source's origin,
    so the recordings follow one another in the footage, not in the clock.
    """
    assert agent.uploader is not None
    await agent.arm()
    recorder = agent.recorder
    assert recorder is not None
    for n, reason in enumerate(reasons, start=1):
        await agent.start_recording(reason=reason)
        await recorder.wait_media_ms(n * media_ms)
        await agent.stop_recording(reason=reason)
    assert await agent.uploader.drained(), "the uploader stopped before delivering everything"
