"""The dashboard's pure parts: message catalogue, coverage timeline, language choice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.web.messages import LANGUAGES, MESSAGES, pick_language, t
from server.web.timeline import Row, gaps, merge, timeline_svg

WEB = Path(__file__).resolve().parents[3] / "server" / "web"


def test_every_message_has_both_languages() -> None:
    for key, entry in MESSAGES.items():
        assert set(entry) == set(LANGUAGES), key
        assert all(text.strip() for text in entry.values()), key
        # The same placeholders in both languages.
        assert len({tuple(sorted(re.findall(r"{(\w+)}", text))) for text in entry.values()}) == 1, key


def test_every_key_the_pages_and_scripts_use_exists() -> None:
    used = set()
    for path in [*WEB.glob("*.py"), *WEB.glob("static/*.js")]:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""(?:\bt|page\.t|Custody\.t)\(\s*["']([a-z_]+\.[a-z_.]+)["']""", text))
        used |= set(re.findall(r"""["']((?:live|play|nav|col|fleet|case|cases|audit|access|kind|state|error|stats)"""
                               r"""\.[a-z_]+)["']""", text))
    missing = {k for k in used if k not in MESSAGES and not k.endswith((".js", ".css"))}
    assert not missing


def test_language_choice() -> None:
    assert pick_language("en", "zh-CN", "zh-CN") == "en"
    assert pick_language(None, "zh-TW,zh;q=0.9", "en") == "zh-CN"
    assert pick_language(None, "fr,en;q=0.5", "zh-CN") == "en"
    assert pick_language("xx", None, "zh-CN") == "zh-CN"
    assert t("zh-CN", "live.playing", access=7) == "直播中（已记录调阅 #7）"


def test_gaps_within_a_window() -> None:
    assert merge([(5, 7), (0, 2), (2, 3)]) == [(0, 3), (5, 7)]
    assert merge([(0, 2), (2_400, 3_000)], tolerance_ms=500) == [(0, 2), (2_400, 3_000)]
    window = (0, 10_000)
    assert gaps(window, [(0, 4_000), (6_500, 10_000)]) == [(4_000, 6_500)]
    assert gaps(window, [(0, 4_000), (4_800, 10_000)]) == []  # under the tolerance: rounding, not a gap
    assert gaps(window, []) == [window]
    assert gaps(window, [(-5_000, 20_000)]) == []


def test_timeline_draws_gaps_in_red() -> None:
    rows = [Row("s1", "现场检查 <b>", (0, 10_000), [(0, 4_000), (6_500, 10_000)]),
            Row("s2", "no window", None, [(1_000, 2_000)])]
    svg = timeline_svg(rows, title="coverage")
    assert svg.count('class="gap"') == 1
    assert 'data-from="4000" data-to="6500"' in svg
    assert svg.count('class="recorded"') == 3
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    assert rows[0].coverage() == pytest.approx(0.75)
    assert rows[1].coverage() is None
