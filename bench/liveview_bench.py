"""Live view: request-to-first-frame in the browser, and end-to-end frame delay, with 1 and 5 viewers.

Everything on 127.0.0.1: Mosquitto, the server, a recording agent (synthetic source, recording the
whole time, as in the field) and headless Chromium with N pages on the live view page.

- request to first frame: from the click on "Start live view" to the first frame the page's
  ``<video>`` presents (``requestVideoFrameCallback``), per viewer.
- end-to-end delay: each presented frame is drawn to a canvas and the frame counter the synthetic
  source burns in is read back (the 5x7 font's cells, sampled at their centres); the delay is the
  presentation time minus that frame's capture time, which the device's live tap keeps by counter.
  Browser and device share this machine's clock.

Run: ``.venv/bin/python bench/liveview_bench.py [--seconds 8] [--width 640 --height 360 --fps 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.media import font
from tests.helpers.live import LiveRig, live_rig, loopback_ice, media
from tests.services.mosquitto import MosquittoBroker

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
                 "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns",
                 # Five pages in one headless browser: none of them may be throttled as a background tab.
                 "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                 "--disable-backgrounding-occluded-windows"]

# Runs in each page: time the click, then read the counter off every presented frame.
PROBE = """
(geom) => {
  const out = { clicked: null, first: null, samples: [] };
  window.bench = out;
  const video = document.getElementById('live-video');
  document.getElementById('live-start').addEventListener('click', () => { out.clicked = Date.now(); }, true);
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  function read() {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w) return null;
    canvas.width = w; canvas.height = h;
    ctx.drawImage(video, 0, 0, w, h);
    const band = ctx.getImageData(0, geom.top, w, geom.rows * geom.scale).data;
    let n = 0;
    for (let i = 0; i < geom.digits; i++) {
      let best = -1, bestErr = 1e9;
      const bits = [];
      for (let r = 0; r < geom.rows; r++) for (let c = 0; c < geom.cols; c++) {
        const x = geom.left + (i * geom.cellW + c) * geom.scale + (geom.scale >> 1);
        const y = r * geom.scale + (geom.scale >> 1);
        const p = (y * w + x) * 4;
        bits.push(0.299 * band[p] + 0.587 * band[p + 1] + 0.114 * band[p + 2] > 128 ? 1 : 0);
      }
      geom.patterns.forEach((pat, d) => {
        let err = 0;
        for (let k = 0; k < pat.length; k++) err += pat[k] !== bits[k];
        if (err < bestErr) { bestErr = err; best = d; }
      });
      if (bestErr > 4) return null;
      n = n * 10 + best;
    }
    return n;
  }
  function onFrame(now, meta) {
    const shown = performance.timeOrigin + now;
    if (out.first === null) out.first = shown;
    const n = read();
    if (n !== null) out.samples.push([n, shown]);
    video.requestVideoFrameCallback(onFrame);
  }
  video.requestVideoFrameCallback(onFrame);
}
"""


def geometry(width: int, height: int) -> dict[str, Any]:
    """Where the synthetic source draws its 8-digit counter, and the digits' 5x7 patterns."""
    scale = max(1, height // 60)
    mask = font.render_text("00000000", scale)
    mh, mw = mask.shape
    top = max(0, min(height - mh, height // 2 - mh // 2))
    patterns = [[int(b) for b in font.render_text(str(d), 1)[: font.GLYPH_H, : font.GLYPH_W].reshape(-1)]
                for d in range(10)]
    return {"scale": scale, "top": top, "left": (width - min(mw, width)) // 2, "digits": 8,
            "rows": font.GLYPH_H, "cols": font.GLYPH_W, "cellW": font.CELL_W, "patterns": patterns}


async def run_viewers(rig: LiveRig, browser: Any, n: int, seconds: float, geom: dict[str, Any]) -> dict[str, Any]:
    """N pages start the live view at once; measure, then leave and wait for the session to end."""
    base, dev = rig.server.url, rig.agent.device_id
    pages, contexts = [], []
    for _ in range(n):
        # A context (window) per viewer: a second page in one window is a background tab.
        context = await browser.new_context(bypass_csp=True, viewport={"width": 900, "height": 700})
        await context.add_cookies([{"name": "custody_session", "value": rig.supervisor, "url": base}])
        contexts.append(context)
        page = await context.new_page()
        await page.goto(f"{base}/ui/devices/{dev}/live")
        await page.fill("#reason", "benchmark of live view")
        await page.evaluate(PROBE, geom)
        pages.append(page)
    await asyncio.gather(*(p.click("#live-start") for p in pages))
    await asyncio.sleep(seconds)
    results = [await p.evaluate("window.bench") for p in pages]
    for p in pages:
        await p.click("#live-leave")
    for context in contexts:
        await context.close()
    for session in list(rig.agent.live.sessions.values()):  # the server stops it once the viewers left
        await session.ended.wait()
    captured = dict(rig.agent.live_tap.capture_times)
    first = sorted(r["first"] - r["clicked"] for r in results if r["first"] and r["clicked"])
    delays = [shown - captured[n] for r in results for n, shown in r["samples"] if n in captured]
    fps = [len(r["samples"]) / seconds for r in results]
    return {"viewers": n, "first_frame_ms": first, "delay_ms": delays, "read_fps": fps,
            "unread": sum(1 for r in results for s in r["samples"] if s[0] not in captured)}


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed: run `make system-deps`")
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp) / "mqtt")
        broker.start()
        try:
            async with live_rig(Path(tmp), broker.url, media(args.width, args.height, args.fps),
                                **{"live.linger_s": 0}) as rig:
                await rig.agent.start_recording(reason="bench")
                geom = geometry(args.width, args.height)
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                    out = []
                    with loopback_ice():
                        for n in (1, 5):
                            out.append(await run_viewers(rig, browser, n, args.seconds, geom))
                    await browser.close()
                await rig.agent.stop_recording(reason="bench")
                late = max((t.late_ms for t in rig.agent.timings), default=0)
        finally:
            broker.stop()
    print(f"live view, {args.width}x{args.height}@{args.fps}, recording at the same time, {time.strftime('%Y-%m-%d')}")
    print("| viewers | request → first frame (ms) | e2e delay median (ms) | p95 | max | frames read/s per viewer |")
    print("|---|---|---|---|---|---|")
    for r in out:
        d, f = r["delay_ms"], r["first_frame_ms"]
        print(f"| {r['viewers']} | {', '.join(f'{x:.0f}' for x in f)} | {statistics.median(d):.0f} | "
              f"{pct(d, 0.95):.0f} | {max(d):.0f} | {', '.join(f'{x:.1f}' for x in r['read_fps'])} |")
    print(f"latest chunk commit after its last frame: {late} ms")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
