"""The device's incoming track, drained continuously so viewers always get the newest frame.

aiortc's remote track queues every decoded frame without bound until someone reads it; a viewer
who joins a second after the device connected would first be sent that whole second, late. A
:class:`FreshestTrack` reads the remote track from the moment it arrives and keeps only the
newest video frame (audio keeps a short queue: dropping sound blocks is audible), and
``MediaRelay`` shares it among viewers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame

log = logging.getLogger(__name__)

#: Audio frames kept for a slow reader (20 ms each: 0.4 s).
AUDIO_KEEP = 20


class FreshestTrack(MediaStreamTrack):
    """Wraps a remote track: the newest frame (video) or a short queue (audio), never a backlog."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.frames_in = 0
        self._frames: collections.deque[Frame] = collections.deque(maxlen=1 if source.kind == "video" else AUDIO_KEEP)
        self._ready = asyncio.Event()
        self.first_frame = asyncio.Event()
        self._ended = False
        self._task = asyncio.create_task(self._drain(), name=f"live-drain-{source.kind}")

    async def _drain(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if not isinstance(frame, Frame):  # remote tracks give decoded frames, never packets
                    continue
                self.frames_in += 1
                self._frames.append(frame)
                self._ready.set()
                self.first_frame.set()
        except MediaStreamError:
            pass
        finally:
            self._ended = True
            self._ready.set()

    async def recv(self) -> Frame:
        """The newest frame not yet returned."""
        while not self._frames:
            if self._ended:
                self.stop()
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        """Stop draining."""
        super().stop()
        self._task.cancel()

    async def close(self) -> None:
        """Stop and wait for the drain to end."""
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
