"""Cutting one continuous encoded stream into standalone MP4 chunks, in memory.

Every chunk gets its own in-memory MP4 whose streams are copies of the encoder's
(``add_stream_from_template``); packets are moved in with their timestamps rebased so each chunk
starts at 0 (approach 2 in PLATFORM-NOTES). The program therefore holds a chunk's exact bytes
before anything is written anywhere, which is what signing needs.

Boundaries are declared with :meth:`Chunker.begin` when the chunk's first frame goes into the
encoder (as a forced keyframe). Packets are then routed by time, not by arrival order, because
encoders lag by different amounts: AAC emits a packet a frame or two after its samples went in,
and a hardware H.264 encoder may hold several frames. A chunk is closed only when both streams
have passed its end, so no packet ever lands in the wrong file:

- video: chunk k holds frames ``[start_k, start_k+1)``;
- audio: a packet belongs to the chunk in which it starts. AAC's 1024-sample frames do not divide
  a chunk boundary, so a chunk's sound may run up to one audio frame past its video. Each chunk
  also begins with copies of the packets just before its start, with negative timestamps that the
  MP4 edit list hides (pre-roll): a player primes its decoder on them, and the chunk's sound
  starts exactly at 0 in sync with the picture instead of fading in over the first frame. The
  movie timescale is the audio rate so the edit list is exact to the sample.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from agent.media.chunk import EncodedChunk
from agent.media.encoder import MediaEncoder, Packet
from agent.media.faststart import faststart

log = logging.getLogger(__name__)

# Video timescale of the movie header when a chunk has no audio: divisible by every common rate.
_VIDEO_MOVIE_TIMESCALE = 90_000

# Audio a decoder needs before a chunk's first sample to output it correctly (pre-roll): AAC's
# overlapping transform needs the one frame before the one that holds the sample; Opus asks for
# 80 ms (RFC 7845, section 4.6).
_PREROLL_SAMPLES = {"aac": 2048, "opus": 3840}


@dataclass(frozen=True, slots=True, eq=False)
class ChunkStart:
    """Where a chunk begins: its first frame's video pts and capture time, and what it carries.

    Compared by identity: two chunks never share a start, even with equal fields.
    """

    pts: int
    start_ms: int
    pre_event: bool
    with_audio: bool


class _Segment:
    """A chunk being filled."""

    def __init__(self, start: ChunkStart, audio_start: int) -> None:
        self.start = start
        self.end: int | None = None
        self.audio_start = audio_start
        self.audio_end: int | None = None
        self.buf = io.BytesIO()
        self.container: Any = None
        self.vstream: Any = None
        self.astream: Any = None
        self.video_frames = 0
        self.audio_first: int | None = None  # earliest audio pts muxed, pre-roll included
        self.audio_last_end = 0


class Chunker:
    """Routes an encoder's packets into per-chunk MP4 containers and returns them when complete."""

    def __init__(self, encoder: MediaEncoder, *, fast_start: bool = True, audio_grace_s: float = 2.0) -> None:
        self._enc = encoder
        self._fps = encoder.video_settings.fps
        self._rate = encoder.audio_settings.rate if encoder.audio_settings else None
        self._fast_start = fast_start
        # If audio stops arriving altogether (a dead microphone), video must not wait for it forever.
        self._grace_frames = max(1, round(audio_grace_s * self._fps))
        self._segments: list[_Segment] = []
        self._video_high = -1  # highest video pts seen
        self._audio_high: int | None = None  # highest audio end (pts + duration) seen
        self._audio_closed_until: int | None = None
        self._preroll = _PREROLL_SAMPLES.get(encoder.audio_codec or "", 0)
        # The latest audio packets as (pts, duration, bytes, kept): a packet's data is gone once
        # muxed, and the next chunk needs copies of the last ones as its pre-roll.
        self._audio_history: deque[tuple[int, int, bytes, bool]] = deque(maxlen=8)
        self.late_audio_packets = 0
        self.orphan_video_packets = 0

    @property
    def open_start(self) -> ChunkStart | None:
        """The start of the chunk new frames go into, or None between chunks."""
        if self._segments and self._segments[-1].end is None:
            return self._segments[-1].start
        return None

    def audio_pts(self, video_pts: int) -> int:
        """The audio sample at which video frame ``video_pts`` starts."""
        assert self._rate is not None
        return video_pts * self._rate * self._fps.denominator // self._fps.numerator

    def begin(self, start: ChunkStart) -> None:
        """Start a chunk at ``start.pts``, ending the open one there."""
        if self._segments and self._segments[-1].end is None:
            self.end(start.pts)
        if self._segments and start.pts < (self._segments[-1].end or 0):
            raise ValueError(f"chunk start {start.pts} is before the previous chunk's end")
        audio_start = self.audio_pts(start.pts) if self._rate else 0
        self._segments.append(_Segment(start, audio_start))

    def end(self, pts: int) -> None:
        """End the open chunk before frame ``pts`` without starting another."""
        if not self._segments or self._segments[-1].end is not None:
            return
        seg = self._segments[-1]
        if pts < seg.start.pts:
            raise ValueError(f"chunk end {pts} is before its start {seg.start.pts}")
        seg.end = pts
        seg.audio_end = self.audio_pts(pts) if self._rate else 0

    def add(self, packets: Iterable[Packet]) -> list[tuple[EncodedChunk, ChunkStart]]:
        """Mux ``packets`` into their chunks; return the chunks that are now complete, in order."""
        for packet in packets:
            if packet.stream.type == "video":
                self._add_video(packet)
            else:
                self._add_audio(packet)
        return self._close_ready(final=False)

    def finish(self) -> list[tuple[EncodedChunk, ChunkStart]]:
        """Close every chunk (call after flushing the encoder)."""
        if self._segments and self._segments[-1].end is None:
            self.end(max(self._video_high + 1, self._segments[-1].start.pts))
        return self._close_ready(final=True)

    def abort(self) -> None:
        """Drop every open chunk without output."""
        for seg in self._segments:
            if seg.container is not None:
                try:
                    seg.container.close()
                except (av.FFmpegError, ValueError) as exc:
                    log.debug("discarding an open chunk: %s", exc)
        self._segments.clear()

    def _find(self, t: int, audio: bool) -> _Segment | None:
        for seg in self._segments:
            lo = seg.audio_start if audio else seg.start.pts
            hi = seg.audio_end if audio else seg.end
            if lo <= t and (hi is None or t < hi):
                return seg
        return None

    def _add_video(self, packet: Packet) -> None:
        pts = packet.pts
        assert pts is not None
        self._video_high = max(self._video_high, pts)
        seg = self._find(pts, audio=False)
        if seg is None:
            # The pipeline only encodes frames inside a chunk; this is a bug, but footage is kept
            # flowing rather than stopping the recorder.
            self.orphan_video_packets += 1
            log.error("video packet at pts %d belongs to no chunk; dropped", pts)
            return
        self._open(seg)
        packet.pts = pts - seg.start.pts
        packet.dts = (packet.dts if packet.dts is not None else pts) - seg.start.pts
        packet.stream = seg.vstream
        seg.container.mux(packet)
        seg.video_frames += 1

    def _add_audio(self, packet: Packet) -> None:
        pts, duration = packet.pts, packet.duration or 0
        assert pts is not None
        end = pts + duration
        self._audio_high = end if self._audio_high is None else max(self._audio_high, end)
        data = bytes(packet) if self._preroll else None
        kept = self._route_audio(packet, pts, end)
        if data is not None:
            self._audio_history.append((pts, duration, data, kept))

    def _route_audio(self, packet: Packet, pts: int, end: int) -> bool:
        """Mux an audio packet into its chunk; return whether it is part of the footage."""
        # The encoder's priming packet (negative pts) belongs with the samples at 0.
        seg = self._find(max(pts, 0), audio=True)
        if seg is None:
            if self._audio_closed_until is not None and pts < self._audio_closed_until:
                self.late_audio_packets += 1
                log.warning("audio packet at %d arrived after its chunk was closed; dropped", pts)
            return False  # otherwise: sound outside any chunk (armed without a pre-event buffer)
        if not seg.start.with_audio:
            return False  # pre-event chunk without sound, by configuration
        self._open(seg)
        if seg.audio_first is None:
            self._mux_preroll(seg, pts)
        self._mux_audio(seg, packet, pts, end)
        return True

    def _mux_preroll(self, seg: _Segment, first_pts: int) -> None:
        """Put copies of the packets just before the chunk's start in front of its first one.

        Their timestamps are negative in the chunk, so the MP4 edit list hides them: a player
        decodes them only to prime its decoder, and the chunk's sound starts exactly at 0, where
        a decoder started cold would fade in over the first frame. Only packets that are
        themselves footage qualify: sound from before a recording, kept out of the pre-event
        buffer by configuration, is not smuggled into the file as pre-roll.
        """
        for hpts, hdur, data, kept in self._audio_history:
            if kept and seg.audio_start - self._preroll <= hpts < seg.audio_start and hpts < first_pts:
                copy = av.Packet(data)
                copy.time_base = Fraction(1, self._rate or 1)
                copy.duration = hdur
                self._mux_audio(seg, copy, hpts, hpts + hdur)

    def _mux_audio(self, seg: _Segment, packet: Packet, pts: int, end: int) -> None:
        packet.pts = packet.dts = pts - seg.audio_start
        packet.stream = seg.astream
        seg.container.mux(packet)
        seg.audio_first = pts if seg.audio_first is None else min(seg.audio_first, pts)
        seg.audio_last_end = max(seg.audio_last_end, end)

    def _open(self, seg: _Segment) -> None:
        if seg.container is not None:
            return
        with_audio = seg.start.with_audio and self._enc.audio_stream is not None
        timescale = self._rate if (with_audio and self._rate) else _VIDEO_MOVIE_TIMESCALE
        seg.container = av.open(seg.buf, "w", format="mp4", options={"movie_timescale": str(timescale)})
        seg.vstream = seg.container.add_stream_from_template(self._enc.video_stream)
        if with_audio:
            seg.astream = seg.container.add_stream_from_template(self._enc.audio_stream)

    def _ready(self, seg: _Segment) -> bool:
        if seg.end is None:
            return False
        if self._video_high < seg.end - 1:
            return False
        if not seg.start.with_audio or self._rate is None:
            return True
        assert seg.audio_end is not None
        if self._audio_high is not None and self._audio_high >= seg.audio_end:
            return True
        if self._video_high - seg.end >= self._grace_frames:
            log.warning(
                "audio is %d frames behind video; closing a chunk without waiting", self._grace_frames
            )
            return True
        return False

    def _close_ready(self, *, final: bool) -> list[tuple[EncodedChunk, ChunkStart]]:
        out: list[tuple[EncodedChunk, ChunkStart]] = []
        while self._segments and (final or self._ready(self._segments[0])):
            seg = self._segments.pop(0)
            if seg.start.with_audio and seg.audio_end is not None:
                # Only a chunk that takes sound can receive a packet too late for it.
                self._audio_closed_until = seg.audio_end
            chunk = self._close(seg)
            if chunk is not None:
                out.append((chunk, seg.start))
        return out

    @staticmethod
    def _presented_samples(seg: _Segment) -> int:
        """Samples a player presents: from the chunk's start (or its first sound) to the last sample."""
        if seg.audio_first is None:
            return 0
        return max(0, seg.audio_last_end - max(seg.audio_start, seg.audio_first))

    def _close(self, seg: _Segment) -> EncodedChunk | None:
        if seg.container is None or seg.video_frames == 0:
            if seg.container is not None:
                seg.container.close()
            log.debug("chunk at pts %d had no video; nothing to emit", seg.start.pts)
            return None
        seg.container.close()
        data = seg.buf.getvalue()
        if self._fast_start:
            data = faststart(data)
        fps = self._fps
        audio = seg.astream is not None
        return EncodedChunk(
            data=data,
            start_ms=seg.start.start_ms,
            duration_ms=round(Fraction(seg.video_frames * 1000) / fps),
            video_frames=seg.video_frames,
            audio_samples=self._presented_samples(seg) if audio else None,
            width=self._enc.video_settings.width,
            height=self._enc.video_settings.height,
            fps_num=fps.numerator,
            fps_den=fps.denominator,
            video_codec="h264",
            audio_codec=self._enc.audio_codec if audio else None,
            audio_rate=self._rate if audio else None,
            pre_event=seg.start.pre_event,
        )
