"""Live view end to end with aiortc viewers: command over a real broker, device offer, relay, limits, records.

The browser test (test_dashboard_browser.py) repeats the main path in Chromium; these tests cover
what is easier to assert from Python: several viewers, the stop when the last one leaves, the
time limit, and that recording carries on with no gap and no late chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.helpers.live import LATE_MS, LiveRig, live_rig, loopback_ice
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


class Viewer:
    """A Python WebRTC viewer counting the frames it decodes."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: dict[str, int] = {"video": 0, "audio": 0}
        self.tasks: list[asyncio.Task[None]] = []
        self.joined: dict[str, Any] = {}

        @self.pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.create_task(self._count(track)))

    async def _count(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.frames[track.kind] += 1

    async def join(self, rig: LiveRig, session: str, reason: str = "supervision of the inspection") -> int:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, answer = await rig.api("POST", f"/api/v1/devices/{rig.agent.device_id}/live/{session}/viewers",
                                       {"type": "offer", "sdp": self.pc.localDescription.sdp, "reason": reason})
        if status != 201:
            return status
        self.joined = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return status

    async def leave(self, rig: LiveRig) -> None:
        j = self.joined
        status, _ = await rig.api("POST", f"/api/v1/devices/{rig.agent.device_id}/live/{j['session']}/viewers/"
                                          f"{j['viewer']}/leave")
        assert status == 200
        await self.close()

    async def close(self) -> None:
        await self.pc.close()
        for t in self.tasks:
            t.cancel()


async def wait_for(predicate: Any, within: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_live_view_relays_to_several_viewers_while_recording_continues(
        tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    async with live_rig(tmp_path, mosquitto.url) as rig:
        agent = rig.agent
        await agent.start_recording(reason="test")
        await asyncio.sleep(2.5)  # some chunks before the live view: the baseline
        before = len(agent.timings)
        status, session = await rig.api("POST", f"/api/v1/devices/{agent.device_id}/live")
        assert status == 201, session
        viewers = [Viewer() for _ in range(3)]
        with loopback_ice():
            for v in viewers:
                assert await v.join(rig, session["session"]) == 201
            await wait_for(lambda: all(v.frames["video"] > 30 for v in viewers), what="frames at every viewer")
        assert all(v.frames["audio"] > 0 for v in viewers)
        # The device streams from its recorder's capture: one session, frames flowing.
        assert list(agent.live.sessions) == [session["session"]]
        await asyncio.sleep(2.0)
        for v in viewers:
            await v.leave(rig)
        # Last viewer gone: after linger_s the server stops the session and tells the device.
        await wait_for(lambda: not agent.live.sessions, what="live_view_stop at the device")
        await asyncio.sleep(1.5)
        await agent.stop_recording(reason="test")
        assert agent.uploader is not None
        assert await agent.uploader.drained()

        # Recording carried on: every chunk on time, and the chain has no gap.
        during = agent.timings[before:]
        assert len(during) >= 4, during
        late = [t for t in agent.timings if t.late_ms > LATE_MS]
        assert not late, f"late chunks: {late}"
        seqs = await rig.server_seqs()
        assert seqs == list(range(len(seqs)))
        head = agent.buffer.head_seq
        assert head is not None
        assert seqs[-1] == head

        # Each view is on record: an access event before it started, an end when it ended.
        events = await rig.server.services.access.query(kind="live_view")
        views = await rig.server.services.live.views(device_id=agent.device_id)
        assert len(events) == 3 and len(views) == 3
        assert {v["access_id"] for v in views} == {e["id"] for e in events}
        for record in views:
            assert record["ended_ms"] is not None and record["ended_ms"] >= record["started_ms"]
            assert record["end_reason"] == "left"
        assert {e["reason"] for e in events} == {"supervision of the inspection"}


async def test_a_view_without_a_reason_is_refused_before_any_frame(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    async with live_rig(tmp_path, mosquitto.url) as rig:
        status, session = await rig.api("POST", f"/api/v1/devices/{rig.agent.device_id}/live")
        assert status == 201
        viewer = Viewer()
        with loopback_ice():
            assert await viewer.join(rig, session["session"], reason="  ") == 400
        await viewer.close()
        assert await rig.server.services.live.views() == []


async def test_the_time_limit_ends_the_session_and_the_views(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    limits: dict[str, Any] = {"live.max_view_s": 10}
    async with live_rig(tmp_path, mosquitto.url, None, **limits) as rig:
        status, session = await rig.api("POST", f"/api/v1/devices/{rig.agent.device_id}/live")
        assert status == 201
        viewer = Viewer()
        with loopback_ice():
            assert await viewer.join(rig, session["session"]) == 201
            await wait_for(lambda: viewer.frames["video"] > 5, what="frames")
            await wait_for(lambda: not rig.agent.live.sessions, within=15, what="the time limit")
        views = await rig.server.services.live.views()
        assert views[0]["end_reason"] == "session-time-limit"
        # The device opened its camera for the view only, and closes it again.
        await wait_for(lambda: rig.agent.recording_state == "idle", within=5, what="the camera closed")
        await viewer.close()


async def test_roles_other_than_supervision_may_not_ask_for_live_view(tmp_path: Path,
                                                                      mosquitto: MosquittoBroker) -> None:
    async with live_rig(tmp_path, mosquitto.url) as rig:
        status, body = await rig.api("POST", "/api/v1/users", {"name": "ch", "role": "case_handler"}, token=rig.admin)
        assert status == 201
        status, problem = await rig.api("POST", f"/api/v1/devices/{rig.agent.device_id}/live",
                                        token=body["token"]["token"])
        assert status == 403 and problem["code"] == "forbidden_role"
