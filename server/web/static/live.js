// Live view: ask the server for the device's stream, then plain browser WebRTC (the server relays).
"use strict";
(() => {
  const form = document.getElementById("live-form");
  const video = document.getElementById("live-video");
  const status = document.getElementById("live-status");
  const frames = document.getElementById("live-frames");
  const leave = document.getElementById("live-leave");
  const device = form.dataset.device;
  let pc = null, joined = null;

  function show(text) { status.textContent = text; }

  async function start(reason) {
    show(Custody.t("live.requesting"));
    const session = await Custody.api("POST", `/api/v1/devices/${device}/live`);
    pc = new RTCPeerConnection({ iceServers: [] });  // the server's ICE servers, if any, are in its answer
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (e) => {
      if (!video.srcObject) video.srcObject = new MediaStream();
      video.srcObject.addTrack(e.track);
    };
    pc.onconnectionstatechange = () => {
      if (pc && (pc.connectionState === "failed" || pc.connectionState === "closed")) stop(false);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === "complete") return done();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") done(); };
      setTimeout(done, 3000);  // send what was gathered: host candidates come first
    });
    show(Custody.t("live.connecting"));
    const answer = await Custody.api("POST", `/api/v1/devices/${device}/live/${session.session}/viewers`,
      { type: "offer", sdp: pc.localDescription.sdp, reason });
    joined = { session: session.session, viewer: answer.viewer, access: answer.access_id };
    window.customLive = joined;
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    show(Custody.t("live.playing", { access: answer.access_id }));
    leave.disabled = false;
  }

  async function stop(tell) {
    const was = joined;
    joined = null;
    leave.disabled = true;
    try {
      if (tell && was) {  // first, so the record says the viewer left rather than the connection closed
        await Custody.api("POST", `/api/v1/devices/${device}/live/${was.session}/viewers/${was.viewer}/leave`);
      }
    } finally {
      if (pc) { pc.close(); pc = null; }
    }
    show(Custody.t("live.ended"));
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    start(document.getElementById("reason").value).catch((err) => {
      show(Custody.t("live.failed", { reason: err.message }));
      if (pc) { pc.close(); pc = null; }
    });
  });
  leave.addEventListener("click", () => { stop(true).catch((err) => show(err.message)); });
  window.addEventListener("pagehide", () => {
    if (joined) {  // best effort; the server also ends the view when the connection closes
      fetch(`/api/v1/devices/${device}/live/${joined.session}/viewers/${joined.viewer}/leave`,
        { method: "POST", keepalive: true, credentials: "same-origin",
          headers: { "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content } });
    }
  });
  setInterval(() => {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    if (q) frames.textContent = String(q.totalVideoFrames);
  }, 500);
})();
