// Shared by the page scripts: messages from the page, and API calls with the session's CSRF token.
"use strict";
const Custody = (() => {
  const messages = JSON.parse(document.getElementById("messages").textContent || "{}");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  function t(key, values) {
    let text = messages[key] || key;
    for (const [k, v] of Object.entries(values || {})) text = text.replaceAll("{" + k + "}", String(v));
    return text;
  }
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const data = r.headers.get("Content-Type", "").startsWith("application/") ? await r.json() : {};
    if (!r.ok) throw new Error(data.detail || data.title || ("HTTP " + r.status));
    return data;
  }
  return { t, api };
})();
