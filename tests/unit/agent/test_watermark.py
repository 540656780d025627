from datetime import UTC, timedelta, timezone

import numpy as np
import pytest

from agent.media import font
from agent.media.watermark import Watermark, default_scale, format_local_time
from agent.media.yuv import C_NEUTRAL, Y_BLACK, Y_WHITE, new_image, planes

CST = timezone(timedelta(hours=8))
# 2026-11-22 15:50:01 UTC
T = 1_795_362_601_000


def test_local_time_carries_its_utc_offset():
    assert format_local_time(T, CST) == "2026-11-22 23:50:01 +08:00"
    assert format_local_time(T, timezone(timedelta(hours=-3, minutes=-30))) == "2026-11-22 12:20:01 -03:30"
    assert format_local_time(T, UTC) == "2026-11-22 15:50:01 +00:00"


def test_system_local_time_has_an_offset_too():
    text = format_local_time(T)
    assert text[-6] in "+-"
    assert text[-3] == ":"


def test_lines_show_time_device_and_officer():
    wm = Watermark(320, 240, device_id="dv7k", officer_id="110105", tz=CST)
    assert wm.lines(T) == ("2026-11-22 23:50:01 +08:00", "DEV dv7k  OFC 110105")
    wm.officer_id = None
    assert wm.lines(T)[1] == "DEV dv7k"


@pytest.mark.parametrize(("height", "scale"), [(240, 1), (480, 2), (720, 3), (1080, 4)])
def test_scale_follows_frame_height(height, scale):
    assert default_scale(height) == scale


def test_apply_draws_white_text_on_a_dark_neutral_box_and_nothing_else():
    w, h = 320, 240
    img = new_image(w, h)
    y, u, v = planes(img, w, h)
    y[:] = 100
    u[:] = 90
    v[:] = 160
    before = img.copy()
    wm = Watermark(w, h, device_id="dv7k", officer_id="42", tz=CST)
    wm.apply(img, T)
    top, left, bh, bw = wm.box()
    box = y[top : top + bh, left : left + bw]
    assert set(np.unique(box)) == {Y_BLACK, Y_WHITE}
    # The text itself: the first line's glyphs are in the box, pixel for pixel.
    first = font.render_text(wm.lines(T)[0], 1)
    pad = 2
    assert np.array_equal(box[pad : pad + first.shape[0], pad : pad + first.shape[1]] == Y_WHITE, first)
    assert (u[top // 2 : (top + bh) // 2, left // 2 : (left + bw) // 2] == C_NEUTRAL).all()
    outside = np.ones((h, w), dtype=bool)
    outside[top : top + bh, left : left + bw] = False
    assert np.array_equal(y[outside], planes(before, w, h)[0][outside])


def test_text_changes_with_the_second_and_is_cached_within_it():
    w, h = 320, 240
    wm = Watermark(w, h, device_id="d", tz=CST)
    a, b, c = new_image(w, h), new_image(w, h), new_image(w, h)
    wm.apply(a, T)
    wm.apply(b, T + 900)
    wm.apply(c, T + 1000)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_long_text_shrinks_to_fit_a_small_frame():
    wm = Watermark(160, 120, device_id="x" * 60, officer_id="y" * 20, tz=CST, scale=3)
    img = new_image(160, 120)
    wm.apply(img, T)
    top, left, bh, bw = wm.box()
    assert left + bw <= 160
    assert top + bh <= 120
