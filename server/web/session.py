"""Signing in to the dashboard: the API token in an HttpOnly cookie, and CSRF protection.

A person signs in by pasting their API token; the server checks it and sets it as the session
cookie (``HttpOnly``: page scripts cannot read it; ``SameSite=Strict``: other sites' pages never
send it; ``Secure`` behind TLS). Every request authenticates the cookie exactly like a bearer
token, so revoking the token or disabling the user ends the session at once, and several server
processes need no shared session store.

CSRF: a state-changing request carrying the cookie must also carry the session's CSRF token (a
form field or the ``X-CSRF-Token`` header of the page's scripts). The token is an HMAC of the
session under a per-server key, so it cannot be computed without the server's secret, and it is
bound to one session. SameSite=Strict already stops cross-site sends; the token is the second
wall, for browsers or proxies that do not honour SameSite.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from server.auth import Principal
from server.errors import Forbidden
from server.services import Services

COOKIE = "custody_session"
LANG_COOKIE = "custody_lang"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = ("GET", "HEAD")


def session_token(request: web.Request) -> str | None:
    """The API token in the session cookie, if any."""
    value = request.cookies.get(COOKIE)
    return value if value else None


def csrf_token(services: Services, token: str) -> str:
    """The CSRF token of the session holding ``token``."""
    key = hmac.new(services.datadir.upload_secret_bytes(), b"custody/csrf/v1", hashlib.sha256).digest()
    return hmac.new(key, hashlib.sha256(token.encode()).digest(), hashlib.sha256).hexdigest()[:40]


def check_csrf(services: Services, token: str, presented: str | None) -> None:
    """Forbidden unless ``presented`` is this session's CSRF token."""
    if not presented or not hmac.compare_digest(presented, csrf_token(services, token)):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again", code="csrf")


async def cookie_principal(request: web.Request, services: Services) -> Principal | None:
    """The principal of the session cookie (None without one); unsafe methods need the CSRF header."""
    token = session_token(request)
    if token is None:
        return None
    if request.method not in SAFE_METHODS:
        check_csrf(services, token, request.headers.get(CSRF_HEADER))
    return await services.authenticator.bearer(token)


def set_session(response: web.StreamResponse, token: str, *, secure: bool, max_age_s: int) -> None:
    """Start a session."""
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=secure, path="/",
                        max_age=max_age_s)


def clear_session(response: web.StreamResponse, *, secure: bool) -> None:
    """End a session."""
    response.del_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="Strict")
