"""The device's live tap: copies only while watched, never blocks, newest picture wins; command params."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from agent.live import LiveParams, LiveTap, LiveVideoTrack, LiveViewError
from agent.media.sources.base import RawAudioFrame, RawVideoFrame, VideoFormat


def frame(n: int) -> RawVideoFrame:
    return RawVideoFrame(np.full((6, 4), n, np.uint8), n, 1_000 + n)


def test_nobody_watching_costs_no_copy_but_capture_times_are_kept() -> None:
    tap = LiveTap()
    for n in range(3):
        tap.offer(frame(n))
    assert not tap.watching
    assert dict(tap.capture_times) == {0: 1_000, 1: 1_001, 2: 1_002}


def test_a_subscriber_gets_the_newest_picture_as_a_copy() -> None:
    tap = LiveTap()
    sub = tap.subscribe()
    original = frame(1)
    tap.offer(original)
    tap.offer(frame(2))
    assert sub.video is not None and sub.video.pts == 2
    tap.offer(original)
    original.image[:] = 99  # the encoder writes its watermark into the recorder's image
    assert int(sub.video.image[0, 0]) == 1
    tap.offer(RawAudioFrame(np.zeros((1, 10), np.int16), 0, 0))
    assert len(sub.audio) == 1
    tap.unsubscribe(sub)
    assert sub.closed and not tap.watching


async def test_video_track_scales_down_to_max_width() -> None:
    tap = LiveTap()
    tap.video_format = VideoFormat(1280, 720, Fraction(30))
    track = LiveVideoTrack(tap, max_width=640)
    assert (track.out_w, track.out_h) == (640, 360)
    tap.offer(RawVideoFrame(np.zeros((720 * 3 // 2, 1280), np.uint8), 30, 0))
    out = await track.recv()
    assert (out.width, out.height) == (640, 360)
    assert out.pts == 90_000  # frame 30 at 30 fps is one second of the 90 kHz clock
    track.stop()


def test_command_params_are_checked() -> None:
    ok = LiveParams.parse({"session": "lv-0123456789abcdef0123", "offer_path": "/api/v1/device/live/x/offer",
                           "ice_servers": [{"urls": ["turn:turn.example:3478"], "username": "u", "credential": "p"}]})
    servers = ok.rtc_configuration().iceServers
    assert ok.max_s == 600 and servers is not None and servers[0].username == "u"
    assert LiveParams.parse({"session": "lv-1234", "offer_path": "/api/v1/device/live/x/offer"}
                            ).rtc_configuration().iceServers == []
    with pytest.raises(LiveViewError, match="offer_path"):
        LiveParams.parse({"session": "lv-1234", "offer_path": "https://elsewhere.example/steal"})
    with pytest.raises(LiveViewError, match="max_s"):
        LiveParams.parse({"session": "lv-1234", "offer_path": "/api/v1/device/live/x/offer", "max_s": 0})
