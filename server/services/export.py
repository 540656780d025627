"""Case export: a self-contained package a court verifies offline with the server's public key.

The machinery takes a set of recordings plus metadata (:class:`ExportRequest`) and writes the
ZIP whose layout protocol/package.py defines. The export is an access like any other: its access
event (who, why, which objects) is logged first, then a fresh checkpoint is signed so that the
package proves every entry and the export's own access against one tree head.

A case export (:meth:`ExportService.case_request`) takes the case's current links (from the cases
service: every recording linked to one of its steps, not unlinked) and the case's audit report;
a request may also name recordings directly (device and sequence range, or device and recording
ids), e.g. footage not linked to any case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import html
import json
import secrets
import zipfile
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import sqlalchemy as sa

from custody.clock import Clock
from protocol.canonical import canonical_bytes
from protocol.checkpoint import SignedNote
from protocol.envelope import Envelope
from protocol.messages import Receipt
from protocol.package import (
    ACCESS_LOG,
    AUDIT,
    CHECKPOINT,
    INDEX,
    INDEX_HTML,
    README,
    SERVER_KEYS,
    WITNESSES,
    ExportIndex,
    IndexDevice,
    IndexFile,
    IndexLink,
    IndexRecording,
    certificate_path,
    checkpoint_path,
    chunk_path,
    consistency_path,
    entry_path,
    proof_path,
    receipt_path,
    recording_path,
    rotation_path,
)
from server.config import LogConfig
from server.db.database import Database
from server.db.schema import case_steps, cases, device_keys, devices, entries, findings, step_links
from server.errors import BadRequest, Conflict, NotFound
from server.keyring import ServerKeyring
from server.log.service import LogService
from server.services.access import AccessService, Reader
from server.services.findings import finding_json
from server.storage.base import FootageStore

if TYPE_CHECKING:
    from server.services.audit import AuditService
    from server.services.cases import CasesService

MAX_RECORDINGS = 1000


@dataclass(frozen=True, slots=True)
class RecordingRef:
    """One recording to export."""

    device_id: str
    recording_id: str


@dataclass(slots=True)
class ExportRequest:
    """What to export: recordings (by id, or a device's sequence range) and the case's metadata."""

    reason: str
    recordings: list[RecordingRef] = field(default_factory=list)
    device_id: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    case_id: str | None = None
    links: list[IndexLink] = field(default_factory=list)
    audit: dict[str, Any] | None = None  # the case's audit report, when the case service provides one

    def describe(self) -> str:
        """The selection in words, for the index."""
        parts = []
        if self.case_id:
            parts.append(f"case {self.case_id}")
        if self.device_id is not None:
            parts.append(f"device {self.device_id} seq {self.from_seq}..{self.to_seq}")
        if self.recordings:
            parts.append(f"{len(self.recordings)} recording(s) named")
        return "; ".join(parts) or "nothing"


class ExportService:
    """Builds export packages."""

    def __init__(self, db: Database, clock: Clock, keyring: ServerKeyring, store: FootageStore, log: LogService,
                 access: AccessService, config: LogConfig, *, cases: CasesService | None = None,
                 audit: AuditService | None = None) -> None:
        self.cases = cases
        self.audit = audit
        self.db = db
        self.clock = clock
        self.keyring = keyring
        self.store = store
        self.log = log
        self.access = access
        self.config = config

    async def case_request(self, case_id: int, reason: str, recordings: list[RecordingRef]) -> ExportRequest:
        """An export of a case: its linked recordings (plus ``recordings``), its links and its audit report."""
        if self.cases is None or self.audit is None:
            raise BadRequest("this server has no cases service", code="cases_unavailable")
        from server.services.audit import AuditFilters

        await self.cases.sync_auto_links()  # links the devices asked for, as the audit sees them
        async with self.db.read() as conn:
            if (await conn.execute(sa.select(cases.c.id).where(cases.c.id == case_id))).first() is None:
                raise NotFound(f"no case {case_id}", code="unknown_case")
            rows = (await conn.execute(sa.select(step_links.c.step_id, step_links.c.device_id,
                                                 step_links.c.recording_id).join(
                case_steps, case_steps.c.id == step_links.c.step_id).where(
                case_steps.c.case_id == case_id, step_links.c.removed_ms.is_(None)).order_by(
                step_links.c.id))).all()
        links = list(dict.fromkeys(IndexLink(str(case_id), r.step_id, r.device_id, r.recording_id) for r in rows))
        report = await self.audit.run(AuditFilters(case_id=case_id))
        return ExportRequest(reason=reason, recordings=recordings, case_id=str(case_id), links=links, audit=report)

    async def _resolve(self, req: ExportRequest) -> dict[str, set[str]]:
        """Recording ids per device."""
        wanted: dict[str, set[str]] = {}
        async with self.db.read() as conn:
            if req.device_id is not None:
                lo = req.from_seq or 0
                hi = req.to_seq if req.to_seq is not None else 2**62
                ids = (await conn.execute(sa.select(entries.c.recording_id).where(
                    entries.c.device_id == req.device_id, entries.c.seq >= lo, entries.c.seq <= hi).distinct()
                )).scalars().all()
                wanted.setdefault(req.device_id, set()).update(ids)
            for ref in req.recordings:
                found = (await conn.execute(sa.select(entries.c.seq).where(
                    entries.c.device_id == ref.device_id, entries.c.recording_id == ref.recording_id).limit(1))).first()
                if found is None:
                    raise NotFound(f"no recording {ref.recording_id} of device {ref.device_id}",
                                   code="unknown_recording")
                wanted.setdefault(ref.device_id, set()).add(ref.recording_id)
            for link in req.links:
                wanted.setdefault(link.device_id, set()).add(link.recording_id)
        if not any(wanted.values()):
            raise NotFound("the selection holds no recording", code="empty_export")
        if sum(len(v) for v in wanted.values()) > MAX_RECORDINGS:
            raise BadRequest(f"at most {MAX_RECORDINGS} recordings per export", code="export_too_large")
        return wanted

    async def build(self, reader: Reader, req: ExportRequest, out: IO[bytes]) -> dict[str, Any]:
        """Write the package to ``out``; return a summary. The access is logged before any footage is read."""
        wanted = await self._resolve(req)
        # -- what the package holds: every entry of each device between its first and last exported entry
        rows_by_device: dict[str, list[Any]] = {}
        async with self.db.read() as conn:
            for dev, recs in sorted(wanted.items()):
                bounds = (await conn.execute(sa.select(sa.func.min(entries.c.seq), sa.func.max(entries.c.seq)).where(
                    entries.c.device_id == dev, entries.c.recording_id.in_(sorted(recs))))).one()
                rows_by_device[dev] = list((await conn.execute(sa.select(entries).where(
                    entries.c.device_id == dev, entries.c.seq >= bounds[0], entries.c.seq <= bounds[1]
                ).order_by(entries.c.seq))).all())
            device_rows = {r.id: r for r in (await conn.execute(sa.select(devices).where(
                devices.c.id.in_(sorted(wanted))))).all()}
            rotations = {dev: [bytes(r.rotation) for r in (await conn.execute(sa.select(device_keys.c.rotation).where(
                device_keys.c.device_id == dev, device_keys.c.rotation.is_not(None)).order_by(
                device_keys.c.created_ms, device_keys.c.key_id))).all()] for dev in wanted}
            finding_rows = (await conn.execute(sa.select(findings).where(
                findings.c.device_id.in_(sorted(wanted))).order_by(findings.c.id))).all()
        chunk_rows = [r for dev, rows in rows_by_device.items() for r in rows
                      if r.kind == "chunk" and r.recording_id in wanted[dev]]
        unverified = [f"{r.device_id}/{r.seq}" for rows in rows_by_device.values() for r in rows if r.receipt is None]
        if unverified:
            raise Conflict(f"{len(unverified)} entries have no receipt yet (e.g. {unverified[0]}): "
                           "export when they are verified", code="export_unverified", entries=unverified[:20])
        keys = [r.object_key for r in chunk_rows]
        # (1) the access, on record before a byte is read
        first_dev = next(iter(wanted)) if len(wanted) == 1 else None
        first_rec = next(iter(wanted[first_dev])) if first_dev and len(wanted[first_dev]) == 1 else None
        grant = await self.access.open(reader, "export", keys, req.reason, device_id=first_dev,
                                       recording_id=first_rec, case_id=req.case_id)
        # (2) a checkpoint covering every entry and this export's access
        await self.log.checkpoint_round()
        note_text = await self.log.checkpoint()
        checkpoint = SignedNote.parse(note_text).checkpoint()
        size = checkpoint.size
        zf = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED)
        derived: list[IndexFile] = []

        def put(path: str, data: bytes, *, pin: bool = False, stored: bool = False) -> None:
            zf.writestr(zipfile.ZipInfo(path, date_time=(2000, 1, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
            if pin:
                derived.append(IndexFile(path, hashlib.sha256(data).hexdigest(), len(data)))

        put(CHECKPOINT, note_text)
        # (3) earlier checkpoints, each with a consistency proof to this one
        for earlier in await self.log.checkpoint_sizes(size - 1, self.config.export_consistency_checkpoints):
            put(checkpoint_path(earlier), await self.log.checkpoint(earlier))
            proof = await self.log.consistency(earlier, size)
            put(consistency_path(earlier), _json(proof))
        put(WITNESSES, _json({"witnesses": [{"name": w["name"], "vkey": w["vkey"]}
                                            for w in await self.log.witnesses()]}))
        history = self.keyring.history
        put(SERVER_KEYS, canonical_bytes({"keys": [k.to_dict() for k in history]}))
        # (4) devices: certificate, key rotations, entries, receipts, proofs, chunks
        index_devices: list[IndexDevice] = []
        index_recordings: list[IndexRecording] = []
        chunk_bytes: dict[tuple[str, int], bytes] = {}
        for dev, rows in rows_by_device.items():
            put(certificate_path(dev), bytes(device_rows[dev].certificate))
            for n, rot in enumerate(rotations[dev]):
                put(rotation_path(dev, n), rot)
            index_devices.append(IndexDevice(dev, rows[0].seq, rows[-1].seq, len(rotations[dev])))
            for r in rows:
                put(entry_path(dev, r.seq), bytes(r.envelope))
                put(receipt_path(dev, r.seq), bytes(r.receipt))
                receipt = Receipt.peek(Envelope.from_bytes(bytes(r.receipt)))
                if receipt.log_index is not None:
                    inc = await self.log.inclusion(size, index=receipt.log_index)
                    put(proof_path(dev, r.seq), _json(inc))
                if r.kind == "chunk" and r.recording_id in wanted[dev]:
                    stored = await self.store.get(r.object_key, grant)
                    if stored is None:
                        raise Conflict(f"the bytes of {dev}/{r.seq} are missing from the store",
                                       code="footage_missing")
                    chunk_bytes[(dev, r.seq)] = stored.data
                    put(chunk_path(dev, r.seq), stored.data, stored=True)
            for rec in sorted(wanted[dev]):
                mine = [r for r in rows if r.recording_id == rec]
                seqs = tuple(r.seq for r in mine if r.kind == "chunk")
                complete = bool(mine) and mine[0].event == "start" and mine[-1].event in ("stop", "interrupted")
                mp4 = None
                if seqs:
                    from server.remux import remux

                    data = await asyncio.to_thread(remux, [chunk_bytes[(dev, s)] for s in seqs])
                    mp4 = recording_path(dev, rec)
                    put(mp4, data, pin=True, stored=True)
                index_recordings.append(IndexRecording(dev, rec, mine[0].seq, mine[-1].seq, seqs, complete, mp4))
        # (5) the case's audit report and the access-log excerpt
        audit = req.audit if req.audit is not None else {
            "source": "findings of the exported devices (the case audit report replaces this once cases exist)",
            "findings": [finding_json(f) for f in finding_rows]}
        put(AUDIT, _json(audit), pin=True)
        put(ACCESS_LOG, _json({"events": await self.access.for_objects(keys)}), pin=True)
        index = ExportIndex(
            v=1, export_id="exp-" + secrets.token_hex(8), created_ms=self.clock.now_ms(), origin=checkpoint.origin,
            checkpoint_size=size, checkpoint_root=checkpoint.root.hex(), access_id=grant.access_id,
            reason=req.reason.strip(), case_id=req.case_id, selection=req.describe(),
            devices=tuple(index_devices), recordings=tuple(index_recordings), links=tuple(req.links),
            files=(), server_keys=history)
        page = render_html(index).encode("utf-8")
        put(INDEX_HTML, page, pin=True)
        put(README, README_TEXT.encode("utf-8"), pin=True)
        index = dataclasses.replace(index, files=tuple(derived))
        put(INDEX, self.keyring.sign(index).raw)
        zf.close()
        return {"export_id": index.export_id, "access_id": grant.access_id, "checkpoint_size": size,
                "recordings": len(index_recordings), "chunks": len(chunk_rows)}


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


README_TEXT = """Custody case export / Custody 案件导出包

Verify / 验证:
    custody verify THIS.zip --server-key KEY [--checkpoint FILE ...]

KEY is the server's public key (its fingerprint, its note verifier key, or the raw key), obtained
from the operator independently of this package. The format is documented in docs/FORMAT.md of
Custody; everything can be checked without Custody's code.

KEY 为服务器公钥（指纹、签名验证密钥或原始公钥），应通过独立渠道从运营方获取。
"""


def render_html(index: ExportIndex) -> str:
    """index.html: what the package holds, for a person (zh-CN and English); the verifier is the authority."""
    e = html.escape
    rows = "".join(
        f"<tr><td><code>{e(r.device_id)}</code></td><td>{e(r.recording_id)}</td><td>{r.first_seq}–{r.last_seq}</td>"
        f"<td>{len(r.chunk_seqs)}</td><td>{'是 yes' if r.complete else '否 no'}</td>"
        f"<td>{f'<a href={chr(34)}{e(r.mp4)}{chr(34)}>MP4</a>' if r.mp4 else '—'}</td></tr>"
        for r in index.recordings)
    links = "".join(f"<li>{e(link.case_id)} / {e(link.step_id)}: <code>{e(link.device_id)}</code> "
                    f"{e(link.recording_id)}</li>" for link in index.links) or "<li>—</li>"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>案件导出 Case export {e(index.export_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;
padding:.3em .6em}}</style></head><body>
<h1>执法全过程记录导出包 <small>/ Case export</small></h1>
<p>导出编号 Export: <code>{e(index.export_id)}</code> · 案件 Case: {e(index.case_id or '—')} ·
导出原因 Reason: {e(index.reason)}</p>
<p>日志 Log: <code>{e(index.origin)}</code>, 树大小 tree size {index.checkpoint_size},
根哈希 root <code>{e(index.checkpoint_root)}</code></p>
<h2>录像 Recordings</h2>
<table><tr><th>设备 Device</th><th>录像 Recording</th><th>序号 Sequence</th><th>片段 Chunks</th>
<th>完整 Complete</th><th>播放 Play</th></tr>{rows}</table>
<h2>关联 Links</h2><ul>{links}</ul>
<h2>如何验证 How to verify</h2>
<p>本页面仅供浏览，不是证明。请使用 <code>custody verify</code> 和独立获得的服务器公钥进行验证。<br>
This page is for reading only and proves nothing by itself. Run <code>custody verify</code> with the
server's public key obtained independently.</p>
<pre>custody verify THIS.zip --server-key KEY</pre>
</body></html>
"""
