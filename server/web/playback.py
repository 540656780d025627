"""Playing a recording in the browser: one access event, then its chunks in order.

``POST .../playback`` with a reason opens ONE access event (kind ``view``) for exactly the
recording's verified chunks, before any byte is served, and answers the chunk list with a
playback ticket. The ticket (an HMAC over the reader, the access id, the recording and an
expiry) lets that reader, and nobody else, fetch those chunks one by one for a while: the
browser's ``<video>`` plays chunk after chunk, each a standalone MP4. Every byte served is thus
covered by an access event naming who, what, when and why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from aiohttp import web

from server.db.schema import entries
from server.errors import Forbidden, NotFound
from server.seams import Reader

if TYPE_CHECKING:
    from server.api.routes import Ctx
    from server.services import Services

#: How long a playback ticket lets its reader fetch chunks.
TICKET_TTL_MS = 2 * 3600 * 1000


def _key(services: Services) -> bytes:
    return hmac.new(services.datadir.upload_secret_bytes(), b"custody/playback/v1", hashlib.sha256).digest()


def make_ticket(services: Services, actor: str, access_id: int, device_id: str, recording_id: str,
                expires_ms: int) -> str:
    """``ACCESS.EXPIRES.MAC``: binds the access event to one reader, one recording, a deadline."""
    msg = f"{actor}\n{access_id}\n{device_id}\n{recording_id}\n{expires_ms}".encode()
    mac = hmac.new(_key(services), msg, hashlib.sha256).hexdigest()[:32]
    return f"{access_id}.{expires_ms}.{mac}"


def check_ticket(services: Services, ticket: str, actor: str, device_id: str, recording_id: str) -> int:
    """The access id of a valid ticket; Forbidden otherwise."""
    try:
        access, expires, mac = ticket.split(".")
        access_id, expires_ms = int(access), int(expires)
    except ValueError:
        raise Forbidden("malformed playback ticket", code="bad_ticket") from None
    want = make_ticket(services, actor, access_id, device_id, recording_id, expires_ms).rsplit(".", 1)[1]
    if not hmac.compare_digest(mac, want):
        raise Forbidden("this playback ticket is not yours or not for this recording", code="bad_ticket")
    if expires_ms < services.clock.now_ms():
        raise Forbidden("playback ticket expired: start the playback again", code="ticket_expired")
    return access_id


async def _chunks(services: Services, device_id: str, recording_id: str) -> list[Any]:
    async with services.db.read() as conn:
        return list((await conn.execute(sa.select(
            entries.c.seq, entries.c.object_key, entries.c.time_ms, entries.c.duration_ms).where(
            entries.c.device_id == device_id, entries.c.recording_id == recording_id, entries.c.kind == "chunk",
            entries.c.state == "verified").order_by(entries.c.seq))).all())


async def start(ctx: Ctx) -> web.StreamResponse:
    """Open the access event for a recording's playback; answer the chunks and the ticket."""
    assert ctx.principal is not None
    s, dev, rec = ctx.services, ctx.params["device_id"], ctx.params["recording_id"]
    rows = await _chunks(s, dev, rec)
    if not rows:
        raise NotFound(f"recording {rec} of device {dev} has no verified chunk", code="unknown_recording")
    grant = await s.seams.access.open(Reader.of(ctx.principal), "view", [r.object_key for r in rows],
                                      ctx.body.get("reason"), device_id=dev, recording_id=rec)
    ticket = make_ticket(s, ctx.principal.actor, grant.access_id, dev, rec, s.clock.now_ms() + TICKET_TTL_MS)
    base = f"/api/v1/devices/{dev}/recordings/{rec}/playback"
    body = {"access_id": grant.access_id, "ticket": ticket, "chunks": [
        {"seq": r.seq, "start_ms": r.time_ms, "duration_ms": r.duration_ms, "url": f"{base}/{r.seq}?ticket={ticket}"}
        for r in rows]}
    return web.Response(status=201, body=json.dumps(body).encode(), content_type="application/json")


async def chunk(ctx: Ctx) -> web.StreamResponse:
    """One chunk of a playback whose access event is on record."""
    assert ctx.principal is not None
    s, dev, rec, seq = ctx.services, ctx.params["device_id"], ctx.params["recording_id"], ctx.params["seq"]
    access_id = check_ticket(s, ctx.params["ticket"], ctx.principal.actor, dev, rec)
    row = next((r for r in await _chunks(s, dev, rec) if r.seq == seq), None)
    if row is None:
        raise NotFound(f"no verified chunk {seq} in recording {rec}", code="unknown_entry")
    # Seam: tamper's stores read only with an AccessGrant; this reads under the access event above.
    stored = await s.store.get(row.object_key)
    if stored is None:
        raise NotFound(f"the bytes of chunk {seq} are missing from the store", code="missing")
    return web.Response(body=stored.data, content_type="video/mp4", headers={
        "Custody-Access-Id": str(access_id), "Cache-Control": "private, no-store"})
