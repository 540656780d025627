"""Live view on the device (实时调阅): the recorder's own frames, sent to the server over WebRTC.

The camera is opened once. :class:`TeeSource` wraps the recorder's source and hands every raw
frame to a :class:`LiveTap` on its way to the encoder; the tap copies a frame only while someone
is watching, and never waits: a live viewer that falls behind loses frames, the recording never
does. :class:`LiveVideoTrack` and :class:`LiveAudioTrack` turn the tap's frames into aiortc
tracks, and :class:`LiveView` runs one WebRTC session per ``live_view_start`` command: the
device makes the offer (it can reach the server, the server cannot reach it through NAT), posts
it as a signed request and applies the server's answer.

A session ends on ``live_view_stop``, when its time limit passes, or when the connection fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from agent.errors import AgentError
from agent.media.sources.base import AudioFormat, MediaSource, RawAudioFrame, RawFrame, RawVideoFrame, VideoFormat
from custody.clock import Clock

log = logging.getLogger(__name__)

#: Audio blocks a subscriber may hold (one per video frame: about a second at 30 fps).
AUDIO_BACKLOG = 30
#: Capture times kept for the frame counter (what the benchmark reads end-to-end delay against).
CAPTURE_TIMES_KEPT = 600
VIDEO_CLOCK = 90_000
#: How long a device waits for the server's answer to its offer.
OFFER_TIMEOUT_S = 20.0
#: Widest picture sent live (wider sources are scaled down: the recording keeps full size).
DEFAULT_MAX_WIDTH = 640


class LiveViewError(AgentError):
    """A live view could not start (no frames to show, bad parameters, server refused the offer)."""


class _Subscriber:
    """One consumer of the tap: the newest video frame, and a short queue of sound."""

    def __init__(self) -> None:
        self.video: RawVideoFrame | None = None
        self.video_ready = asyncio.Event()
        self.audio: collections.deque[RawAudioFrame] = collections.deque(maxlen=AUDIO_BACKLOG)
        self.audio_ready = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.video_ready.set()
        self.audio_ready.set()


class LiveTap:
    """Fan-out of raw frames to live subscribers; costs nothing while nobody subscribes."""

    def __init__(self) -> None:
        self._subs: list[_Subscriber] = []
        self.video_format: VideoFormat | None = None
        self.audio_format: AudioFormat | None = None
        #: Frame counter (video pts) -> capture time in ms, for the most recent frames.
        self.capture_times: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.frames_seen = 0

    @property
    def watching(self) -> bool:
        """True while at least one subscriber exists."""
        return bool(self._subs)

    def subscribe(self) -> _Subscriber:
        """A new subscriber (call :meth:`unsubscribe` when done)."""
        sub = _Subscriber()
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        """Stop delivering to ``sub``."""
        sub.close()
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def offer(self, frame: RawFrame) -> None:
        """Called for each captured frame; never blocks and never raises into the recorder."""
        if isinstance(frame, RawVideoFrame):
            self.frames_seen += 1
            self.capture_times[frame.pts] = frame.time_ms
            while len(self.capture_times) > CAPTURE_TIMES_KEPT:
                self.capture_times.popitem(last=False)
        if not self._subs:
            return
        # A copy, because the encoder thread writes the watermark into the recorder's image.
        if isinstance(frame, RawVideoFrame):
            copy: RawFrame = RawVideoFrame(frame.image.copy(), frame.pts, frame.time_ms)
        else:
            copy = frame
        for sub in self._subs:
            if isinstance(copy, RawVideoFrame):
                sub.video = copy  # newest wins: a slow viewer drops frames, the recorder never waits
                sub.video_ready.set()
            else:
                sub.audio.append(copy)
                sub.audio_ready.set()

    def end(self) -> None:
        """The source ended: wake every subscriber so their tracks end."""
        for sub in list(self._subs):
            sub.close()
        self._subs.clear()


class TeeSource:
    """A :class:`MediaSource` that passes every frame of ``inner`` to a :class:`LiveTap` as well."""

    def __init__(self, inner: MediaSource, tap: LiveTap) -> None:
        self.inner = inner
        self.tap = tap

    @property
    def description(self) -> str:
        """The inner source's name."""
        return self.inner.description

    @property
    def video_format(self) -> VideoFormat:
        """The inner source's video format."""
        return self.inner.video_format

    @property
    def audio_format(self) -> AudioFormat | None:
        """The inner source's audio format."""
        return self.inner.audio_format

    async def open(self) -> None:
        """Open the inner source and tell the tap its formats."""
        await self.inner.open()
        self.tap.video_format = self.inner.video_format
        self.tap.audio_format = self.inner.audio_format

    async def frames(self) -> AsyncIterator[RawFrame]:
        """The inner source's frames, each offered to the tap first."""
        try:
            async for frame in self.inner.frames():
                try:
                    self.tap.offer(frame)
                except Exception:  # the live view must never cost the recording a frame
                    log.exception("live tap failed; the recording continues")
                yield frame
        finally:
            self.tap.end()

    async def close(self) -> None:
        """Close the inner source."""
        await self.inner.close()


class LiveVideoTrack(MediaStreamTrack):
    """The tap's newest picture as an aiortc video track (yuv420p, scaled down to ``max_width``)."""

    kind = "video"

    def __init__(self, tap: LiveTap, max_width: int = DEFAULT_MAX_WIDTH) -> None:
        super().__init__()
        fmt = tap.video_format
        if fmt is None:
            raise LiveViewError("the camera is not open: nothing to show")
        self.tap = tap
        self.fps = fmt.fps
        self.width, self.height = fmt.width, fmt.height
        if self.width > max_width:
            self.out_w = max_width & ~1
            self.out_h = round(self.height * self.out_w / self.width) & ~1
        else:
            self.out_w, self.out_h = self.width, self.height
        self.sub = tap.subscribe()

    async def recv(self) -> av.VideoFrame:
        """The next new picture (waits for one; ends when the source or the session ends)."""
        sub = self.sub
        while sub.video is None or not sub.video_ready.is_set():
            if sub.closed:
                self.stop()
                raise _media_error()
            sub.video_ready.clear()
            await sub.video_ready.wait()
        if sub.closed:
            self.stop()
            raise _media_error()
        raw = sub.video
        sub.video_ready.clear()
        frame = av.VideoFrame.from_ndarray(raw.image, format="yuv420p")
        if (self.out_w, self.out_h) != (self.width, self.height):
            frame = frame.reformat(width=self.out_w, height=self.out_h)
        frame.pts = round(raw.pts * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame

    def stop(self) -> None:
        """Unsubscribe from the tap."""
        self.tap.unsubscribe(self.sub)
        super().stop()


class LiveAudioTrack(MediaStreamTrack):
    """The tap's sound as an aiortc audio track (int16, the source's rate and channels)."""

    kind = "audio"

    def __init__(self, tap: LiveTap) -> None:
        super().__init__()
        fmt = tap.audio_format
        if fmt is None:
            raise LiveViewError("the source has no sound")
        self.tap = tap
        self.rate, self.channels = fmt.rate, fmt.channels
        self.layout = "mono" if fmt.channels == 1 else "stereo"
        self.block = fmt.rate // 50
        self._pending: npt.NDArray[np.int16] = np.zeros((fmt.channels, 0), np.int16)
        self._pts: int | None = None
        self.sub = tap.subscribe()

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms of sound.

        Exactly one Opus frame's worth: aiortc sends every packet its encoder returns for one
        input frame under one RTP timestamp, and the receiver joins them into one undecodable
        frame; the source's blocks (one per video frame, 33 ms at 30 fps) would give two.
        """
        sub = self.sub
        while self._pending.shape[1] < self.block:
            while not sub.audio:
                if sub.closed:
                    self.stop()
                    raise _media_error()
                sub.audio_ready.clear()
                await sub.audio_ready.wait()
            block = sub.audio.popleft()
            if self._pts is None or block.pts != self._pts + self._pending.shape[1]:
                self._pending, self._pts = block.samples[:, :0], block.pts  # a jump (dropped blocks): restart
            self._pending = np.concatenate([self._pending, block.samples], axis=1)
        assert self._pts is not None
        take, self._pending = self._pending[:, : self.block], self._pending[:, self.block :]
        # Packed s16: channels interleaved in one plane, which is what aiortc's Opus encoder reads.
        packed = np.ascontiguousarray(take.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self.block
        return frame

    def stop(self) -> None:
        """Unsubscribe from the tap."""
        self.tap.unsubscribe(self.sub)
        super().stop()


def _media_error() -> Exception:
    from aiortc.mediastreams import MediaStreamError

    return MediaStreamError()


# -- the session -----------------------------------------------------------------------------------------

Poster = Callable[[str, bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class LiveParams:
    """What a ``live_view_start`` command says (params of the signed command)."""

    session: str
    offer_path: str
    ice_servers: tuple[dict[str, Any], ...] = ()
    max_s: int = 600
    max_width: int = DEFAULT_MAX_WIDTH
    audio: bool = True

    @classmethod
    def parse(cls, params: dict[str, Any]) -> LiveParams:
        """Check a command's params; :class:`LiveViewError` says what is wrong."""
        session, path = params.get("session"), params.get("offer_path")
        if not isinstance(session, str) or not 4 <= len(session) <= 64 or not session.replace("-", "").isalnum():
            raise LiveViewError("live_view_start needs params.session (4 to 64 letters, digits and dashes)")
        if not isinstance(path, str) or not path.startswith("/api/v1/device/live/"):
            raise LiveViewError("live_view_start needs params.offer_path under /api/v1/device/live/")
        servers = params.get("ice_servers") or []
        if not isinstance(servers, list) or not all(isinstance(s, dict) and s.get("urls") for s in servers):
            raise LiveViewError("params.ice_servers must be a list of {urls, username?, credential?}")
        max_s, width = params.get("max_s", 600), params.get("max_width", DEFAULT_MAX_WIDTH)
        if not isinstance(max_s, int) or not 1 <= max_s <= 86_400:
            raise LiveViewError("params.max_s must be 1 to 86400")
        if not isinstance(width, int) or not 160 <= width <= 3840:
            raise LiveViewError("params.max_width must be 160 to 3840")
        return cls(session, path, tuple(servers), max_s, width, bool(params.get("audio", True)))

    def rtc_configuration(self) -> RTCConfiguration:
        """The configured STUN/TURN servers only: none on a LAN (a bare RTCPeerConnection adds Google's)."""
        return RTCConfiguration(iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.ice_servers])


@dataclass(slots=True)
class _Session:
    params: LiveParams
    pc: RTCPeerConnection
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    armed_for_live: bool = False
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class LiveView:
    """The device's live sessions (normally one): start on command, stop on command or limit."""

    def __init__(self, tap: LiveTap, clock: Clock, post: Poster, arm: Callable[[], Awaitable[bool]],
                 disarm: Callable[[], Awaitable[None]]) -> None:
        self.tap = tap
        self.clock = clock
        self._post = post
        self._arm = arm
        self._disarm = disarm
        self.sessions: dict[str, _Session] = {}

    async def start(self, raw_params: dict[str, Any]) -> dict[str, Any]:
        """Open the camera if needed, make an offer, post it, apply the answer; the result for the ack."""
        params = LiveParams.parse(raw_params)
        if params.session in self.sessions:
            return {"session": params.session, "state": "already-live"}
        armed_now = await self._arm()  # the recorder's own capture: the camera is opened once
        if self.tap.video_format is None:
            raise LiveViewError("this device's recorder gives no raw frames (replayed footage?): nothing to show")
        pc = RTCPeerConnection(params.rtc_configuration())
        session = _Session(params, pc, armed_for_live=armed_now)
        self.sessions[params.session] = session
        try:
            session.tracks.append(LiveVideoTrack(self.tap, params.max_width))
            if params.audio and self.tap.audio_format is not None:
                session.tracks.append(LiveAudioTrack(self.tap))
            for track in session.tracks:
                pc.addTrack(track)
            await pc.setLocalDescription(await pc.createOffer())  # gathers candidates (none to wait for on a LAN)
            body = json.dumps({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}).encode()
            answer = json.loads(await asyncio.wait_for(self._post(params.offer_path, body), OFFER_TIMEOUT_S))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        except BaseException:
            await self.stop(params.session, "failed-to-start")
            raise

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.stop(params.session, f"connection-{pc.connectionState}")

        session.task = asyncio.create_task(self._limit(params), name=f"live-{params.session}")
        log.info("live view %s started (%d tracks, limit %d s)", params.session, len(session.tracks), params.max_s)
        return {"session": params.session, "state": "connecting", "tracks": [t.kind for t in session.tracks]}

    async def _limit(self, params: LiveParams) -> None:
        await self.clock.sleep(params.max_s)
        await self.stop(params.session, "time-limit")

    async def stop(self, session_id: str | None, reason: str) -> list[str]:
        """End one session (or all when ``session_id`` is None); returns the ids ended."""
        ids = list(self.sessions) if session_id is None else [session_id]
        ended = []
        for sid in ids:
            session = self.sessions.pop(sid, None)
            if session is None:
                continue
            ended.append(sid)
            for track in session.tracks:
                track.stop()
            task = session.task
            if task is not None and task is not asyncio.current_task():
                task.cancel()
            with contextlib.suppress(Exception):
                await session.pc.close()
            session.ended.set()
            if session.armed_for_live and not any(s.armed_for_live for s in self.sessions.values()):
                await self._disarm()
            log.info("live view %s ended (%s)", sid, reason)
        return ended

    async def close(self) -> None:
        """End every session (agent shutdown)."""
        await self.stop(None, "agent-shutdown")
