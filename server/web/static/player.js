// Playback: one access event for the recording, then its chunks in order, each a standalone MP4.
"use strict";
(() => {
  const form = document.getElementById("play-form");
  const video = document.getElementById("play-video");
  const status = document.getElementById("play-status");
  const device = form.dataset.device, recording = form.dataset.recording;
  const played = { chunks: 0, frames: 0, done: false, access: null };
  window.customPlayback = played;

  function playChunk(list, i) {
    if (i >= list.length) {
      played.done = true;
      status.textContent = Custody.t("play.done");
      return;
    }
    status.textContent = Custody.t("play.chunk", { n: i + 1, total: list.length, seq: list[i].seq });
    video.src = list[i].url;
    video.onended = () => {
      const q = video.getVideoPlaybackQuality();
      played.frames += q.totalVideoFrames;
      played.chunks = i + 1;
      playChunk(list, i + 1);
    };
    video.onerror = () => { status.textContent = Custody.t("play.failed", { reason: "chunk " + list[i].seq }); };
    video.play().catch(() => {});
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await Custody.api("POST", `/api/v1/devices/${device}/recordings/${encodeURIComponent(recording)}/playback`,
        { reason: document.getElementById("reason").value });
      played.access = r.access_id;
      playChunk(r.chunks, 0);
    } catch (err) {
      status.textContent = Custody.t("play.failed", { reason: err.message });
    }
  });
})();
