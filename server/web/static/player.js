// Playback: the recording's chunks, remuxed in order into one MP4 by the footage endpoint, which puts
// the view (who, what, why) in the access log before it sends the first byte.
"use strict";
(() => {
  const form = document.getElementById("play-form");
  const video = document.getElementById("play-video");
  const status = document.getElementById("play-status");
  const device = form.dataset.device, recording = form.dataset.recording;
  const played = { frames: 0, done: false, access: null };
  window.customPlayback = played;

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const reason = document.getElementById("reason").value;
    const url = `/api/v1/devices/${device}/recordings/${encodeURIComponent(recording)}/mp4?` +
      new URLSearchParams({ reason, disposition: "inline" });
    try {
      const r = await fetch(url, { credentials: "same-origin" });
      if (!r.ok) {
        const problem = await r.json().catch(() => ({}));
        throw new Error(problem.detail || ("HTTP " + r.status));
      }
      played.access = r.headers.get("Custody-Access-Id");
      status.textContent = Custody.t("play.access", { access: played.access });
      video.src = URL.createObjectURL(await r.blob());
      video.onended = () => {
        played.frames = video.getVideoPlaybackQuality().totalVideoFrames;
        played.done = true;
        status.textContent = Custody.t("play.done", { access: played.access });
      };
      video.playbackRate = 4;  // review speed; the controls can change it
      await video.play();
    } catch (err) {
      status.textContent = Custody.t("play.failed", { reason: err.message });
    }
  });
})();
