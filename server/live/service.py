"""Live sessions: ask a device to stream, receive it once, relay it to viewers, stop when nobody watches.

A session's life::

    requested --device offer--> live --last viewer gone (linger) | time limit | device gone--> ended

1. A supervisor asks for a device's live view: a session is made (or the running one reused) and
   a signed ``live_view_start`` command goes to the device with the session id, the path to post
   its offer to, the configured STUN/TURN servers (none on a LAN) and the time limit.
2. The device posts its SDP offer as a signed request; the server answers, and the device's
   tracks are drained into :class:`~server.live.tracks.FreshestTrack`\\ s shared by one
   ``MediaRelay``.
3. A viewer (the browser) posts its own offer; the server waits for the device (bounded), opens
   the access event, records the view, and only then answers: no frame reaches a viewer whose
   view is not on record.
4. A viewer leaving (explicitly, or its connection closing) ends its view record. When the last
   one has been gone for ``linger_s``, or ``max_view_s`` has passed, the session ends and a
   ``live_view_stop`` goes to the device.

State lives on this object (one per app, on ``Services``), never in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from custody.clock import Clock
from protocol.messages import CommandKind
from server.auth import Principal
from server.config import LiveConfig
from server.db.database import Database
from server.db.schema import devices, live_views
from server.errors import BadRequest, Conflict, Forbidden, NotFound, ServerError
from server.live.tracks import FreshestTrack
from server.services.access import AccessService, Reader

log = logging.getLogger(__name__)

#: Seconds between checks of the limits of each session.
WATCH_INTERVAL_S = 0.5
#: How much later than the server's limit the device's own limit ends a session.
DEVICE_LIMIT_GRACE_S = 5


class DeviceDidNotConnect(ServerError):
    """The device did not send its offer in time (offline, no route, or refused the command)."""

    status = 504


class CommandSender(Protocol):
    """What live view needs of the command service (``CommandsService.issue``): sign, store, publish."""

    async def issue(self, device_id: str, kind: str, params: dict[str, Any] | None, ttl_s: int | None,
                    actor: str) -> dict[str, Any]: ...


def ice_servers(config: LiveConfig) -> list[dict[str, Any]]:
    """The configured STUN/TURN servers as WebRTC ``iceServers`` (empty unless configured)."""
    urls = [u.strip() for u in (config.ice_servers or "").split(",") if u.strip()]
    if not urls:
        return []
    server: dict[str, Any] = {"urls": urls}
    if config.turn_username:
        server["username"] = config.turn_username
    if config.turn_password:
        server["credential"] = config.turn_password.reveal()
    return [server]


def rtc_configuration(config: LiveConfig) -> RTCConfiguration:
    """Always explicit: a bare RTCPeerConnection would contact Google's STUN server."""
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"], username=s.get("username"),
                                                     credential=s.get("credential")) for s in ice_servers(config)])


def _description(body: dict[str, Any], want: str) -> RTCSessionDescription:
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != want or not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise BadRequest(f"expected an SDP {want}", code="bad_sdp")
    return RTCSessionDescription(sdp=sdp, type=want)


@dataclass(slots=True)
class Viewer:
    """One browser watching."""

    id: str
    actor: str
    access_id: int
    pc: RTCPeerConnection
    started_ms: int


@dataclass(slots=True)
class Session:
    """One device streaming to the server."""

    id: str
    device_id: str
    requested_by: str
    created_ms: int
    deadline_ms: int
    state: str = "requested"  # requested | live | ended
    end_reason: str | None = None
    device_pc: RTCPeerConnection | None = None
    tracks: list[FreshestTrack] = field(default_factory=list)
    relay: MediaRelay = field(default_factory=MediaRelay)
    viewers: dict[str, Viewer] = field(default_factory=dict)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    empty_since_ms: int | None = None
    command_id: str | None = None
    watcher: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        """API form."""
        return {"session": self.id, "device_id": self.device_id, "state": self.state, "requested_by": self.requested_by,
                "created_ms": self.created_ms, "deadline_ms": self.deadline_ms, "end_reason": self.end_reason,
                "tracks": [t.kind for t in self.tracks], "command_id": self.command_id,
                "viewers": [{"viewer": v.id, "actor": v.actor, "access_id": v.access_id, "started_ms": v.started_ms}
                            for v in self.viewers.values()]}


class LiveService:
    """Every live session of this server process."""

    def __init__(self, db: Database, clock: Clock, config: LiveConfig, commands: CommandSender | None,
                 access: AccessService) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.commands = commands
        self.access = access
        self.sessions: dict[str, Session] = {}

    def _active(self, device_id: str) -> Session | None:
        for s in self.sessions.values():
            if s.device_id == device_id and s.state != "ended":
                return s
        return None

    def _session(self, device_id: str, session_id: str) -> Session:
        s = self.sessions.get(session_id)
        if s is None or s.device_id != device_id or s.state == "ended":
            raise NotFound(f"no live session {session_id} of device {device_id}", code="unknown_live_session")
        return s

    # -- 1. request --------------------------------------------------------------------------------------

    async def request(self, device_id: str, principal: Principal) -> dict[str, Any]:
        """Start (or join) the device's live session: sends ``live_view_start`` to the device."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(devices.c.state).where(devices.c.id == device_id))).first()
        if row is None:
            raise NotFound(f"no device {device_id}", code="unknown_device")
        if row.state != "active":
            raise Conflict(f"device {device_id} is {row.state}", code="device_not_active")
        running = self._active(device_id)
        if running is not None:
            return running.to_json()
        if self.commands is None:
            raise Conflict("this server has no MQTT link to send commands over", code="no_command_channel")
        now = self.clock.now_ms()
        session = Session("lv-" + secrets.token_hex(10), device_id, principal.actor, now,
                          now + self.config.max_view_s * 1000)
        self.sessions[session.id] = session
        params = {"session": session.id, "offer_path": f"/api/v1/device/live/{session.id}/offer",
                  # The device's own limit is a backstop a little later than ours, so the server ends
                  # the session (and records why) unless it has lost the device.
                  "ice_servers": ice_servers(self.config), "max_s": self.config.max_view_s + DEVICE_LIMIT_GRACE_S,
                  "max_width": self.config.max_width}
        try:
            sent = await self.commands.issue(device_id, CommandKind.LIVE_VIEW_START, params,
                                             self.config.device_wait_s, principal.actor)
        except BaseException:
            await self._end(session, "command-failed", tell_device=False)
            raise
        session.command_id = str(sent.get("id"))
        session.watcher = asyncio.create_task(self._watch(session), name=f"live-watch-{session.id}")
        log.info("live session %s for %s requested by %s", session.id, device_id, principal.actor)
        return session.to_json()

    # -- 2. the device's offer --------------------------------------------------------------------------

    async def device_offer(self, device_id: str, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer the device's offer; its tracks start draining at once."""
        session = self._session(device_id, session_id)
        if session.device_pc is not None:
            raise Conflict(f"device already connected to live session {session_id}", code="already_connected")
        offer = _description(body, "offer")
        pc = RTCPeerConnection(rtc_configuration(self.config))
        session.device_pc = pc

        @pc.on("track")
        def _track(track: Any) -> None:
            session.tracks.append(FreshestTrack(track))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed") and session.state != "ended":
                await self._end(session, f"device-{pc.connectionState}", tell_device=False)

        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        session.state = "live"
        session.connected.set()
        return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}

    # -- 3. viewers ---------------------------------------------------------------------------------------

    async def add_viewer(self, device_id: str, session_id: str, principal: Principal, body: dict[str, Any]
                         ) -> dict[str, Any]:
        """Wait for the device, put the view on record, then answer the viewer's offer."""
        session = self._session(device_id, session_id)
        offer = _description(body, "offer")
        if len(session.viewers) >= self.config.max_viewers:
            raise Conflict(f"live session {session_id} has {self.config.max_viewers} viewers already",
                           code="too_many_viewers")
        try:
            await asyncio.wait_for(session.connected.wait(), self.config.device_wait_s)
        except TimeoutError:
            await self._end(session, "device-did-not-connect")
            raise DeviceDidNotConnect(f"device {device_id} did not connect within {self.config.device_wait_s} s",
                                      code="device_did_not_connect") from None
        if session.state == "ended":
            raise Conflict(f"live session {session_id} ended ({session.end_reason})", code="live_session_ended")
        # (on record first) the access event, then the view row, then the first byte
        grant = await self.access.open(Reader.of(principal), "live_view", [], body.get("reason"),
                                       device_id=device_id)
        viewer_id = "vw-" + secrets.token_hex(8)
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            await conn.execute(live_views.insert().values(
                id=viewer_id, session_id=session.id, device_id=device_id, actor=principal.actor[:100],
                access_id=grant.access_id, started_ms=now))
        pc = RTCPeerConnection(rtc_configuration(self.config))
        viewer = Viewer(viewer_id, principal.actor, grant.access_id, pc, now)
        session.viewers[viewer_id] = viewer
        session.empty_since_ms = None

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._leave(session, viewer_id, f"connection-{pc.connectionState}")

        try:
            for track in session.tracks:
                pc.addTrack(session.relay.subscribe(track, buffered=False))
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await self._leave(session, viewer_id, "failed-to-answer")
            raise
        log.info("viewer %s (%s) joined live session %s, access %s", viewer_id, principal.actor, session.id,
                 grant.access_id)
        return {"viewer": viewer_id, "access_id": grant.access_id, "session": session.id,
                "type": pc.localDescription.type, "sdp": pc.localDescription.sdp}

    async def remove_viewer(self, device_id: str, session_id: str, viewer_id: str, principal: Principal
                            ) -> dict[str, Any]:
        """A viewer leaves (only the viewer itself, or an admin, may end a view).

        Idempotent: leaving a view that already ended (its session hit the time limit, the page's
        unload beacon came after the connection closed) answers ``ended: false``.
        """
        session = self.sessions.get(session_id)
        viewer = session.viewers.get(viewer_id) if session is not None and session.device_id == device_id else None
        if session is None or viewer is None:
            return {"viewer": viewer_id, "ended": False}
        if viewer.actor != principal.actor and principal.role.value != "admin":
            raise Forbidden("only the viewer may end this view", code="not_your_view")
        await self._leave(session, viewer_id, "left")
        return {"viewer": viewer_id, "ended": True}

    async def _leave(self, session: Session, viewer_id: str, reason: str) -> None:
        viewer = session.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        if not session.viewers:
            session.empty_since_ms = self.clock.now_ms()
        async with self.db.write() as conn:
            await conn.execute(live_views.update().where(
                live_views.c.id == viewer_id, live_views.c.ended_ms.is_(None)).values(
                ended_ms=self.clock.now_ms(), end_reason=reason[:64]))
        with contextlib.suppress(Exception):
            await viewer.pc.close()
        log.info("viewer %s left live session %s (%s)", viewer_id, session.id, reason)

    # -- 4. limits and the end -------------------------------------------------------------------------

    async def _watch(self, session: Session) -> None:
        try:
            while session.state != "ended":
                await self.clock.sleep(WATCH_INTERVAL_S)
                now = self.clock.now_ms()
                if now >= session.deadline_ms:
                    await self._end(session, "time-limit")
                elif (session.state == "live" and not session.viewers and session.empty_since_ms is not None
                      and now - session.empty_since_ms >= self.config.linger_s * 1000):
                    await self._end(session, "no-viewers")
                elif session.state == "live" and session.empty_since_ms is None and not session.viewers:
                    session.empty_since_ms = now  # connected, but nobody has joined yet
                elif session.state == "requested" and now - session.created_ms > self.config.device_wait_s * 1000:
                    await self._end(session, "device-did-not-connect")
        except asyncio.CancelledError:
            pass

    async def stop(self, device_id: str, session_id: str) -> dict[str, Any]:
        """End a session now (every viewer with it); a session that already ended is answered as it is."""
        session = self.sessions.get(session_id)
        if session is None or session.device_id != device_id:
            raise NotFound(f"no live session {session_id} of device {device_id}", code="unknown_live_session")
        await self._end(session, "stopped")
        return session.to_json()

    async def _end(self, session: Session, reason: str, *, tell_device: bool = True) -> None:
        if session.state == "ended":
            return
        session.state, session.end_reason = "ended", reason
        for viewer_id in list(session.viewers):
            await self._leave(session, viewer_id, f"session-{reason}")
        for track in session.tracks:
            await track.close()
        if session.device_pc is not None:
            with contextlib.suppress(Exception):
                await session.device_pc.close()
        if tell_device and self.commands is not None:
            try:
                await self.commands.issue(session.device_id, CommandKind.LIVE_VIEW_STOP, {"session": session.id},
                                          60, "server:live")
            except Exception:  # the device's own time limit ends its side anyway
                log.exception("could not send live_view_stop for %s", session.id)
        session.ended.set()
        watcher = session.watcher
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        # Ended sessions are kept briefly for the API; only the most recent few.
        ended = [s for s in self.sessions.values() if s.state == "ended"]
        for old in ended[:-20]:
            self.sessions.pop(old.id, None)
        log.info("live session %s of %s ended: %s", session.id, session.device_id, reason)

    async def close(self) -> None:
        """End every session (server shutdown)."""
        for session in list(self.sessions.values()):
            await self._end(session, "server-shutdown")

    # -- reading ------------------------------------------------------------------------------------------

    def list_sessions(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Sessions of this process, newest first."""
        return [s.to_json() for s in sorted(self.sessions.values(), key=lambda s: -s.created_ms)
                if device_id is None or s.device_id == device_id]

    def frames_in(self, session_id: str) -> dict[str, int]:
        """Frames received from the device per kind (diagnostics and tests)."""
        s = self.sessions.get(session_id)
        return {t.kind: t.frames_in for t in s.tracks} if s else {}

    async def views(self, *, device_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """View records (start, end) newest first, for the access-log page."""
        stmt = sa.select(live_views).order_by(live_views.c.started_ms.desc()).limit(limit)
        if device_id is not None:
            stmt = stmt.where(live_views.c.device_id == device_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [{"viewer": r.id, "session": r.session_id, "device_id": r.device_id, "actor": r.actor,
                 "access_id": r.access_id, "started_ms": r.started_ms, "ended_ms": r.ended_ms,
                 "end_reason": r.end_reason} for r in rows]
