"""The statistics page (/ui/stats) on the cases/audit scenario day: its figures are the stats API's.

The day of test_cases_scenario.py (3 officers, 3 devices, 5 cases, 20 steps, findings) is placed in
two sections; the page is read the way a program would read it (each table figure's exact value is
in a ``<data>`` element, each chart is an SVG parsed as XML) and compared with ``GET /api/v1/stats``
for the same months and the same caller.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from custody.clock import FakeClock
from server.app import RunningServer
from tests.integration.server.conftest import Api
from tests.integration.server.test_cases_scenario import World, at, run_day, world  # noqa: F401
from tests.integration.server.test_dashboard_pages import sign_in

pytestmark = pytest.mark.integration

SVG = "{http://www.w3.org/2000/svg}"
#: A unit name with markup in it: it must come out escaped in the HTML and intact in the SVG's text.
SECTION_A = "执法一科 <A&B>"


class Tables(HTMLParser):
    """Every table of a page by its class: rows of cells, a cell being its <data> value if it has one, else its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("class") or "", [])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table is not None and self._in_body:
            self._table.append([])
        elif tag == "td" and self._table is not None:
            self._cell, self._value = [], None
        elif tag == "data" and self._cell is not None:
            self._value = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._table is not None and self._cell is not None:
            self._table[-1].append(self._value if self._value is not None else "".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def svgs(html: str) -> dict[str, ET.Element]:
    """Every chart of the page, parsed as XML on its own (as anyone saving it as a .svg file would)."""
    found = {}
    for text in re.findall(r"<svg\b.*?</svg>", html, flags=re.S):
        root = ET.fromstring(text)  # noqa: S314 - the server's own output, read to check it is well-formed
        assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}desc") is not None
        found[root.get("id") or ""] = root
    return found


def num(text: str) -> float | None:
    return None if text == "" else float(text)


async def get(s: aiohttp.ClientSession, server: RunningServer, path: str, status: int = 200) -> str:
    async with s.get(server.url + path, headers={"Accept-Language": "en"}) as r:
        html = await r.text()
        assert r.status == status, (path, r.status, html[-600:])
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    return html


def api_query(html: str) -> str:
    """The query of the page's CSV link: the stats API call for exactly what the page shows."""
    href = re.search(r'class="download csv" href="([^"]+)"', html)
    assert href is not None
    query = parse_qs(urlsplit(href.group(1).replace("&amp;", "&")).query)
    return "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "format")


async def place_in_sections(w: World, ids: dict[str, int]) -> Api:
    """Section A: device A, 张伟 and his cases; section B: devices B and C, 李娜, 王强 and theirs. A supervisor of A."""
    admin = w.admin
    for uid, name, kind, parent in (("pds", "平顶山市工业和信息化局", "bureau", None),
                                    ("sec-a", SECTION_A, "section", "pds"), ("sec-b", "执法二科", "section", "pds")):
        await admin.ok("POST", "/api/v1/units", {"id": uid, "name": name, "kind": kind, "parent_id": parent})
    places = [("device", w.devices["A"].device_id, "sec-a"), ("device", w.devices["B"].device_id, "sec-b"),
              ("device", w.devices["C"].device_id, "sec-b"), ("officer", "o-zhang", "sec-a"),
              ("officer", "o-li", "sec-b"), ("officer", "o-wang", "sec-b")]
    places += [("case", str(ids[c]), "sec-a") for c in ("c1", "c2", "c5")]
    places += [("case", str(ids[c]), "sec-b") for c in ("c3", "c4")]
    for kind, rid, unit in places:
        await admin.ok("POST", "/api/v1/placements", {"kind": kind, "id": rid, "unit_id": unit})
    sup = await admin.user("sup-a", "supervisor")
    await admin.ok("POST", "/api/v1/placements", {"kind": "user", "id": "sup-a", "unit_id": "sec-a"})
    return sup


def check_against_api(page: dict[str, list[list[str]]], report: dict[str, Any], months: list[str],
                      dimension: str) -> None:
    """Every figure of the page's tables against the API's report for the same months and caller."""
    rows, totals = report["rows"], {t["month"]: t for t in report["totals"]}
    # (1) recordings and hours per month: the API's totals; a month without any is zero.
    assert [r[0] for r in page["stats-volume"]] == months
    for month, recordings, hours in page["stats-volume"]:
        total = totals.get(month)
        assert (int(recordings), float(hours)) == ((total["recordings"], total["hours"]) if total else (0, 0.0))
    # (2) coverage per key: the key's rows summed, the share rounded as the API rounds.
    steps: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        steps[r["key"]][0] += r["steps_required"]
        steps[r["key"]][1] += r["steps_covered"]
    if dimension != "device":
        assert {key: (int(req), int(cov), num(share)) for key, req, cov, share in page["stats-coverage"]} == {
            k: (req, cov, round(cov / req, 4)) for k, (req, cov) in steps.items() if req}
    # (3) findings by code per key.
    if dimension != "officer":
        found: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in rows:
            for code, n in r["findings"].items():
                found[r["key"]][code] += n
        codes = sorted({c for f in found.values() for c in f})
        assert {r[0]: [int(x) for x in r[1:]] for r in page.get("stats-findings", [])} == {
            k: [f.get(c, 0) for c in codes] + [sum(f.values())] for k, f in found.items()}
    # (4) upload delay percentiles per month: the API's totals (over every upload of the month).
    assert {r[0]: [num(x) for x in r[1:]] for r in page.get("stats-delay", [])} == {
        m: [t["upload_delay_ms"][p] for p in ("p50", "p90", "p99")] + [t["upload_delay_ms"]["count"]]
        for m, t in totals.items() if t["upload_delay_ms"]["count"]}
    # (5) uptime per device and month.
    if dimension == "device":
        by = {(r["key"], r["month"]): r["uptime_share"] for r in rows}
        assert {r[0]: [num(x) for x in r[1:]] for r in page["stats-uptime"]} == {
            k: [by.get((k, m)) for m in months] for k in {r["key"] for r in rows}}
    # Every row as the API has it.
    assert [[num(x) if i >= 2 and i != 7 else x for i, x in enumerate(r)] for r in page.get("stats-rows", [])] == [
        [r["key"], r["month"], r["recordings"], r["hours"], r["steps_required"], r["steps_covered"],
         r["covered_share"], ";".join(f"{k}={v}" for k, v in r["findings"].items()),
         *(r["upload_delay_ms"][p] for p in ("p50", "p90", "p99")), r["uptime_share"]] for r in rows]


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)  # the page reads the same service on PostgreSQL
async def test_the_page_shows_the_apis_figures_in_the_callers_scope(world: World) -> None:  # noqa: F811
    w = world
    ids = await run_day(w)
    sup_a = await place_in_sections(w, ids)
    w.goto(at(18))
    months = ["2025-12", "2026-01", "2026-02"]  # the day's month between two months with nothing
    admin_token, sup_token = w.admin.token, sup_a.token
    assert admin_token is not None and sup_token is not None

    s = await sign_in(w.server, admin_token)
    async with s:
        for dimension in ("unit", "officer", "device"):
            html = await get(s, w.server, f"/ui/stats?dimension={dimension}&from=2025-12&to=2026-02")
            query = api_query(html)
            assert query == f"dimension={dimension}&since={at(0) - 31 * 86_400_000}&until={at(0) + 59 * 86_400_000}"
            report = await w.admin.ok("GET", f"/api/v1/stats?{query}")
            assert report["rows"], dimension
            page = tables(html)
            check_against_api(page, report, months, dimension)
            charts = svgs(html)
            assert {"chart-recordings", "chart-hours", "chart-delay"} <= set(charts)
            assert ("chart-uptime" in charts) is (dimension == "device")
            assert ("chart-coverage" in charts) is (dimension != "device")
        # The unit page: names, escaped in the HTML, intact in the SVG; the 100 % line; the zero months.
        html = await get(s, w.server, "/ui/stats?from=2025-12&to=2026-02")
        assert "执法一科 &lt;A&amp;B&gt;" in html and SECTION_A not in html
        charts = svgs(html)
        coverage = charts["chart-coverage"]
        assert SECTION_A in [t.text for t in coverage.iter(f"{SVG}text")]
        assert coverage.find(f".//{SVG}g[@class='reference']") is not None
        bars = [r for r in charts["chart-recordings"].iter(f"{SVG}rect") if "bar" in (r.get("class") or "")]
        assert [(b.get("data-category"), b.get("data-value")) for b in bars] == [
            ("2025-12", "0.0"), ("2026-01", "12.0"), ("2026-02", "0.0")]  # the 12 recordings of the day
        # Downloads: the CSV and JSON of these figures through the API (cookie session), and for an
        # admin the yearly public summary of each year shown.
        async with s.get(f"{w.server.url}/api/v1/stats?{api_query(html)}&format=csv") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert 'href="/api/v1/stats/public/2025"' in html and 'href="/api/v1/stats/public/2026"' in html
        # Nothing in the range: each chart says so, nothing divides by zero.
        html = await get(s, w.server, "/ui/stats?from=2001-01&to=2001-03")
        assert all(c.get("class", "").endswith("empty") for c in svgs(html).values())
        assert "No data in the chosen range." in html
        # Bad queries are error pages with the API's status and code, never a 500.
        for query, code in (("from=2026-13", "bad_month"), ("from=26-01", "bad_month"),
                            ("from=2026-03&to=2026-01", "bad_range"), ("from=1999-01", "bad_month"),
                            ("from=2000-01&to=2026-01", "bad_range"), ("dimension=team", "bad_value"),
                            ("dimension=", None), ("week=1", "unknown_field")):
            html = await get(s, w.server, f"/ui/stats?{query}", 200 if code is None else 400)
            assert code is None or f'data-code="{code}"' in html, (query, html[-400:])

    # A supervisor of section A sees section A's units, devices and officers only: the API's scoped figures.
    s = await sign_in(w.server, sup_token)
    async with s:
        for dimension, hidden in (("unit", ["sec-b", "执法二科", "pds"]),
                                  ("device", [w.devices["B"].device_id, w.devices["C"].device_id]),
                                  ("officer", ["o-li", "o-wang", "李娜", "王强"])):
            html = await get(s, w.server, f"/ui/stats?dimension={dimension}&from=2025-12&to=2026-02")
            assert all(x not in html for x in hidden), dimension
            report = await sup_a.ok("GET", f"/api/v1/stats?{api_query(html)}")
            check_against_api(tables(html), report, months, dimension)
            svgs(html)
        assert "public-summary" not in html  # the public summary is an admin's to publish
        assert "平顶山市工业和信息化局" not in html and SECTION_A not in html


async def test_roles_without_statistics_get_403(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    """The page admits exactly the stats API's roles; the others get 403 and no link to it."""
    allowed = {"admin", "case_handler", "supervisor", "legal_reviewer", "auditor"}
    for role in ("device_admin", "officer", "case_handler", "legal_reviewer", "auditor", "supervisor"):
        api = await admin.user(f"u-{role}", role)
        assert api.token is not None
        s = await sign_in(server, api.token)
        async with s:
            async with s.get(server.url + "/ui/stats") as r:
                html = await r.text()
                assert r.status == (200 if role in allowed else 403), role
            api_reply = await api.call("GET", "/api/v1/stats")
            assert (api_reply.status == 200) is (role in allowed)
            if role not in allowed:
                assert 'data-code="forbidden_role"' in html
            assert ('href="/ui/stats"' in html) is (role in allowed)
