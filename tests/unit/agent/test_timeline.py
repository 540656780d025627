from fractions import Fraction

import numpy as np
import pytest

from agent.errors import MediaSourceError
from agent.media.sources.base import RawAudioFrame, RawVideoFrame
from agent.media.timeline import AudioTimeline, VideoTimeline
from agent.media.yuv import new_image


def vframe(pts: int) -> RawVideoFrame:
    img = new_image(16, 16)
    img[0, 0] = pts % 256
    return RawVideoFrame(img, pts, 1000 + pts * 100)


def aframe(pts: int, n: int = 480, value: int = 1) -> RawAudioFrame:
    return RawAudioFrame(np.full((1, n), value, dtype=np.int16), pts, 0)


def test_video_gap_repeats_the_previous_picture_with_slot_times():
    tl = VideoTimeline(Fraction(10))
    assert [(f.pts, rep) for f, rep in tl.place(vframe(0))] == [(0, False)]
    out = tl.place(vframe(3))
    assert [(f.pts, rep) for f, rep in out] == [(1, True), (2, True), (3, False)]
    assert out[0][0].image is out[1][0].image  # the same picture, watermark and all
    assert [f.time_ms for f, _ in out] == [1100, 1200, 1300]
    assert tl.duplicated == 2


def test_video_late_or_duplicate_frames_are_dropped():
    tl = VideoTimeline(Fraction(10))
    tl.place(vframe(5))
    assert tl.place(vframe(5)) == []
    assert tl.place(vframe(4)) == []
    assert tl.dropped == 2


def test_video_jump_beyond_the_limit_is_a_source_error():
    tl = VideoTimeline(Fraction(10), max_gap_s=1)
    tl.place(vframe(0))
    with pytest.raises(MediaSourceError, match="jumped"):
        tl.place(vframe(100))


def test_audio_gap_becomes_silence_and_stays_contiguous():
    tl = AudioTimeline(48000, 1, tolerance_s=0.001)
    tl.place(aframe(0))
    out = tl.place(aframe(480 + 4800))
    assert [(b.pts, b.n) for b in out] == [(480, 4800), (5280, 480)]
    assert not out[0].samples.any()
    assert tl.silence_samples == 4800


def test_audio_overlap_is_trimmed_and_jitter_absorbed():
    tl = AudioTimeline(48000, 1, tolerance_s=0.001)
    tl.place(aframe(0))
    out = tl.place(aframe(240))  # half overlaps
    assert [(b.pts, b.n) for b in out] == [(480, 240)]
    assert tl.place(aframe(0)) == []  # entirely in the past
    out = tl.place(aframe(720 + 20))  # 20 samples of jitter, under 48
    assert [(b.pts, b.n) for b in out] == [(720, 480)]
