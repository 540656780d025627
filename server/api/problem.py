"""Errors as RFC 9457 problem documents, and the middleware that makes every error one.

Every error answer, including aiohttp's own 404, 405 and 413, is ``application/problem+json``
with a stable ``code`` member: clients branch on the code, people read ``detail``.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web

from protocol.errors import CustodyError
from server.errors import status_for
from server.storage.base import StoreUnavailable

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:custody:problem:"

_AIOHTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


def problem(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    """A problem response."""
    body = {"type": PROBLEM_BASE + code, "title": HTTPStatus(status).phrase, "status": status, "code": code,
            "detail": detail, **extra}
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                        content_type=PROBLEM_TYPE, charset="utf-8")


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn every exception into a problem document; the server keeps serving whatever a request sends."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except CustodyError as exc:
        status = status_for(exc)
        extra = getattr(exc, "extra", {})
        if status >= 500:
            log.exception("error serving %s %s", request.method, request.path)
        return problem(status, exc.code, exc.message, **extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, "http_error")
        resp = problem(exc.status, code, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except StoreUnavailable as exc:
        log.error("footage store unavailable: %s", exc)
        return problem(503, "store_unavailable", "the footage store is unavailable; retry later")
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return problem(500, "internal_error", "internal server error (logged)")
