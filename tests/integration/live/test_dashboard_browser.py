"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

One walk through what a supervisor does, against a real server, a real broker and a recording
agent: sign in, see the device online, watch it live (decoded frames keep increasing while the
device's chunk sequence goes on without a gap or a late chunk), open a case and find the seeded
gap on its timeline, play a recording, find each of these in the access log, and open the
statistics page. Screenshots go to test-artifacts/dashboard/.

Chromium comes from `make test` (deploy/scripts/system-deps.sh); its absence fails the test.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import LATE_MS, LiveRig, live_rig, loopback_ice, media
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "dashboard"
#: No network beyond 127.0.0.1: no background requests, no STUN, plain IP candidates (not mDNS names).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
                 "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns"]


async def open_case(rig: LiveRig, start_ms: int, end_ms: int, recordings: list[str]) -> None:
    """A case (through the cases API) with one on-site inspection step spanning both recordings."""
    status, body = await rig.api("POST", "/api/v1/users", {"name": "ch", "role": "case_handler"}, token=rig.admin)
    assert status == 201, body
    handler = body["token"]["token"]
    status, case = await rig.api("POST", "/api/v1/cases", {
        "number": "京市监检〔2026〕1号", "category": "inspection", "title": "现场检查 / on-site inspection"},
        token=handler)
    assert status == 201, case
    status, step = await rig.api("POST", f"/api/v1/cases/{case['id']}/steps", {
        "id": "step-1", "stage": "investigation", "activity": "on_site_inspection", "title": "现场检查",
        "planned_start_ms": start_ms, "planned_end_ms": end_ms}, token=handler)
    assert status == 201, step
    for rec in recordings:
        status, link = await rig.api("POST", f"/api/v1/cases/{case['id']}/steps/step-1/links", {
            "device_id": rig.agent.device_id, "recording_id": rec, "reason": "footage of the inspection"},
            token=handler)
        assert status == 201, link


async def record(rig: LiveRig, seconds: float) -> tuple[str, int, int]:
    """One recording of about ``seconds``; (id, first chunk start, last chunk end)."""
    agent = rig.agent
    first = len(agent.timings)
    recording_id = await agent.start_recording(reason="browser-test")
    await asyncio.sleep(seconds)
    await agent.stop_recording(reason="browser-test")
    chunks = agent.timings[first:]
    return recording_id, chunks[0].start_ms, chunks[-1].start_ms + chunks[-1].duration_ms


async def test_supervisor_walkthrough_in_chromium(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    assert CHROMIUM is not None, "chromium is not installed: run `make system-deps`"
    from playwright import async_api as playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    async with live_rig(tmp_path, mosquitto.url, media(320, 240, 15)) as rig:
        agent = rig.agent
        # Footage with a hole: two recordings four seconds apart, one case step spanning both.
        rec_a, a0, _a1 = await record(rig, 2.5)
        await asyncio.sleep(4.0)
        rec_b, _b0, b1 = await record(rig, 2.5)
        assert agent.uploader is not None
        assert await agent.uploader.drained()
        await open_case(rig, a0, b1, [rec_a, rec_b])
        # A recording in progress for the live part: its chunks must keep coming, on time.
        await agent.start_recording(reason="browser-test-live")

        async with playwright.async_playwright() as p:
            with tempfile.TemporaryDirectory() as profile:
                browser = await p.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, locale="en-US",
                    viewport={"width": 1200, "height": 900},
                    bypass_csp=True)  # for Playwright's own evaluations; the pages' CSP is tested separately
                try:
                    page = browser.pages[0] if browser.pages else await browser.new_page()
                    await walkthrough(page, rig, rec_a, t_start)
                finally:
                    await browser.close()
        await agent.stop_recording(reason="browser-test-live")
        assert await agent.uploader.drained()
        seqs = await rig.server_seqs()
        assert seqs == list(range(len(seqs))), "the device's chain has a gap"
        late = [t for t in agent.timings if t.late_ms > LATE_MS]
        assert not late, f"late chunks: {late}"
    assert time.monotonic() - t_start < 120


async def walkthrough(page: Any, rig: LiveRig, rec_a: str, t_start: float) -> None:
    base, dev = rig.server.url, rig.agent.device_id

    async def shot(name: str) -> None:
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    # Sign in with the supervisor's token; the fleet page comes first.
    await page.goto(f"{base}/ui/")
    assert "/ui/signin" in page.url
    await page.fill("input[name=token]", rig.supervisor)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/fleet")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "custody_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The simulated device shows as online (its retained availability and signed status over MQTT).
    for _ in range(40):
        if await page.locator(f"tr:has(a[href='/ui/devices/{dev}']) .badge.online").count():
            break
        await asyncio.sleep(0.25)
        await page.reload()
    else:
        raise AssertionError("the device never showed as online")
    await shot("1-fleet")

    # Device page, then its live view.
    await page.click(f"a[href='/ui/devices/{dev}']")
    await page.wait_for_selector("a.live-link")
    await shot("2-device")
    await page.click("a.live-link")
    await page.fill("#reason", "supervising the inspection live")
    head_before = rig.agent.buffer.head_seq
    timings_before = len(rig.agent.timings)
    with loopback_ice():
        await page.click("#live-start")
        await page.wait_for_function(
            "document.getElementById('live-video').getVideoPlaybackQuality().totalVideoFrames > 0", timeout=20_000)
        t_first = time.monotonic()
        samples = []
        for _ in range(4):
            samples.append(await page.evaluate(
                "document.getElementById('live-video').getVideoPlaybackQuality().totalVideoFrames"))
            await asyncio.sleep(1.0)
        await shot("3-live")
        assert samples == sorted(samples) and samples[-1] - samples[0] >= 20, f"frames did not keep coming: {samples}"
        # The recorder kept committing chunks while the live view ran.
        assert rig.agent.buffer.head_seq is not None and head_before is not None
        assert rig.agent.buffer.head_seq >= head_before + 3
        assert len(rig.agent.timings) - timings_before >= 3
        await page.click("#live-leave")
        await page.wait_for_function("document.getElementById('live-status').textContent.length > 0")
    print(f"browser: first live frame {t_first - t_start:.1f} s into the test")

    # The case timeline shows the seeded gap in red.
    await page.goto(f"{base}/ui/cases")
    await page.click("a.case-link")
    gap = page.locator("svg.timeline rect.gap")
    await gap.first.wait_for()
    assert await gap.count() == 1
    assert await page.locator("svg.timeline rect.recorded").count() == 2  # the two recordings, either side
    await shot("4-case-timeline")

    # Play recording A: one access event, its chunks in order (remuxed), decoded to the end.
    await page.goto(f"{base}/ui/devices/{dev}")
    await page.click(f"a.play-link[href$='{rec_a}']")
    await page.fill("#reason", "reviewing the first recording")
    await page.click("#play-start")
    await page.wait_for_function("window.customPlayback && window.customPlayback.done", timeout=30_000)
    played = await page.evaluate("window.customPlayback")
    assert played["frames"] >= 30 and played["access"], played  # 2.5 s at 15 fps, and its access id
    await shot("5-playback")

    # The access log shows the live view with its end, and the playback.
    await page.goto(f"{base}/ui/access")
    live_rows = page.locator("table.live-views tbody tr")
    assert await live_rows.count() == 1
    text = await live_rows.first.inner_text()
    assert "ongoing" not in text and "left" in text
    events = await page.locator("table.access-events tbody tr").all_inner_texts()
    assert any("live view" in e and "supervising the inspection live" in e for e in events), events
    assert any("view" in e and rec_a in e and "reviewing the first recording" in e for e in events), events
    await shot("6-access-log")
    # 中文: the same page in Chinese, from the language switch.
    await page.click("a.lang")
    await page.wait_for_selector("h1:has-text('调阅记录')")
    assert await page.locator("table.access-events tbody tr:has-text('实时调阅')").count() == 1
    await shot("7-access-log-zh")

    # 统计: the statistics page (still in Chinese) loads its server-drawn charts without a console error.
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.click("nav a[href='/ui/stats']")
    await page.wait_for_selector("h1:has-text('全过程记录统计')")
    assert await page.locator("svg.chart#chart-recordings rect.bar").count() >= 1
    assert await page.locator("table.stats-volume tbody tr").count() == 12  # the twelve months up to now
    await shot("8-stats-zh")
    assert not errors, errors
