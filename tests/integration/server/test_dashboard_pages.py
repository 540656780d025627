"""The dashboard without a browser: sign-in, cookie flags, CSRF, what each role's pages show, CSV, headers."""

from __future__ import annotations

import re

import aiohttp
import pytest

from custody.clock import FakeClock
from server.app import RunningServer
from server.web.session import csrf_token
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration


async def sign_in(server: RunningServer, token: str) -> aiohttp.ClientSession:
    """A browser-like session signed in through the form (cookies kept for 127.0.0.1)."""
    s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with s.get(server.url + "/ui/signin") as r:
        nonce = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert nonce is not None
    async with s.post(server.url + "/ui/signin", data={"csrf": nonce.group(1), "token": token, "next": "/ui/"},
                      allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        cookie = r.cookies["custody_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    return s


async def page(s: aiohttp.ClientSession, server: RunningServer, path: str, status: int = 200) -> str:
    async with s.get(server.url + path) as r:
        assert r.status == status
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        return await r.text()


async def test_sign_in_needs_the_form_nonce_and_a_valid_token(server: RunningServer, admin: Api) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(server.url + "/ui/fleet", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/ui/signin")
        async with s.post(server.url + "/ui/signin", data={"csrf": "x", "token": admin.token or ""},
                          allow_redirects=False) as r:
            assert r.status == 403  # no pre-session cookie: a login CSRF attempt
    s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with s:
        async with s.get(server.url + "/ui/signin") as r:
            nonce = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert nonce is not None
        async with s.post(server.url + "/ui/signin", data={"csrf": nonce.group(1), "token": "cst_nope"},
                          headers={"Accept-Language": "en"}) as r:
            assert r.status == 401
            assert "not accepted" in await r.text()


async def test_roles_decide_what_the_pages_show(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    sup = await admin.user("sup", "supervisor")
    aud = await admin.user("aud", "auditor")
    off = await admin.user("off", "officer")
    ch = await admin.user("ch", "case_handler")
    for api, sees_live, sees_fleet in ((sup, True, True), (aud, False, True), (ch, False, False)):
        assert api.token is not None
        s = await sign_in(server, api.token)
        async with s:
            fleet = await page(s, server, "/ui/fleet", 200 if sees_fleet else 403)
            if sees_fleet:
                assert device.device_id in fleet and 'href="/ui/audit"' in fleet
                dev = await page(s, server, f"/ui/devices/{device.device_id}")
                assert ("live-link" in dev) is sees_live
                live = await page(s, server, f"/ui/devices/{device.device_id}/live", 200 if sees_live else 403)
                assert ('id="live-video"' in live) is sees_live
            else:
                assert device.device_id not in fleet and 'href="/ui/fleet"' not in fleet
                cases = await page(s, server, "/ui/cases")
                assert 'class="empty"' in cases  # the cases service answers: no case yet
    assert off.token is not None
    s = await sign_in(server, off.token)
    async with s, s.get(server.url + "/ui/", allow_redirects=False) as r:
        assert r.status == 200 and 'href="/ui/fleet"' not in await r.text()


async def test_cookie_calls_to_the_api_need_the_csrf_header(server: RunningServer, admin: Api,
                                                            clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    assert admin.token is not None
    s = await sign_in(server, admin.token)
    async with s:
        path = f"{server.url}/api/v1/devices/{device.device_id}/live"
        async with s.get(path) as r:
            assert r.status == 200  # reads need no CSRF token
        async with s.post(path) as r:
            assert r.status == 403 and (await r.json(content_type=None))["code"] == "csrf"
        async with s.post(path, headers={"X-CSRF-Token": "0" * 40}) as r:
            assert r.status == 403
        async with s.post(path, headers={"X-CSRF-Token": csrf_token(server.services, admin.token)}) as r:
            assert r.status == 201  # past authentication: the live_view_start command is issued
        async with s.post(server.url + "/ui/signout", data={"csrf": "wrong"}, allow_redirects=False) as r:
            assert r.status == 403


async def test_audit_page_filters_and_csv(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    device.seq += 3  # entries 1-3 never arrive: a chain.gap finding
    await device.announce(device.event("stop"))
    assert admin.token is not None
    s = await sign_in(server, admin.token)
    async with s:
        html = await page(s, server, f"/ui/audit?device_id={device.device_id}&open=1")
        assert "chain.gap" in html
        async with s.get(server.url + f"/ui/audit.csv?device_id={device.device_id}") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
            text = (await r.read()).decode("utf-8-sig")
        assert text.splitlines()[0].startswith("id,code,severity")
        assert "chain.gap" in text
