"""Chunks play on their own in a real browser (headless Chromium through Playwright).

Served by a plain HTTP server without Range support, so a chunk must be playable from a single
download: what a browser gets when it is handed a chunk's URL or bytes.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.media.export import export_recording
from tests.unit.agent.recording import moov_last_chunk, run_pipeline, small_config

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<html><body><script>
function play(name) { return new Promise(done => {
  const v = document.createElement('video'), out = {name};
  const timer = setTimeout(() => { out.timeout = true; done(out); }, 20000);
  v.muted = true;
  v.onerror = () => { clearTimeout(timer); out.error = v.error && v.error.message; done(out); };
  v.onloadedmetadata = () => {
    out.duration = v.duration; out.width = v.videoWidth; v.playbackRate = 4; v.play(); };
  v.onended = () => { clearTimeout(timer); out.ended = true;
    out.frames = v.getVideoPlaybackQuality().totalVideoFrames;
    out.audioBytes = v.webkitAudioDecodedByteCount; done(out); };
  v.src = name; document.body.appendChild(v);
}); }
(async () => { const r = []; for (const n of NAMES) r.push(await play(n)); window.results = r; })();
</script></body></html>"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """Chunks of every kind, written to a directory behind a local HTTP server; name -> frames."""
    web = tmp_path_factory.mktemp("web")
    run = run_pipeline(small_config(), 8 * 30, start_at=(100,))
    pre = next(c for c in run.chunks if c.pre_event)
    rec = next(c for c in run.chunks if not c.pre_event)
    files = {"chunk.mp4": rec, "pre_event.mp4": pre}
    files["opus.mp4"] = run_pipeline(small_config(audio_codec="opus"), 60, recording=True).chunks[0]
    frames = {name: c.video_frames for name, c in files.items()}
    for name, c in files.items():
        (web / name).write_bytes(c.data)
    (web / "moov_last.mp4").write_bytes(moov_last_chunk(30))  # as FFmpeg writes it, no fast start
    frames["moov_last.mp4"] = 30
    export_recording([c.data for c in run.chunks], web / "export.mp4")
    frames["export.mp4"] = sum(c.video_frames for c in run.chunks)
    names = ",".join(f"'{n}'" for n in frames)
    (web / "index.html").write_text(PAGE.replace("NAMES", f"[{names}]"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html", frames
    finally:
        server.shutdown()


async def test_every_kind_of_chunk_plays_to_the_end_in_chromium(served: tuple[str, dict[str, int]]) -> None:
    # `make test` installs Chromium (deploy/scripts/system-deps.sh); its absence is a failure, not a skip.
    assert CHROMIUM is not None, "chromium is not installed: run `make system-deps`"
    from playwright import async_api as playwright

    url, frames = served
    async with playwright.async_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page()
            await page.goto(url)
            await page.wait_for_function("window.results !== undefined", timeout=120_000)
            results = {r["name"]: r for r in await page.evaluate("window.results")}
        finally:
            await browser.close()
    for name, expected in frames.items():
        r = results[name]
        assert r.get("ended"), f"{name} did not play to the end: {r}"
        assert r["width"] == 320
        assert r["frames"] == expected, name
        assert (r["audioBytes"] > 0) == (name != "pre_event.mp4"), name
