"""The dashboard's SVG charts: scales, ticks, escaping, empty and zero data, valid XML every time."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from server.web.charts import (
    Bands,
    Chart,
    Scale,
    Series,
    bar_chart,
    duration_ms,
    empty_chart,
    heatmap,
    line_chart,
    nice_step,
    number,
    percent,
    text,
    ticks,
)

SVG = "{http://www.w3.org/2000/svg}"
CHART = Chart("c-test", "Recordings <per> month", "A & B", "Month", "Recordings", "No data yet.")


def parse(svg: str) -> ET.Element:
    """The chart as XML (as the integration tests and any XML tool read it)."""
    root = ET.fromstring(svg)  # noqa: S314 - our own output, read to check it is well-formed
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "").split()]


def test_nice_steps_and_ticks() -> None:
    assert nice_step(10) == 2 and nice_step(100) == 20 and nice_step(1) == pytest.approx(0.2)
    assert nice_step(0) == 1 and nice_step(float("nan")) == 1 and nice_step(-3) == 1
    assert ticks(7) == [0, 2, 4, 6, 8]
    assert ticks(8) == [0, 2, 4, 6, 8]  # a value on a tick is not pushed to the next one
    assert ticks(1.0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(0.3) == [0, 0.1, 0.2, 0.3]  # no 0.30000000000000004
    assert ticks(3, integer=True) == [0, 1, 2, 3]
    assert ticks(0.4, integer=True) == [0, 1]  # counts never get a tick at 0.5
    # All zero (or nonsense): still an axis 0..1, no division by zero.
    assert ticks(0) == ticks(-1) == ticks(float("inf")) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(0, integer=True) == [0, 1]


def test_scales_and_bands() -> None:
    y = Scale(0, 10, 300, 100)  # values up, pixels down
    assert (y(0), y(5), y(10)) == (300, 200, 100)
    assert Scale(0, 0, 300, 100)(5) == 300  # an empty range maps everything to the start
    b = Bands(4, 0, 400, padding=0.5)
    assert (b.step, b.inner, b.left(0), b.center(3)) == (100, 50, 25, 350)
    assert Bands(0, 0, 400).step == 400  # no categories: no division by zero


def test_formats() -> None:
    assert (number(2.0), number(0.125), number(1.5000001)) == ("2", "0.125", "1.5")
    assert (percent(0.5), percent(1 / 3), percent(1.0), percent(0)) == ("50 %", "33.3 %", "100 %", "0 %")
    assert (duration_ms(850), duration_ms(1500), duration_ms(600_000)) == ("850 ms", "1.5 s", "10 min")


def test_all_text_is_escaped_and_xml_safe() -> None:
    assert text('<b a="1">&\'') == "&lt;b a=&quot;1&quot;&gt;&amp;&#x27;"
    assert text("a\x01b\x0bc\ufffed") == "a\ufffdb\ufffdc\ufffdd"  # XML 1.0 cannot carry these at all
    assert text("tab\tnew\nline") == "tab\tnew\nline"
    hostile = '执法一科 <script>alert("x")</script> & \x07'
    svg = bar_chart(Chart("c-x", hostile, hostile, hostile, hostile, hostile), [hostile, "2026-01"],
                    [Series(hostile, (1, 2)), Series("b", (0, 1))])
    assert "<script>" not in svg
    root = parse(svg)
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}desc") is not None
    assert any('执法一科 <script>alert("x")</script> & \ufffd' in t for t in texts(root))
    assert bars(root)[0].get("data-category", "").startswith("执法一科 <script>")


def test_a_chart_names_itself_and_its_axes() -> None:
    root = parse(bar_chart(CHART, ["2026-01", "2026-02"], [Series("n", (3, 5))], integer=True))
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-test-title c-test-desc"
    assert root.find(f"{SVG}title").text == "Recordings <per> month"  # type: ignore[union-attr]
    assert root.find(f"{SVG}desc").text == "A & B"  # type: ignore[union-attr]
    labels = texts(root)
    assert "Month" in labels and "Recordings" in labels
    assert {"0", "1", "2", "3", "4", "5"} <= set(labels)  # integer ticks up to the largest bar


def test_empty_data_says_so() -> None:
    for svg in (bar_chart(CHART, [], []), bar_chart(CHART, ["2026-01"], [Series("n", (None,))]),
                line_chart(CHART, ["a", "b"], [Series("p50", (None, None))]), heatmap(CHART, [], [], []),
                heatmap(CHART, ["dev"], ["2026-01"], [[None]]), empty_chart(CHART)):
        root = parse(svg)
        assert "No data yet." in texts(root) and "empty" in (root.get("class") or "")
        assert root.find(f"{SVG}title") is not None


def test_months_with_zero_values_are_drawn_as_zero() -> None:
    root = parse(bar_chart(CHART, ["2026-01", "2026-02", "2026-03"], [Series("n", (0, 0, 0))]))
    assert "No data yet." not in texts(root)
    heights = [float(r.get("height", "-1")) for r in bars(root)]
    assert heights == [0, 0, 0]
    assert {"0", "0.2", "1"} <= set(texts(root))  # an axis 0..1, not a division by zero


def test_grouped_and_stacked_bars() -> None:
    cats = ["east", "west"]
    series = [Series("a", (1, 3)), Series("b", (3, 1))]
    grouped = bars(parse(bar_chart(CHART, cats, series)))
    assert len(grouped) == 4 and grouped[0].get("x") != grouped[1].get("x")  # side by side
    stacked = bars(parse(bar_chart(CHART, cats, series, stacked=True)))
    first_a, first_b = stacked[0], stacked[1]
    assert first_a.get("x") == first_b.get("x")
    # b sits on a: its bottom is a's top, and the stack's top is the total's pixel (4 of an axis to 4).
    assert float(first_b.get("y", 0)) + float(first_b.get("height", 0)) == pytest.approx(float(first_a.get("y", 0)))
    grid = {t.text: float(t.get("y", 0)) - 4 for t in parse(bar_chart(CHART, cats, series, stacked=True)).iter(
        f"{SVG}text") if t.get("class") == "tick"}
    assert float(first_b.get("y", 0)) == pytest.approx(grid["4"])  # the stack's top is on the total's tick


def test_a_reference_line_at_full_share() -> None:
    chart = Chart("c-share", "Covered", "share", "Unit", "Share", "none", percent)
    root = parse(bar_chart(chart, ["east", "west"], [Series("covered", (0.5, None))], y_max=1.0, reference=1.0,
                           reference_label="100 %"))
    ref = root.find(f".//{SVG}g[@class='reference']/{SVG}line")
    assert ref is not None and ref.get("stroke-dasharray")
    grid = {t.text: float(t.get("y", 0)) - 4 for t in root.iter(f"{SVG}text") if t.get("class") == "tick"}
    assert float(ref.get("y1", 0)) == pytest.approx(grid["100 %"])  # y_max: the top of the axis
    (bar,) = bars(root)  # west has no steps: no bar, not a zero bar
    assert bar.get("data-value") == "0.5" and "100 %" in texts(root) and "50 %" in texts(root)


def test_lines_break_at_missing_values() -> None:
    root = parse(line_chart(CHART, ["m1", "m2", "m3", "m4", "m5"],
                            [Series("p50", (1, 2, None, 3, 4)), Series("p99", (5, None, None, None, None))]))
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 2 and all(len(p.get("points", "").split()) == 2 for p in lines)
    points = [c.get("data-value") for c in root.iter(f"{SVG}circle")]
    assert points == ["1", "2", "3", "4", "5"]  # a lone value is a point without a line


def test_heatmap_cells() -> None:
    chart = Chart("c-up", "Uptime", "per device and month", "Month", "Device", "none", percent)
    root = parse(heatmap(chart, ["dev-<a>", "dev-b"], ["2026-01", "2026-02"], [[0.5, None], [1.0, 0.0]]))
    cells = [r for r in root.iter(f"{SVG}rect") if (r.get("class") or "").startswith("cell")]
    assert [(c.get("data-row"), c.get("data-column"), c.get("data-value")) for c in cells] == [
        ("dev-<a>", "2026-01", "0.5"), ("dev-<a>", "2026-02", ""), ("dev-b", "2026-01", "1.0"),
        ("dev-b", "2026-02", "0.0")]
    assert cells[1].get("class") == "cell none" and cells[2].get("fill-opacity") == "1.0"


def test_our_own_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="2 values for 3 categories"):
        bar_chart(CHART, ["a", "b", "c"], [Series("n", (1, 2))])
    with pytest.raises(ValueError, match="negative"):
        line_chart(CHART, ["a"], [Series("n", (-1,))])
    with pytest.raises(ValueError, match="one value per row and column"):
        heatmap(CHART, ["a"], ["m"], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="chart id"):
        Chart("Bad id", "t", "d", "x", "y", "e")
