"""The dashboard: server-rendered pages (plain HTML, a little vanilla JS, SVG), zh-CN and English.

Pages are in one table, :data:`PAGES`, with the roles that may see each; the navigation shows a
person only what their role may open. Pages read through the same services as the API; the page
scripts (server/web/static/) call the API with the session cookie and the CSRF header, so there
is one set of rules for who may do what.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from aiohttp import web

from server.api.governance_api import STATS_QUERY
from server.api.routes import ROUTES
from server.auth import Principal, Role
from server.db.schema import entries, officers, units
from server.errors import BadRequest, Forbidden, NotFound, ServerError, Unauthorized
from server.services import Services
from server.web import charts
from server.web import session as sess
from server.web import stats_view as sv
from server.web.messages import LANGUAGES, MESSAGES, pick_language, t
from server.web.timeline import DEFAULT_TOLERANCE_MS, Row, timeline_svg

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
R = Role
FLEET_ROLES = frozenset({R.ADMIN, R.DEVICE_ADMIN, R.SUPERVISOR, R.AUDITOR})
EVIDENCE_ROLES = frozenset({R.ADMIN, R.DEVICE_ADMIN, R.SUPERVISOR, R.AUDITOR, R.CASE_HANDLER, R.LEGAL_REVIEWER})
CASE_ROLES = frozenset({R.ADMIN, R.SUPERVISOR, R.AUDITOR, R.CASE_HANDLER, R.LEGAL_REVIEWER})
LIVE_ROLES = frozenset({R.ADMIN, R.SUPERVISOR})
#: Who may read footage (the footage routes' role set; every read is in the access log).
FOOTAGE_ROLES = frozenset({R.ADMIN, R.CASE_HANDLER, R.SUPERVISOR, R.LEGAL_REVIEWER, R.AUDITOR})
AUDIT_ROLES = frozenset({R.ADMIN, R.SUPERVISOR, R.AUDITOR})
ACCESS_ROLES = frozenset({R.ADMIN, R.SUPERVISOR, R.AUDITOR})


def route_roles(method: str, path: str) -> frozenset[Role]:
    """The roles of an API route: a page showing what that route answers admits exactly those roles."""
    for route in ROUTES:
        if (route.method, route.path) == (method, path) and isinstance(route.access, frozenset):
            return route.access
    raise LookupError(f"no role-checked route {method} {path}")


#: Read from the route table, not copied: the statistics page and the stats API cannot drift apart.
STATS_ROLES = route_roles("GET", "/api/v1/stats")
PUBLIC_SUMMARY_ROLES = route_roles("GET", "/api/v1/stats/public/{year}")

#: Security headers of every page: scripts and styles only from this server, never framed.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PRESESSION = "custody_presession"  # login CSRF: double-submit value for the sign-in form


@dataclass(slots=True)
class Page:
    """What a page handler gets."""

    request: web.Request
    services: Services
    principal: Principal
    lang: str
    csrf: str

    def t(self, key: str, **values: object) -> str:
        """A message in the page's language."""
        return t(self.lang, key, **values)

    def may(self, roles: frozenset[Role]) -> bool:
        """Whether the signed-in role is among ``roles``."""
        return self.principal.role in roles


PageHandler = Callable[[Page], Awaitable[web.StreamResponse]]


# -- formatting ------------------------------------------------------------------------------------------


def h(value: object) -> str:
    """HTML-escaped text (None as a dash)."""
    return "–" if value is None else escape(str(value))


def when(ms: int | None) -> str:
    """A time in UTC, to the second."""
    if ms is None:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def size(n: int | None) -> str:
    """Bytes in binary units."""
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def table(headers: list[str], rows: list[list[str]], *, cls: str = "", empty: str = "") -> str:
    """A table; cells are HTML already escaped by the caller."""
    if not rows:
        return f'<p class="empty">{h(empty)}</p>'
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def layout(page: Page, title: str, body: str, *, scripts: tuple[str, ...] = (), messages: tuple[str, ...] = (),
           refresh_s: int | None = None, status: int = 200) -> web.Response:
    """The frame around every signed-in page: navigation, language switch, sign-out form."""
    nav = []
    for path, key, roles in NAV:
        if page.may(roles):
            nav.append(f'<a href="{path}">{h(page.t(key))}</a>')
    other = "en" if page.lang == "zh-CN" else "zh-CN"
    here = quote(page.request.path_qs, safe="/?=&")
    msgs = json.dumps({k: MESSAGES[k].get(page.lang) or MESSAGES[k]["en"] for k in messages}, ensure_ascii=False)
    msgs = msgs.replace("</", "<\\/")  # JSON inside a script element must not close it
    html = f"""<!doctype html>
<html lang="{page.lang}"><head><meta charset="utf-8"><title>{h(title)} · {h(page.t("app.title"))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{page.csrf}">
{f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""}
<link rel="stylesheet" href="/ui/static/app.css"></head>
<body><header><strong>{h(page.t("app.title"))}</strong> <nav>{" ".join(nav)}</nav>
<span class="who">{h(page.t("signin.as", name=page.principal.name, role=page.principal.role.value))}</span>
<a class="lang" href="/ui/lang/{other}?next={here}">{h(page.t("lang.switch"))}</a>
<form method="post" action="/ui/signout" class="signout"><input type="hidden" name="csrf" value="{page.csrf}">
<button type="submit">{h(page.t("nav.signout"))}</button></form></header>
<main><h1>{h(title)}</h1>{body}</main>
<script type="application/json" id="messages">{msgs}</script>
{"".join(f'<script src="/ui/static/{s}"></script>' for s in scripts)}
</body></html>"""
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def bare(lang: str, title: str, body: str, status: int = 200) -> web.Response:
    """A page outside the frame (sign-in, errors before sign-in)."""
    other = "en" if lang == "zh-CN" else "zh-CN"
    html = f"""<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{h(title)}</title>
<link rel="stylesheet" href="/ui/static/app.css"></head><body class="bare">
<header><strong>{h(t(lang, "app.title"))}</strong>
<a class="lang" href="/ui/lang/{other}?next=/ui/signin">{h(t(lang, "lang.switch"))}</a></header>
<main><h1>{h(title)}</h1>{body}</main></body></html>"""
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def _lang(request: web.Request, services: Services) -> str:
    return pick_language(request.cookies.get(sess.LANG_COOKIE), request.headers.get("Accept-Language"),
                         services.config.web.default_language)


def _secure(request: web.Request) -> bool:
    return request.secure or (request.app.get(PUBLIC_HTTPS) or False)


PUBLIC_HTTPS = web.AppKey("web_public_https", bool)

# -- sign in and out --------------------------------------------------------------------------------------


async def signin_form(request: web.Request, services: Services, error: str | None = None) -> web.Response:
    """The sign-in form (with a login-CSRF double-submit value)."""
    lang = _lang(request, services)
    nonce = request.cookies.get(PRESESSION) or secrets.token_urlsafe(24)
    next_path = _next(request.query.get("next"))
    body = (f'<form method="post" action="/ui/signin" class="signin">'
            f'<input type="hidden" name="csrf" value="{nonce}"><input type="hidden" name="next" value="{h(next_path)}">'
            f'<label>{h(t(lang, "signin.token"))} <input type="password" name="token" autocomplete="off" '
            f'required></label> <button type="submit">{h(t(lang, "signin.submit"))}</button></form>')
    if error:
        body = f'<p class="error">{h(error)}</p>' + body
    response = bare(lang, t(lang, "signin.title"), body, 401 if error else 200)
    response.set_cookie(PRESESSION, nonce, httponly=True, samesite="Strict", secure=_secure(request), path="/ui/")
    return response


def _next(value: str | None) -> str:
    """Only a path of this dashboard: never an open redirect."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


async def signin(request: web.Request, services: Services) -> web.StreamResponse:
    """Check the token, then set it as the session cookie."""
    form = await request.post()
    lang = _lang(request, services)
    presession = request.cookies.get(PRESESSION)
    if not presession or not secrets.compare_digest(str(form.get("csrf", "")), presession):
        raise Forbidden("the sign-in form expired: reload it", code="csrf")
    token = str(form.get("token", "")).strip()
    try:
        await services.authenticator.bearer(token)
    except Unauthorized as exc:
        return await signin_form(request, services, t(lang, "signin.failed", reason=exc.message))
    response = web.HTTPSeeOther(_next(str(form.get("next", ""))))
    sess.set_session(response, token, secure=_secure(request), max_age_s=services.config.web.session_hours * 3600)
    response.del_cookie(PRESESSION, path="/ui/")
    raise response


async def signout(request: web.Request, services: Services) -> web.StreamResponse:
    """End the session (CSRF-checked: a forged sign-out is a nuisance worth refusing too)."""
    form = await request.post()
    token = sess.session_token(request)
    if token is not None:
        sess.check_csrf(services, token, str(form.get("csrf", "")))
    response = web.HTTPSeeOther("/ui/signin")
    sess.clear_session(response, secure=_secure(request))
    raise response


async def set_language(request: web.Request, services: Services) -> web.StreamResponse:
    """Remember the language and go back."""
    lang = request.match_info["lang"]
    if lang not in LANGUAGES:
        raise NotFound(f"no language {lang}", code="unknown_language")
    response = web.HTTPSeeOther(_next(request.query.get("next")))
    response.set_cookie(sess.LANG_COOKIE, lang, samesite="Strict", secure=_secure(request), path="/",
                        max_age=365 * 86400)
    raise response


# -- the pages --------------------------------------------------------------------------------------------


async def home(page: Page) -> web.StreamResponse:
    """The first page a role may see."""
    for path, _key, roles in NAV:
        if page.may(roles):
            raise web.HTTPSeeOther(path)
    return layout(page, page.t("app.title"), f"<p>{h(page.t('home.none'))}</p>")


def _online(page: Page, value: bool | None) -> str:
    if value is None:
        return f'<span class="badge unknown">{h(page.t("unknown"))}</span>'
    key = "online" if value else "offline"
    return f'<span class="badge {key}" data-online="{str(value).lower()}">{h(page.t(key))}</span>'


def _rec_state(page: Page, state: str | None) -> str:
    return h(page.t(f"state.{state}")) if state in ("idle", "armed", "recording") else "–"


def _skew(ms: int | None) -> str:
    return "–" if ms is None else f"{ms / 1000:+.1f} s"


def _checkpoint(cp: dict[str, Any] | None) -> str:
    return "–" if not cp else h(f"{cp.get('origin', '')} #{cp.get('size')}")


async def fleet(page: Page) -> web.StreamResponse:
    """Every device's health."""
    view = await page.services.fleet.fleet()
    totals = view["totals"]
    rows = []
    for d in view["devices"]:
        rows.append([
            f'<a href="/ui/devices/{d["device_id"]}" class="device-link">{h(d["device_id"])}</a>',
            h(d.get("serial")), _online(page, d.get("online")), _rec_state(page, d["recording"]["state"]),
            h(f'{d["battery_pct"]} %' if d.get("battery_pct") is not None else None), size(d.get("storage_free")),
            h(d["pending"]["chunks"]), _skew(d.get("clock_skew_ms")), _checkpoint(d.get("last_checkpoint")),
            when(d.get("last_seen_ms")),
        ])
    summary = page.t("fleet.summary", devices=totals["devices"], online=totals["online"],
                     recording=totals["recording"], pending=totals["pending_chunks"])
    headers = [page.t(k) for k in ("col.device", "col.serial", "col.online", "col.recording", "col.battery",
                                   "col.storage", "col.pending", "col.skew", "col.checkpoint", "col.last_seen")]
    body = f'<p class="summary">{h(summary)}</p>' + table(headers, rows, cls="fleet", empty=page.t("fleet.none"))
    return layout(page, page.t("fleet.title"), body, refresh_s=10)


async def _recordings(services: Services, device_id: str) -> list[Any]:
    async with services.db.read() as conn:
        return list((await conn.execute(
            sa.select(entries.c.recording_id, sa.func.count().label("chunks"), sa.func.min(entries.c.time_ms)
                      .label("start_ms"), sa.func.max(entries.c.time_ms + entries.c.duration_ms).label("end_ms"))
            .where(entries.c.device_id == device_id, entries.c.kind == "chunk", entries.c.state == "verified")
            .group_by(entries.c.recording_id).order_by(sa.func.min(entries.c.time_ms).desc()).limit(50))).all())


async def device(page: Page) -> web.StreamResponse:
    """One device: health, live view, recordings, recent entries."""
    s, dev = page.services, page.request.match_info["device_id"]
    record = await s.devices.get(dev)
    view = await s.fleet.device(dev)
    facts = [(page.t("col.state"), h(record["state"])), (page.t("col.online"), _online(page, view.get("online"))),
             (page.t("col.recording"), _rec_state(page, view["recording"]["state"])),
             (page.t("col.battery"), h(view.get("battery_pct"))),
             (page.t("col.storage"), size(view.get("storage_free"))),
             (page.t("col.pending"), h(view["pending"]["chunks"])),
             (page.t("col.skew"), _skew(view.get("clock_skew_ms"))),
             (page.t("col.checkpoint"), _checkpoint(view.get("last_checkpoint"))),
             (page.t("col.last_seen"), when(view.get("last_seen_ms")))]
    body = '<dl class="facts">' + "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    if page.may(LIVE_ROLES):
        body += f'<p><a class="button live-link" href="/ui/devices/{dev}/live">{h(page.t("device.live"))}</a></p>'
    if page.may(EVIDENCE_ROLES):
        recs = await _recordings(s, dev)
        play = page.may(FOOTAGE_ROLES)
        rows = [[h(r.recording_id), when(r.start_ms), h(f"{(r.end_ms - r.start_ms) / 1000:.0f} s"), h(r.chunks),
                 f'<a class="play-link" href="/ui/devices/{dev}/recordings/{quote(r.recording_id)}">'
                 f'{h(page.t("device.play"))}</a>' if play else ""] for r in recs]
        body += f"<h2>{h(page.t('device.recordings'))}</h2>" + table(
            [page.t(k) for k in ("col.recording_id", "col.start", "col.duration", "col.chunks")] + [""], rows,
            cls="recordings", empty=page.t("device.no_recordings"))
        top = record.get("highest_seq") or 0
        recent = await s.ingest.list_entries(dev, max(0, top - 19), 20)
        rows = [[h(e["seq"]), h(page.t(f"kind.{e['kind']}")) + (f" ({h(e['event'])})" if e.get("event") else ""),
                 h(e["recording_id"]), when(e["time_ms"]), h(e["state"])] for e in reversed(recent)]
        body += f"<h2>{h(page.t('device.entries'))}</h2>" + table(
            [page.t(k) for k in ("col.seq", "col.kind", "col.recording_id", "col.time", "col.state")], rows,
            cls="entries")
    return layout(page, page.t("device.title", id=dev), body)


async def live(page: Page) -> web.StreamResponse:
    """The live view of one device (the script does the WebRTC)."""
    dev = page.request.match_info["device_id"]
    await page.services.devices.get(dev)
    body = (f'<p class="notice">{h(page.t("live.notice"))}</p>'
            f'<form id="live-form" data-device="{dev}"><label>{h(page.t("live.reason"))} '
            f'<input name="reason" id="reason" required minlength="4" maxlength="500"></label> '
            f'<button type="submit" id="live-start">{h(page.t("live.start"))}</button> '
            f'<button type="button" id="live-leave" disabled>{h(page.t("live.leave"))}</button></form>'
            f'<p id="live-status" class="status"></p>'
            f'<video id="live-video" autoplay muted playsinline></video>'
            f'<p>{h(page.t("live.frames"))}: <span id="live-frames">0</span></p>')
    return layout(page, page.t("live.title", id=dev), body, scripts=("common.js", "live.js"),
                  messages=("live.requesting", "live.connecting", "live.playing", "live.ended", "live.failed"))


async def playback_page(page: Page) -> web.StreamResponse:
    """Playback of one recording (the script asks for the access, then plays chunk after chunk)."""
    dev, rec = page.request.match_info["device_id"], page.request.match_info["recording_id"]
    await page.services.devices.get(dev)
    body = (f'<form id="play-form" data-device="{dev}" data-recording="{h(rec)}">'
            f'<label>{h(page.t("play.reason"))} <input name="reason" id="reason" required minlength="4" '
            f'maxlength="500"></label> <button type="submit" id="play-start">{h(page.t("play.start"))}</button></form>'
            f'<p id="play-status" class="status"></p><video id="play-video" controls muted playsinline></video>')
    return layout(page, page.t("play.title", id=rec), body, scripts=("common.js", "player.js"),
                  messages=("play.access", "play.done", "play.failed"))


async def cases(page: Page) -> web.StreamResponse:
    """Cases."""
    view = page.services.cases
    rows = [[f'<a class="case-link" href="/ui/cases/{c["id"]}">{h(c["number"])}</a>', h(c["title"]),
             h(c.get("category_zh") if page.lang == "zh-CN" else c.get("category")), h(c.get("handler"))]
            for c in await view.list_cases()]
    headers = [page.t(k) for k in ("col.number", "col.title", "col.category", "col.handler")]
    return layout(page, page.t("cases.title"), table(headers, rows, cls="cases", empty=page.t("cases.none")))


def step_window(step: dict[str, Any]) -> tuple[int, int] | None:
    """The actual window when known, else the planned one (as the audit judges a step)."""
    for a, b in (("actual_start_ms", "actual_end_ms"), ("planned_start_ms", "planned_end_ms")):
        if step.get(a) is not None and step.get(b) is not None:
            return int(step[a]), int(step[b])
    return None


async def _recorded(services: Services, links: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """What the step's linked recordings cover: their chunks, clipped to each link's range."""
    out: list[tuple[int, int]] = []
    async with services.db.read() as conn:
        for link in links:
            rows = (await conn.execute(sa.select(entries.c.time_ms, entries.c.duration_ms).where(
                entries.c.device_id == link["device_id"], entries.c.recording_id == link["recording_id"],
                entries.c.kind == "chunk", entries.c.state != "rejected"))).all()
            lo, hi = link.get("from_ms"), link.get("until_ms")
            for r in rows:
                a, b = r.time_ms, r.time_ms + (r.duration_ms or 0)
                a, b = max(a, lo) if lo is not None else a, min(b, hi) if hi is not None else b
                if a < b:
                    out.append((a, b))
    return out


async def case(page: Page) -> web.StreamResponse:
    """One case: its steps and the coverage timeline."""
    view = page.services.cases
    try:
        case_id = int(page.request.match_info["case_id"])
    except ValueError:
        raise NotFound("no such case", code="unknown_case") from None
    c = await view.get_case(case_id)
    rows: list[Row] = []
    cells = []
    for step in c["steps"]:
        row = Row(step["id"], step.get("title") or step["id"], step_window(step),
                  await _recorded(page.services, step.get("links", [])))
        rows.append(row)
        cov = row.coverage()
        gaps = row.gaps()
        cells.append([h(step.get("title") or step["id"]), h(step.get("activity")), h(step.get("requirement")),
                      h(f"{when(row.window[0])} – {when(row.window[1])}" if row.window else None),
                      h(f"{cov * 100:.0f} %" if cov is not None else None),
                      f'<span class="{"gap-count" if gaps else ""}">{len(gaps)}</span>'])
    svg = timeline_svg(rows, title=page.t("case.timeline"), tolerance_ms=DEFAULT_TOLERANCE_MS)
    headers = [page.t(k) for k in ("col.step", "col.kind", "col.requirement", "col.window", "col.coverage",
                                   "col.gaps")]
    body = (f'<p>{h(c.get("title"))}</p>' + table(headers, cells, cls="steps") +
            f'<h2>{h(page.t("case.timeline"))}</h2><p class="legend">{h(page.t("case.legend"))}</p>'
            f'<figure class="timeline">{svg}</figure>')
    return layout(page, page.t("case.title", number=c.get("number", case_id)), body)


FINDING_FILTERS = ("device_id", "code", "open")


async def _findings(page: Page) -> list[dict[str, Any]]:
    q = page.request.query
    device_id = q.get("device_id") or None
    code = q.get("code") or None
    for name, value, limit in (("device_id", device_id, 24), ("code", code, 64)):
        if value is not None and (len(value) > limit or not value.replace("_", "").replace(".", "").isalnum()):
            raise BadRequest(f"invalid {name}", code="bad_value")
    return await page.services.findings.list_findings(device_id=device_id, code=code,
                                                      open_only=q.get("open") == "1", limit=1000)


async def audit(page: Page) -> web.StreamResponse:
    """Findings with filters, and their CSV."""
    q = page.request.query
    found = await _findings(page)
    rows = [[h(f["id"]), h(f["code"]), h(f["severity"]), h(f.get("device_id")), h(f.get("seq")), h(f["message"]),
             when(f["opened_ms"]), when(f.get("closed_ms"))] for f in found]
    form = (f'<form method="get" class="filters">'
            f'<label>{h(page.t("col.device"))} <input name="device_id" value="{h(q.get("device_id", ""))}"></label> '
            f'<label>{h(page.t("col.code"))} <input name="code" value="{h(q.get("code", ""))}"></label> '
            f'<label><input type="checkbox" name="open" value="1"{" checked" if q.get("open") == "1" else ""}> '
            f'{h(page.t("audit.open_only"))}</label> <button type="submit">{h(page.t("audit.filter"))}</button></form>')
    csv_q = urlencode({k: q[k] for k in FINDING_FILTERS if q.get(k)})
    body = form + f'<p><a class="csv" href="/ui/audit.csv?{csv_q}">{h(page.t("audit.csv"))}</a></p>' + table(
        ["#"] + [page.t(k) for k in ("col.code", "col.severity", "col.device", "col.seq", "col.message",
                                     "col.opened", "col.closed")], rows, cls="findings", empty=page.t("audit.none"))
    return layout(page, page.t("audit.title"), body)


async def audit_csv(page: Page) -> web.StreamResponse:
    """The filtered findings as CSV (UTF-8 with BOM, so spreadsheet programs read the Chinese right)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "code", "severity", "device_id", "seq", "message", "opened_utc", "closed_utc", "evidence"])
    for f in await _findings(page):
        w.writerow([f["id"], f["code"], f["severity"], f.get("device_id") or "", f.get("seq") if f.get("seq")
                    is not None else "", _csv_safe(f["message"]), when(f["opened_ms"]),
                    when(f.get("closed_ms")) if f.get("closed_ms") else "", json.dumps(f.get("evidence"))])
    return web.Response(body=("\ufeff" + out.getvalue()).encode("utf-8"), headers={
        **HEADERS, "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="custody-findings.csv"'})


def _csv_safe(text: str) -> str:
    """Defuse spreadsheet formulas (a message starting with = + - @)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


async def access(page: Page) -> web.StreamResponse:
    """Who saw which footage, and the live views with their start and end."""
    s = page.services
    views = await s.live.views(limit=200)
    ended = {v["access_id"]: v for v in views}
    events = await s.access.query(limit=1000)
    live_rows = [[h(v["actor"]), f'<a href="/ui/devices/{v["device_id"]}">{h(v["device_id"])}</a>',
                  h(v["access_id"]), when(v["started_ms"]),
                  when(v["ended_ms"]) if v["ended_ms"] else h(page.t("access.ongoing")), h(v.get("end_reason"))]
                 for v in views]
    event_rows = []
    for e in reversed(events):
        end = ended.get(e["id"])
        event_rows.append([h(e["id"]), f'<span class="kind-{h(e["kind"])}">{h(page.t("kind." + e["kind"]))}</span>',
                           h(e["actor"]), h(e.get("device_id")), h(e.get("recording_id")), h(e.get("objects")),
                           h(e.get("reason")), when(e["time_ms"]),
                           when(end["ended_ms"]) if end and end["ended_ms"] else ("–" if not end else
                                                                                   h(page.t("access.ongoing")))])
    body = (f"<h2>{h(page.t('access.live'))}</h2>" + table(
        [page.t("col.actor"), page.t("col.device"), "#", page.t("col.start"), page.t("col.end"), ""],
        live_rows, cls="live-views", empty=page.t("access.none")) +
        f"<h2>{h(page.t('access.events'))}</h2>" + table(
        ["#"] + [page.t(k) for k in ("col.kind", "col.actor", "col.device", "col.recording_id", "col.objects",
                                     "col.reason", "col.start", "col.end")], event_rows, cls="access-events",
        empty=page.t("access.none")))
    return layout(page, page.t("access.title"), body)


# -- statistics ---------------------------------------------------------------------------------------------

STATS_PARAMS = ("dimension", "from", "to")
PERCENTILES = ("p50", "p90", "p99")
#: Each dimension's name on the page (whole keys, so the catalogue test sees every key used).
DIMENSION_KEYS = {"unit": "stats.dim.unit", "officer": "stats.dim.officer", "device": "stats.dim.device"}
NO_UNIT = "(none)"  # the stats report's key for records in no unit


def fig(value: object, shown: str | None = None) -> str:
    """A table figure: formatted for people, the exact value in a ``<data>`` element for programs."""
    if value is None:
        return '<data value="">–</data>'
    return f'<data value="{h(value)}">{h(value if shown is None else shown)}</data>'


async def _key_names(page: Page, dimension: str) -> dict[str, str]:
    """What a key is called on the page: a unit's or an officer's name; a device by its id."""
    if dimension == "device":
        return {}
    table = units if dimension == "unit" else officers
    async with page.services.db.read() as conn:
        names = {r.id: r.name for r in (await conn.execute(sa.select(table.c.id, table.c.name))).all()}
    names[NO_UNIT] = page.t("stats.no_unit")
    return names


def _stat_section(ident: str, heading: str, figure: str, headers: list[str] | None = None,
                  rows: list[list[str]] | None = None, note: str = "") -> str:
    """A chart with the table of its figures under it (none when the chart already says there is no data)."""
    figures = table(headers or [], rows, cls=ident) if rows else ""
    note_html = f'<p class="empty">{note}</p>' if note else ""
    figure_html = f'<figure class="chart">{figure}</figure>' if figure else ""
    return f'<section class="stat" id="{ident}"><h2>{h(heading)}</h2>{note_html}{figure_html}{figures}</section>'


def _stats_form(page: Page, dimension: str, months: list[str]) -> str:
    options = "".join(f'<option value="{d}"{" selected" if d == dimension else ""}>{h(page.t(DIMENSION_KEYS[d]))}'
                      f"</option>" for d in DIMENSION_KEYS)
    return (f'<form method="get" class="filters stats-filters">'
            f'<label>{h(page.t("stats.dimension"))} <select name="dimension">{options}</select></label> '
            f'<label>{h(page.t("stats.from"))} <input type="month" name="from" value="{months[0]}" min="2000-01" '
            f'max="2099-12" required></label> '
            f'<label>{h(page.t("stats.to"))} <input type="month" name="to" value="{months[-1]}" min="2000-01" '
            f'max="2099-12" required></label> <button type="submit">{h(page.t("stats.show"))}</button></form>')


async def stats(page: Page) -> web.StreamResponse:
    """Statistics per unit, officer or device and month, as SVG charts with the exact figures under each.

    The figures come from the same report as ``GET /api/v1/stats`` (same scope, same months), and
    the page links to that route's CSV and JSON for exactly what it shows.
    """
    q = page.request.query
    unknown = sorted(set(q) - set(STATS_PARAMS))
    if unknown:
        raise BadRequest(f"unknown query parameter {', '.join(unknown)}", code="unknown_field")
    # The API's own declaration of the parameter: the same values, the same error code.
    dimension: str = (STATS_QUERY["dimension"].parse_query("dimension", q["dimension"]) if q.get("dimension")
                      else "unit")
    span = sv.MonthRange.of(q.get("from") or None, q.get("to") or None, page.services.clock.now_ms())
    months = span.months()
    scope = await page.services.units.scope(page.principal)
    report = await page.services.stats.report(span.since_ms, span.until_ms, dimension, scope)
    rows, names = report["rows"], await _key_names(page, dimension)

    def name(key: str) -> str:
        return names.get(key, key)

    def key_cell(key: str) -> str:
        return fig(key, name(key))

    def chart(ident: str, title: str, desc: str, x_label: str, y_label: str,
              fmt: charts.Format = charts.number) -> charts.Chart:
        return charts.Chart(ident, title, desc, x_label, y_label, page.t("stats.no_data"), fmt)

    first, last = months[0], months[-1]
    dim_label = page.t(DIMENSION_KEYS[dimension])
    month_label = page.t("stats.month")
    body = _stats_form(page, dimension, months)
    api_q = urlencode({"dimension": dimension, "since": span.since_ms, "until": span.until_ms})
    stem = f"custody-stats-{dimension}-{first}-{last}"
    body += (f'<p class="downloads">{h(page.t("stats.download"))}: '
             f'<a class="download csv" href="{h(f"/api/v1/stats?{api_q}&format=csv")}" download="{stem}.csv">CSV</a> '
             f'<a class="download json" href="{h(f"/api/v1/stats?{api_q}&format=json")}" download="{stem}.json">'
             f"JSON</a>")
    if page.may(PUBLIC_SUMMARY_ROLES):
        body += f' · {h(page.t("stats.public"))}: ' + " ".join(
            f'<a class="download public-summary" href="/api/v1/stats/public/{y}" '
            f'download="custody-public-summary-{y}.json">{y}</a>' for y in span.years)
    body += "</p>"
    if scope.everywhere:
        body += f'<p class="scope">{h(page.t("stats.scope_all"))}</p>'
    else:
        unit_names = names if dimension == "unit" else await _key_names(page, "unit")
        body += f'<p class="scope">{h(page.t("stats.scope", root=unit_names.get(scope.root or "", scope.root)))}</p>'

    # (1) Recordings and hours per month: the report's totals (a recording counts once in a month).
    totals = sv.by_month(report["totals"], months)
    recs = tuple(float(tot["recordings"]) if tot else 0.0 for tot in totals)
    hours = tuple(float(tot["hours"]) if tot else 0.0 for tot in totals)
    empty = not any(tot for tot in totals)
    recs_chart = chart("chart-recordings", page.t("stats.recordings_title"), page.t(
        "stats.recordings_desc", first=first, last=last), month_label, page.t("stats.recordings"))
    hours_chart = chart("chart-hours", page.t("stats.hours_title"), page.t(
        "stats.hours_desc", first=first, last=last), month_label, page.t("stats.hours"))
    if empty:  # one "no data" says it for both
        figure = charts.empty_chart(recs_chart)
    else:
        figure = (charts.bar_chart(recs_chart, months, [charts.Series(page.t("stats.recordings"), recs)], integer=True)
                  + charts.bar_chart(hours_chart, months, [charts.Series(page.t("stats.hours"), hours)]))
    body += _stat_section("stats-volume", page.t("stats.volume"), figure, [
        month_label, page.t("stats.recordings"), page.t("stats.hours")], [] if empty else [
        [fig(m), fig(tot["recordings"] if tot else 0), fig(tot["hours"] if tot else 0.0)]
        for m, tot in zip(months, totals, strict=True)])

    # (2) Share of the steps requiring recording that have footage, per key, against 100 %.
    keyed = sv.per_key(rows)
    if dimension == "device":
        body += _stat_section("stats-coverage", page.t("stats.coverage"), "",
                              note=h(page.t("stats.coverage_devices")))
    else:
        stepped = [k for k in keyed if k.steps_required]
        c = chart("chart-coverage", page.t("stats.coverage"), page.t("stats.coverage_desc", dimension=dim_label,
                  first=first, last=last), dim_label, page.t("stats.share"), charts.percent)
        figure = charts.bar_chart(c, [name(k.key) for k in stepped],
                                  [charts.Series(page.t("stats.share"), tuple(k.covered_share for k in stepped))],
                                  y_max=1.0, reference=1.0, reference_label=page.t("stats.reference"))
        body += _stat_section("stats-coverage", page.t("stats.coverage"), figure, [
            dim_label, page.t("stats.steps_required"), page.t("stats.steps_covered"), page.t("stats.share")], [
            [key_cell(k.key), fig(k.steps_required), fig(k.steps_covered),
             fig(k.covered_share, charts.percent(k.covered_share or 0))] for k in stepped])

    # (3) Findings by code per key, stacked.
    if dimension == "officer":
        body += _stat_section("stats-findings", page.t("stats.findings"), "",
                              note=h(page.t("stats.findings_officers")))
    else:
        codes = sv.finding_codes(rows)
        found = [k for k in keyed if k.findings]
        c = chart("chart-findings", page.t("stats.findings"), page.t("stats.findings_desc", dimension=dim_label,
                  first=first, last=last), dim_label, page.t("stats.findings_axis"))
        figure = charts.bar_chart(c, [name(k.key) for k in found], [
            charts.Series(code, tuple(float(k.findings.get(code, 0)) for k in found)) for code in codes],
            stacked=True, integer=True)
        body += _stat_section("stats-findings", page.t("stats.findings"), figure, [
            dim_label, *codes, page.t("stats.total")], [
            [key_cell(k.key), *(fig(k.findings.get(code, 0)) for code in codes), fig(sum(k.findings.values()))]
            for k in found])

    # (4) Upload delay percentiles per month (over all the month's uploads, not an average of rows).
    delays = [tot["upload_delay_ms"] if tot else None for tot in totals]
    c = chart("chart-delay", page.t("stats.delay"), page.t("stats.delay_desc", first=first, last=last), month_label,
              page.t("stats.delay_axis"), charts.duration_ms)
    figure = charts.line_chart(c, months, [charts.Series(p, tuple(
        None if d is None or d[p] is None else float(d[p]) for d in delays)) for p in PERCENTILES])
    body += _stat_section("stats-delay", page.t("stats.delay"), figure, [
        month_label, *PERCENTILES, page.t("stats.uploads")], [
        [fig(m), *(fig(d[p], charts.duration_ms(d[p])) for p in PERCENTILES), fig(d["count"])]
        for m, d in zip(months, delays, strict=True) if d and d["count"]])

    # (5) Device uptime per device and month.
    if dimension != "device":
        link = h("/ui/stats?" + urlencode({"dimension": "device", "from": first, "to": last}))
        body += _stat_section("stats-uptime", page.t("stats.uptime"), "", note=(
            f'{h(page.t("stats.uptime_devices"))} <a href="{link}">{h(page.t("stats.dim.device"))}</a>'))
    else:
        keys, grid = sv.uptime_grid(rows, months)
        c = chart("chart-uptime", page.t("stats.uptime"), page.t("stats.uptime_desc", first=first, last=last),
                  month_label, page.t("stats.dim.device"), charts.percent)
        body += _stat_section("stats-uptime", page.t("stats.uptime"), charts.heatmap(c, keys, months, grid), [
            page.t("stats.dim.device"), *months], [
            [key_cell(k), *(fig(v, charts.percent(v)) if v is not None else fig(None) for v in line)]
            for k, line in zip(keys, grid, strict=True)])

    # Every row of the report, as the CSV has them.
    all_rows = [[key_cell(r["key"]), fig(r["month"]), fig(r["recordings"]), fig(r["hours"]), fig(r["steps_required"]),
                 fig(r["steps_covered"]), fig(r["covered_share"], None if r["covered_share"] is None else
                                              charts.percent(r["covered_share"])),
                 fig(";".join(f"{k}={v}" for k, v in r["findings"].items()) or None),
                 *(fig(r["upload_delay_ms"][p]) for p in PERCENTILES),
                 fig(r["uptime_share"], None if r["uptime_share"] is None else charts.percent(r["uptime_share"]))]
                for r in rows]
    body += (f'<details class="stats-all"><summary>{h(page.t("stats.rows"))}</summary>' + table(
        [dim_label, month_label, page.t("stats.recordings"), page.t("stats.hours"), page.t("stats.steps_required"),
         page.t("stats.steps_covered"), page.t("stats.share"), page.t("stats.findings_axis"), "p50 (ms)", "p90 (ms)",
         "p99 (ms)", page.t("stats.uptime_axis")], all_rows, cls="stats-rows", empty=page.t("stats.no_data")) +
        "</details>")
    return layout(page, page.t("stats.title"), body)


# -- the table and its wrapper ------------------------------------------------------------------------------

ALL_USERS = frozenset(r for r in Role if r is not Role.DEVICE)
PAGES: tuple[tuple[str, PageHandler, frozenset[Role]], ...] = (
    ("/ui/", home, ALL_USERS),
    ("/ui/fleet", fleet, FLEET_ROLES),
    ("/ui/devices/{device_id:[a-z2-7]{24}}", device, FLEET_ROLES),
    ("/ui/devices/{device_id:[a-z2-7]{24}}/live", live, LIVE_ROLES),
    ("/ui/devices/{device_id:[a-z2-7]{24}}/recordings/{recording_id:[A-Za-z0-9][A-Za-z0-9._:-]{0,63}}",
     playback_page, FOOTAGE_ROLES),
    ("/ui/cases", cases, CASE_ROLES),
    ("/ui/cases/{case_id:[0-9]{1,12}}", case, CASE_ROLES),
    ("/ui/audit", audit, AUDIT_ROLES),
    ("/ui/audit.csv", audit_csv, AUDIT_ROLES),
    ("/ui/access", access, ACCESS_ROLES),
    ("/ui/stats", stats, STATS_ROLES),
)
#: The navigation: (path, message key, roles that see it).
NAV: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("/ui/fleet", "nav.fleet", FLEET_ROLES),
    ("/ui/cases", "nav.cases", CASE_ROLES),
    ("/ui/audit", "nav.audit", AUDIT_ROLES),
    ("/ui/access", "nav.access", ACCESS_ROLES),
    ("/ui/stats", "nav.stats", STATS_ROLES),
)


def error_page(page: Page, message: str, status: int, code: str) -> web.Response:
    """An error inside the frame, with the HTTP status and the stable code the API would answer."""
    return layout(page, page.t("error.title"), f'<p class="error" data-code="{h(code)}">{h(message)} '
                  f'<code class="error-code">{h(code)}</code></p>', status=status)


def wrap_page(handler: PageHandler, roles: frozenset[Role], services: Services
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Sign-in check (else to the sign-in form), role check (else 403), errors as pages with their status."""

    async def run(request: web.Request) -> web.StreamResponse:
        lang = _lang(request, services)
        token = sess.session_token(request)
        if token is None:
            raise web.HTTPSeeOther(f"/ui/signin?next={quote(request.path_qs)}")
        try:
            principal = await services.authenticator.bearer(token)
        except Unauthorized:
            response = web.HTTPSeeOther(f"/ui/signin?next={quote(request.path_qs)}")
            sess.clear_session(response, secure=_secure(request))
            raise response from None
        page = Page(request, services, principal, lang, sess.csrf_token(services, token))
        if principal.role not in roles:
            return error_page(page, page.t("error.forbidden"), 403, "forbidden_role")
        try:
            return await handler(page)
        except NotFound as exc:
            return error_page(page, page.t("error.not_found"), exc.status, exc.code)
        except ServerError as exc:
            return error_page(page, exc.message, exc.status, exc.code)

    return run


def add_web_routes(app: web.Application, services: Services) -> None:
    """Register the pages, sign-in and the static files."""
    app[PUBLIC_HTTPS] = (services.config.http.public_url or "").startswith("https://")

    def bind(fn: Callable[[web.Request, Services], Awaitable[web.StreamResponse]]
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            return await fn(request, services)
        return run

    app.router.add_get("/ui", _to_home)
    app.router.add_get("/ui/signin", bind(signin_form))
    app.router.add_post("/ui/signin", bind(signin))
    app.router.add_post("/ui/signout", bind(signout))
    app.router.add_get("/ui/lang/{lang}", bind(set_language))
    app.router.add_static("/ui/static/", STATIC, append_version=False)
    for path, handler, roles in PAGES:
        app.router.add_get(path, wrap_page(handler, roles, services))


async def _to_home(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/ui/")
