"""Handlers of the live-view routes (their rows are in the one route table, server/api/routes.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from server.api.routes import Ctx


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
                        content_type="application/json", charset="utf-8")


async def request(ctx: Ctx) -> web.StreamResponse:
    """Ask for a device's live view."""
    assert ctx.principal is not None
    return _ok(await ctx.services.live.request(ctx.params["device_id"], ctx.principal), 201)


async def sessions(ctx: Ctx) -> web.StreamResponse:
    """The device's live sessions."""
    await ctx.services.devices.get(ctx.params["device_id"])
    return _ok({"sessions": ctx.services.live.list_sessions(ctx.params["device_id"])})


async def viewer_add(ctx: Ctx) -> web.StreamResponse:
    """A viewer's WebRTC offer."""
    assert ctx.principal is not None
    p = ctx.params
    return _ok(await ctx.services.live.add_viewer(p["device_id"], p["session_id"], ctx.principal, ctx.body), 201)


async def viewer_leave(ctx: Ctx) -> web.StreamResponse:
    """A viewer leaves."""
    assert ctx.principal is not None
    p = ctx.params
    return _ok(await ctx.services.live.remove_viewer(p["device_id"], p["session_id"], p["viewer_id"], ctx.principal))


async def stop(ctx: Ctx) -> web.StreamResponse:
    """End a session."""
    return _ok(await ctx.services.live.stop(ctx.params["device_id"], ctx.params["session_id"]))


async def views(ctx: Ctx) -> web.StreamResponse:
    """Live views with start and end."""
    return _ok({"views": await ctx.services.live.views(device_id=ctx.params.get("device_id"),
                                                       limit=ctx.params.get("limit", 200))})


async def device_offer(ctx: Ctx) -> web.StreamResponse:
    """The device's offer."""
    assert ctx.principal is not None
    return _ok(await ctx.services.live.device_offer(ctx.principal.name, ctx.params["session_id"], ctx.body))
