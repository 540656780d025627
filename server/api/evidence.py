"""Handlers of the transparency log, witnesses, the access log, footage reads and exports.

Thin like every handler: decode, call one service, encode. Their rows are in the one route table
(server/api/routes.py); they live here so that table's module stays about routing. Every handler
that serves footage opens an access event first (:meth:`server.services.access.AccessService.open`)
and reads the store only with the grant it returns; such routes are marked ``footage=True``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import tempfile
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from aiohttp import web

from server.db.schema import entries
from server.errors import BadRequest, Conflict, NotFound
from server.services.access import Reader, check_reason
from server.services.export import ExportRequest, RecordingRef

if TYPE_CHECKING:
    from server.api.routes import Ctx

NOTE_TYPE = "text/plain; charset=utf-8"
_RECORDINGS_RE = re.compile(r"[a-z2-7]{24}/[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
                        content_type="application/json", charset="utf-8")


def _reader(ctx: Ctx) -> Reader:
    assert ctx.principal is not None
    return Reader.of(ctx.principal)


# -- the log (public) --------------------------------------------------------------------------------


async def log_checkpoint(ctx: Ctx) -> web.StreamResponse:
    """The latest checkpoint (or one by size), with its cosignatures, as a C2SP signed note."""
    note = await ctx.services.log.checkpoint(ctx.params.get("size"))
    return web.Response(body=note, headers={"Content-Type": NOTE_TYPE})


async def log_key(ctx: Ctx) -> web.StreamResponse:
    """The log's origin and verifier key (what witnesses and verifiers pin)."""
    return _ok(ctx.services.log.key_info())


async def log_inclusion(ctx: Ctx) -> web.StreamResponse:
    """Inclusion proof by leaf index or leaf hash."""
    p = ctx.params
    if ("index" in p) == ("hash" in p):
        raise BadRequest("give exactly one of index and hash", code="missing_field")
    return _ok(await ctx.services.log.inclusion(p["size"], index=p.get("index"), leaf_hash=p.get("hash")))


async def log_consistency(ctx: Ctx) -> web.StreamResponse:
    """Consistency proof between two tree sizes."""
    return _ok(await ctx.services.log.consistency(ctx.params["from"], ctx.params["to"]))


async def log_leaves(ctx: Ctx) -> web.StreamResponse:
    """Leaves of the log (hashes and ids only: public)."""
    start = ctx.params.get("start", 0)
    return _ok({"leaves": await ctx.services.log.leaves(start, ctx.params.get("end", start + 100))})


async def log_cosign(ctx: Ctx) -> web.StreamResponse:
    """A witness returns a checkpoint with its cosignature (authenticated by that signature)."""
    return _ok(await ctx.services.log.add_cosignatures(ctx.raw))


async def log_fork(ctx: Ctx) -> web.StreamResponse:
    """Report two checkpoints of this log that cannot both be its history (authenticated by the log's own key)."""
    b = ctx.body
    try:
        first, second = (base64.b64decode(b[k], validate=True).decode("utf-8") for k in ("first", "second"))
    except (binascii.Error, ValueError):
        raise BadRequest("first and second must be base64 of checkpoint notes", code="bad_value") from None
    return _ok(await ctx.services.log.report_fork(first, second, b.get("reporter") or "anonymous"))


async def witnesses_list(ctx: Ctx) -> web.StreamResponse:
    """Registered witnesses."""
    return _ok({"witnesses": await ctx.services.log.witnesses()})


async def witnesses_add(ctx: Ctx) -> web.StreamResponse:
    """Register a witness by its cosignature/v1 verifier key."""
    return _ok(await ctx.services.log.add_witness(ctx.body["vkey"], ctx.actor), 201)


# -- the access log -------------------------------------------------------------------------------------


async def access_log(ctx: Ctx) -> web.StreamResponse:
    """Who read which footage, when and why."""
    p = ctx.params
    return _ok({"events": await ctx.services.access.query(
        actor=p.get("actor"), device_id=p.get("device_id"), case_id=p.get("case_id"), kind=p.get("kind"),
        from_ms=p.get("from_ms"), to_ms=p.get("to_ms"), after_id=p.get("after_id", 0), limit=p.get("limit", 100))})


# -- footage ----------------------------------------------------------------------------------------------


async def chunk_footage(ctx: Ctx) -> web.StreamResponse:
    """One chunk's original bytes (a download), after the access is logged."""
    s = ctx.services
    dev, seq = ctx.params["device_id"], ctx.params["seq"]
    reason = check_reason(ctx.params.get("reason"))
    async with s.db.read() as conn:
        row = (await conn.execute(sa.select(entries.c.kind, entries.c.state, entries.c.object_key,
                                            entries.c.recording_id).where(
            entries.c.device_id == dev, entries.c.seq == seq))).first()
    if row is None or row.kind != "chunk":
        raise NotFound(f"no chunk {seq} of device {dev}", code="unknown_entry")
    if row.state != "verified":
        raise Conflict(f"chunk {seq} of device {dev} is not verified", code="not_verified")
    grant = await s.access.open(_reader(ctx), "download", [row.object_key], reason, device_id=dev,
                                recording_id=row.recording_id)
    stored = await s.store.get(row.object_key, grant)
    if stored is None:
        raise NotFound(f"the bytes of chunk {seq} are missing from the store (a scrub finding)", code="missing")
    return web.Response(body=stored.data, content_type="video/mp4", headers={
        "Custody-Access-Id": str(grant.access_id),
        "Content-Disposition": f'attachment; filename="{dev}-{seq:012d}.mp4"'})


async def recording_footage(ctx: Ctx) -> web.StreamResponse:
    """A recording as one MP4, remuxed without re-encoding; ``disposition=inline`` is a view."""
    s = ctx.services
    dev, rec = ctx.params["device_id"], ctx.params["recording_id"]
    reason = check_reason(ctx.params.get("reason"))
    inline = ctx.params.get("disposition", "inline") == "inline"
    async with s.db.read() as conn:
        rows = (await conn.execute(sa.select(entries.c.seq, entries.c.object_key).where(
            entries.c.device_id == dev, entries.c.recording_id == rec, entries.c.kind == "chunk",
            entries.c.state == "verified").order_by(entries.c.seq))).all()
    if not rows:
        raise NotFound(f"recording {rec} of device {dev} has no verified chunk", code="unknown_recording")
    keys = [r.object_key for r in rows]
    grant = await s.access.open(_reader(ctx), "view" if inline else "download", keys, reason, device_id=dev,
                                recording_id=rec)
    chunks = []
    for key in keys:
        stored = await s.store.get(key, grant)
        if stored is None:
            raise NotFound(f"the bytes of {key} are missing from the store (a scrub finding)", code="missing")
        chunks.append(stored.data)
    from server.remux import remux

    data = await asyncio.to_thread(remux, chunks)
    return web.Response(body=data, content_type="video/mp4", headers={
        "Custody-Access-Id": str(grant.access_id),
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{dev}-{rec}.mp4"'})


async def export_package(ctx: Ctx) -> web.StreamResponse:
    """Build a case export package and send it (application/zip, with its length for progress bars)."""
    b = ctx.body
    refs = []
    for item in filter(None, (b.get("recordings") or "").split(",")):
        if not _RECORDINGS_RE.fullmatch(item):
            raise BadRequest(f"recording {item!r} is not DEVICE/RECORDING", code="bad_value")
        dev, rec = item.split("/", 1)
        refs.append(RecordingRef(dev, rec))
    reason = check_reason(b.get("reason"))
    if b.get("case_id") is not None:
        # A case: its linked recordings, its links and its audit report (plus any recordings named).
        req = await ctx.services.exports.case_request(b["case_id"], reason, refs)
        req.device_id, req.from_seq, req.to_seq = b.get("device_id"), b.get("from_seq"), b.get("to_seq")
    else:
        req = ExportRequest(reason=reason, recordings=refs, device_id=b.get("device_id"),
                            from_seq=b.get("from_seq"), to_seq=b.get("to_seq"))
    # The route guard saw the body's case and device; a case brings its linked recordings, each checked here.
    for ref in req.recordings:
        await ctx.services.units.check(ctx.principal, "device", ref.device_id, "POST /api/v1/exports")
    if req.device_id is None and (req.from_seq is not None or req.to_seq is not None):
        raise BadRequest("from_seq and to_seq need device_id", code="missing_field")
    with tempfile.TemporaryFile() as tmp:
        summary = await ctx.services.exports.build(_reader(ctx), req, tmp)
        size = tmp.tell()
        tmp.seek(0)
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip", "Content-Length": str(size),
            "Custody-Access-Id": str(summary["access_id"]), "Custody-Export-Id": summary["export_id"],
            "Content-Disposition": f'attachment; filename="{summary["export_id"]}.zip"'})
        await response.prepare(ctx.request)
        while True:
            block = await asyncio.to_thread(tmp.read, 1 << 20)
            if not block:
                break
            await response.write(block)
        await response.write_eof()
        return response
