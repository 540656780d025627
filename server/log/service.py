"""The transparency log service: leaves in, signed checkpoints out, proofs, witnesses and forks.

* Appending (:meth:`LogService.append`) runs inside the caller's transaction, so "accepted" and
  "logged" commit together; :mod:`server.log.tree` is the sequencer.
* Key events are not pushed by the services that cause them (keys, devices): each checkpoint
  round first logs every server key, device key and device state change not logged yet, so no
  other module has to remember to call the log, and a change made by any process is logged by
  whichever process runs the next round.
* A checkpoint (C2SP signed note, origin = the log's name, signed with the current server key
  under that name) is made every ``log.checkpoint_interval_s`` when the tree grew, stored, and
  handed to every registered publisher (the MQTT part registers one for the retained
  ``custody/v1/log/checkpoint`` topic: :meth:`LogService.add_publisher`).
* Witnesses are registered by an admin with their cosignature/v1 verifier key; a cosignature is
  accepted only when it verifies over a checkpoint this log made, and served with it.
* Anyone may report a fork: two notes signed by this log's key that cannot both be true. The
  server checks both against its own tree and records ``log.fork`` when one is not its history.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol import findings as F
from protocol.checkpoint import (
    SIG_COSIGNATURE_V1,
    Checkpoint,
    NoteVerifier,
    SignedNote,
    sign_checkpoint,
)
from protocol.errors import ProofError
from protocol.keys import VerifyKey
from protocol.leaves import AnyLeaf, KeyLeaf, LinkLeaf
from server.config import LogConfig
from server.db.database import Database
from server.db.schema import (
    device_keys,
    device_states,
    link_events,
    log_checkpoints,
    log_cosignatures,
    log_leaves,
    log_witnesses,
    server_keys,
    users,
)
from server.errors import BadRequest, Conflict, NotFound, Unprocessable
from server.keyring import ServerKeyring
from server.log import tree
from server.services.findings import open_finding

log = logging.getLogger(__name__)

#: Called with the full note text (cosignatures included) of every new checkpoint.
Publisher = Callable[[bytes], Awaitable[object]]

MAX_LEAVES_PER_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a leaf landed: its index and the tree size right after it (what a receipt carries)."""

    index: int
    tree_size: int
    new: bool


class LogService:
    """One process's handle on the shared log."""

    def __init__(self, db: Database, clock: Clock, keyring: ServerKeyring, config: LogConfig) -> None:
        self.db = db
        self.clock = clock
        self.keyring = keyring
        self.config = config
        self._origin: str | None = config.origin
        self._publishers: list[Publisher] = []
        self._publish_lock = asyncio.Lock()
        self._published_size = 0  # the largest checkpoint this process handed to its publishers

    # -- start-up and identity ------------------------------------------------------------------

    async def start(self) -> None:
        """Create the sequencer row and fix the origin (after the keyring loaded)."""
        async with self.db.write() as conn:
            await tree.ensure_state(conn, self.clock.now_ms())
            if self._origin is None:
                first = (await conn.execute(sa.select(server_keys.c.key_id).order_by(
                    server_keys.c.created_ms, server_keys.c.key_id).limit(1))).scalar_one()
                self._origin = f"custody/{first}"

    @property
    def origin(self) -> str:
        """The log's name: checkpoint origin and note key name."""
        if self._origin is None:
            raise RuntimeError("log service not started")
        return self._origin

    def note_verifier(self, key: VerifyKey | None = None) -> NoteVerifier:
        """The verifier of checkpoints signed with ``key`` (default: the current server key)."""
        return NoteVerifier(self.origin, key or self.keyring.current.public)

    def key_info(self) -> dict[str, Any]:
        """What a witness or verifier pins: origin, vkey, and the server key behind it."""
        current = self.keyring.current.public
        return {"origin": self.origin, "vkey": self.note_verifier().vkey(), "server_key_id": current.key_id,
                "fingerprint": current.fingerprint,
                "vkeys": [self.note_verifier(k.verify_key).vkey() for k in self.keyring.history]}

    def add_publisher(self, publisher: Publisher) -> None:
        """Register a callback for new checkpoints (the MQTT part publishes them retained)."""
        self._publishers.append(publisher)

    # -- appending ------------------------------------------------------------------------------

    async def append(self, conn: AsyncConnection, leaf: AnyLeaf, subject: str) -> Appended:
        """Append ``leaf`` in the caller's transaction (idempotent per ``subject``)."""
        index, new = await tree.append_leaf(conn, leaf.KIND, subject, leaf.to_bytes(), self.clock.now_ms())
        return Appended(index, index + 1, new)

    async def append_many(self, conn: AsyncConnection, leaves: Sequence[tuple[AnyLeaf, str]]) -> list[Appended]:
        """Append ``(leaf, subject)`` pairs in order, in the caller's transaction, under one sequencer lock."""
        placed = await tree.append_leaves(conn, [(leaf.KIND, subject, leaf.to_bytes()) for leaf, subject in leaves],
                                          self.clock.now_ms())
        return [Appended(index, index + 1, new) for index, new in placed]

    async def append_now(self, leaf: AnyLeaf, subject: str) -> Appended:
        """Append ``leaf`` in a transaction of its own."""
        async with self.db.write() as conn:
            return await self.append(conn, leaf, subject)

    async def opaque_principal(self, conn: AsyncConnection, actor: str) -> str:
        """The id a leaf carries for ``actor``: ``user:NAME`` becomes ``user:<number>`` (no names in the log)."""
        kind, _, name = actor.partition(":")
        if kind == "user":
            uid = (await conn.execute(sa.select(users.c.id).where(users.c.name == name))).scalar_one_or_none()
            return f"user:{uid}" if uid is not None else "user:unknown"
        return actor if len(actor) <= 64 and actor.replace(":", "").replace("-", "").isalnum() else "system"

    async def on_link_event(self, conn: AsyncConnection, event: dict[str, Any]) -> None:
        """The cases service's hook: log a link or unlink in the transaction that records it."""
        leaf = LinkLeaf(v=1, leaf="link", link_id=int(event["link_id"]), action=event["action"],
                        case_id=str(event["case_id"]), step_id=event["step_id"], device_id=event["device_id"],
                        recording_id=event["recording_id"], from_ms=event.get("from_ms"),
                        until_ms=event.get("until_ms"), principal=await self.opaque_principal(conn, event["actor"]),
                        time_ms=event["time_ms"])
        appended = await self.append(conn, leaf, f"link-event:{event['id']}")
        await conn.execute(link_events.update().where(link_events.c.id == event["id"]).values(
            log_index=appended.index))
        event["log_index"] = appended.index

    async def log_key_events(self, limit: int = 1000) -> int:
        """Log server keys, device keys and device state changes not logged yet; return how many."""
        now = self.clock.now_ms()
        count = 0

        def missing(subject: Any) -> Any:
            return ~sa.exists().where(log_leaves.c.subject == subject)

        sk_subject = sa.literal("server-key:") + server_keys.c.key_id
        dk_subject = sa.literal("device-key:") + device_keys.c.device_id + sa.literal(":") + device_keys.c.key_id
        ds_subject = sa.literal("device-state:") + sa.cast(device_states.c.id, sa.String)
        # Look first without the write lock: most rounds find nothing, and ingest shares that lock (SQLite).
        async with self.db.read() as conn:
            pending = [(await conn.execute(sa.select(sa.literal(1)).select_from(table).where(missing(subject))
                                           .limit(1))).first() for table, subject in (
                (server_keys, sk_subject), (device_keys, dk_subject), (device_states, ds_subject))]
        if not any(pending):
            return 0
        async with self.db.write() as conn:
            for r in (await conn.execute(sa.select(server_keys).where(missing(sk_subject))
                                         .order_by(server_keys.c.created_ms).limit(limit))).all():
                key = VerifyKey(r.alg, bytes(r.public_key))
                leaf = KeyLeaf(v=1, leaf="key", event="server_key", key_id=r.key_id, fingerprint=key.fingerprint,
                               device_id=None, state=None, cutoff_seq=None, time_ms=r.created_ms)
                count += (await self.append(conn, leaf, f"server-key:{r.key_id}")).new
            for r in (await conn.execute(sa.select(device_keys).where(missing(dk_subject))
                                         .order_by(device_keys.c.created_ms).limit(limit))).all():
                key = VerifyKey(r.alg, bytes(r.public_key))
                leaf = KeyLeaf(v=1, leaf="key", event="device_key", key_id=r.key_id, fingerprint=key.fingerprint,
                               device_id=r.device_id, state=None, cutoff_seq=None, time_ms=r.created_ms)
                count += (await self.append(conn, leaf, f"device-key:{r.device_id}:{r.key_id}")).new
            for r in (await conn.execute(sa.select(device_states).where(missing(ds_subject))
                                         .order_by(device_states.c.id).limit(limit))).all():
                leaf = KeyLeaf(v=1, leaf="key", event="device_state", key_id=None, fingerprint=None,
                               device_id=r.device_id, state=r.state, cutoff_seq=r.cutoff_seq, time_ms=r.changed_ms)
                count += (await self.append(conn, leaf, f"device-state:{r.id}")).new
        if count:
            log.info("logged %d key events at %d", count, now)
        return count

    # -- checkpoints ------------------------------------------------------------------------------

    async def size(self) -> int:
        """Committed tree size."""
        async with self.db.read() as conn:
            return await tree.current_size(conn)

    async def checkpoint_round(self) -> bytes | None:
        """The periodic duty: log key events, then sign a checkpoint if the tree grew."""
        await self.log_key_events()
        return await self.make_checkpoint()

    async def make_checkpoint(self) -> bytes | None:
        """Sign and store a checkpoint of the current tree if it is larger than the last (None if not); publish
        the newest checkpoint.

        Several processes run this round on one database: under the sequencer lock (taken last in
        appends, first here, so no deadlock) the latest checkpoint and the tree size are read as
        they are, and checkpoints are made one at a time in growing size. Without it two
        processes signed the same size at once and one failed on the primary key (an export
        calling this then failed too), or a smaller one was stored after a larger.
        """
        note = None
        async with self.db.write() as conn:
            size = await tree.locked_size(conn)
            last = (await conn.execute(sa.select(sa.func.max(log_checkpoints.c.size)))).scalar_one_or_none()
            if size > 0 and (last is None or size > last):
                root = await tree.tree_root(conn, size)
                key = self.keyring.current
                note = sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, key)
                await conn.execute(log_checkpoints.insert().values(
                    size=size, root=root, note=note.text(), key_id=key.key_id, created_ms=self.clock.now_ms()))
        await self._publish_newest()
        return note.text().encode("utf-8") if note is not None else None

    async def _publish_newest(self) -> None:
        """Hand the newest stored checkpoint to the publishers, one publication at a time.

        Publishing follows the commit, outside the sequencer lock, so another process may have
        stored a larger checkpoint meanwhile; publishing the one made here after that one would set
        the retained checkpoint topic back. So every publication, in every process, runs under one
        lock (PostgreSQL advisory lock; this process's own asyncio lock) and publishes the newest
        checkpoint there is then: what goes out only grows, and a checkpoint whose process died
        between its commit and its publication is published by the next round anywhere.
        """
        async with self._publish_lock, self.db.read(locking=True) as conn:
            if not self.db.is_sqlite:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7262165)"))
            row = (await conn.execute(sa.select(log_checkpoints.c.size, log_checkpoints.c.note).order_by(
                log_checkpoints.c.size.desc()).limit(1))).first()
            if row is None or row.size <= self._published_size:
                return
            text = row.note.encode("utf-8")
            for publish in list(self._publishers):
                try:
                    await publish(text)
                except Exception:  # a broker being down must not stop checkpoints
                    log.exception("publishing checkpoint %d failed", row.size)
            self._published_size = int(row.size)

    async def checkpoint(self, size: int | None = None) -> bytes:
        """A stored checkpoint (default: the latest) with every accepted cosignature attached."""
        async with self.db.read() as conn:
            stmt = sa.select(log_checkpoints)
            stmt = stmt.where(log_checkpoints.c.size == size) if size is not None else stmt.order_by(
                log_checkpoints.c.size.desc()).limit(1)
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise NotFound("no checkpoint" + (f" of size {size}" if size is not None else " yet"),
                               code="no_checkpoint")
            lines = (await conn.execute(sa.select(log_cosignatures.c.line).where(
                log_cosignatures.c.size == row.size).order_by(log_cosignatures.c.id))).scalars().all()
        note = SignedNote.parse(row.note)
        for line in lines:
            note = note.with_line(line)
        return note.text().encode("utf-8")

    async def checkpoint_sizes(self, up_to: int, limit: int) -> list[int]:
        """Sizes of the latest ``limit`` stored checkpoints not larger than ``up_to``, newest first."""
        async with self.db.read() as conn:
            return [int(s) for s in (await conn.execute(sa.select(log_checkpoints.c.size).where(
                log_checkpoints.c.size <= up_to).order_by(log_checkpoints.c.size.desc()).limit(limit))).scalars()]

    # -- proofs and leaves ------------------------------------------------------------------------------

    async def _check_size(self, conn: AsyncConnection, size: int) -> None:
        current = await tree.current_size(conn)
        if not 1 <= size <= current:
            raise NotFound(f"the tree has {current} leaves; no tree of size {size}", code="bad_tree_size")

    async def inclusion(self, size: int, index: int | None = None, leaf_hash: str | None = None) -> dict[str, Any]:
        """Inclusion proof of a leaf (by index or by leaf hash) in the tree of ``size``."""
        async with self.db.read() as conn:
            await self._check_size(conn, size)
            if index is None:
                if leaf_hash is None:
                    raise BadRequest("give index or hash", code="missing_field")
                found = (await conn.execute(sa.select(log_leaves.c.idx).where(
                    log_leaves.c.leaf_hash == leaf_hash).order_by(log_leaves.c.idx).limit(1))).first()
                if found is None:
                    raise NotFound("no leaf with this hash", code="unknown_leaf")
                index = int(found.idx)
            if index >= size:
                raise NotFound(f"leaf {index} is not in the tree of size {size}", code="bad_tree_size")
            row = (await conn.execute(sa.select(log_leaves.c.leaf, log_leaves.c.leaf_hash).where(
                log_leaves.c.idx == index))).one()
            proof = await tree.tree_inclusion(conn, index, size)
        return {"index": index, "size": size, "leaf_hash": row.leaf_hash, "leaf": _b64(bytes(row.leaf)),
                "proof": [_b64(h) for h in proof]}

    async def consistency(self, size1: int, size2: int) -> dict[str, Any]:
        """Consistency proof from ``size1`` to ``size2``."""
        if not 1 <= size1 <= size2:
            raise BadRequest("need 1 <= from <= to", code="bad_tree_size")
        async with self.db.read() as conn:
            await self._check_size(conn, size2)
            proof = await tree.tree_consistency(conn, size1, size2)
        return {"from": size1, "to": size2, "proof": [_b64(h) for h in proof]}

    async def leaves(self, start: int, end: int) -> list[dict[str, Any]]:
        """Leaves ``start`` (inclusive) to ``end`` (exclusive), at most a page."""
        end = min(end, start + MAX_LEAVES_PER_PAGE)
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(log_leaves.c.idx, log_leaves.c.kind, log_leaves.c.leaf).where(
                log_leaves.c.idx >= start, log_leaves.c.idx < end).order_by(log_leaves.c.idx))).all()
        return [{"index": int(r.idx), "kind": r.kind, "leaf": _b64(bytes(r.leaf))} for r in rows]

    async def leaf_index(self, subject: str) -> int | None:
        """Index of the leaf about ``subject``."""
        async with self.db.read() as conn:
            found = (await conn.execute(sa.select(log_leaves.c.idx).where(log_leaves.c.subject == subject))).first()
        return int(found.idx) if found is not None else None

    # -- witnesses ----------------------------------------------------------------------------------

    async def add_witness(self, vkey: str, actor: str) -> dict[str, Any]:
        """Register a witness by its cosignature/v1 verifier key (its name is the key's name)."""
        try:
            verifier = NoteVerifier.from_vkey(vkey)
        except ProofError as exc:
            raise BadRequest(f"not a witness verifier key: {exc.message}", code="bad_vkey") from None
        if verifier.sig_type != SIG_COSIGNATURE_V1:
            raise BadRequest("a witness key must be a cosignature/v1 key (type 0x04)", code="bad_vkey")
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            existing = (await conn.execute(sa.select(log_witnesses).where(
                log_witnesses.c.name == verifier.name))).first()
            if existing is not None:
                if existing.vkey != vkey.strip():
                    raise Conflict(f"witness {verifier.name} is registered with another key", code="witness_exists")
            else:
                await conn.execute(log_witnesses.insert().values(name=verifier.name, vkey=vkey.strip(),
                                                                 created_ms=now, created_by=actor))
        return {"name": verifier.name, "vkey": vkey.strip()}

    async def witnesses(self) -> list[dict[str, Any]]:
        """Registered witnesses."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(log_witnesses).order_by(log_witnesses.c.name))).all()
        return [{"name": r.name, "vkey": r.vkey, "created_ms": r.created_ms, "created_by": r.created_by,
                 "disabled_ms": r.disabled_ms} for r in rows]

    async def add_cosignatures(self, body: bytes) -> dict[str, Any]:
        """Accept a cosigned checkpoint from a witness: keep each valid cosignature by a registered witness."""
        try:
            note = SignedNote.parse(body)
            cp = note.checkpoint()
        except ProofError as exc:
            raise BadRequest(f"not a cosigned checkpoint: {exc.message}", code=exc.code) from None
        now = self.clock.now_ms()
        accepted: list[str] = []
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(log_checkpoints).where(log_checkpoints.c.size == cp.size))).first()
            if row is None or SignedNote.parse(row.note).body != note.body:
                raise Unprocessable("this log made no such checkpoint", code="unknown_checkpoint")
            wrows = (await conn.execute(sa.select(log_witnesses).where(log_witnesses.c.disabled_ms.is_(None)))).all()
            for w in wrows:
                verifier = NoteVerifier.from_vkey(w.vkey)
                try:
                    timestamp = note.verify(verifier)
                except ProofError:
                    continue
                assert timestamp is not None
                sig = next(s for s in note.signatures if s.name == verifier.name and s.key_hash == verifier.key_hash)
                await conn.execute(sa.delete(log_cosignatures).where(  # a newer cosignature replaces an older one
                    log_cosignatures.c.size == cp.size, log_cosignatures.c.witness == w.name))
                await conn.execute(log_cosignatures.insert().values(size=cp.size, witness=w.name, line=sig.line(),
                                                                    timestamp_s=timestamp, received_ms=now))
                accepted.append(w.name)
        if not accepted:
            raise Unprocessable("no valid cosignature by a registered witness", code="no_cosignature")
        return {"size": cp.size, "accepted": accepted}

    # -- the rollback guard -----------------------------------------------------------------------

    async def check_published(self, text: str | None) -> str:
        """Refuse (:class:`server.log_guard.LogRolledBack`) a tree that does not extend the published checkpoint."""
        from server.log_guard import LogRolledBack, Published, judge

        if text is None:
            return judge(None, 0, None)
        try:
            cp = self._open_own(text)
        except ProofError as exc:
            raise LogRolledBack(f"refusing to start: the published checkpoint is not this log's ({exc.message}); "
                                "it belongs to another log or another server key") from None
        async with self.db.read() as conn:
            size = await tree.current_size(conn)
            root = await tree.tree_root(conn, cp.size) if size >= cp.size else None
        return judge(Published(cp.size, cp.root, cp.origin), size, root)

    # -- forks --------------------------------------------------------------------------------------

    def _open_own(self, text: str) -> Checkpoint:
        """A checkpoint signed by any key this server ever had, under this log's name."""
        note = SignedNote.parse(text)
        for k in self.keyring.history:
            try:
                note.verify(self.note_verifier(k.verify_key))
            except ProofError:
                continue
            cp = note.checkpoint()
            if cp.origin != self.origin:
                raise ProofError(f"checkpoint of log {cp.origin!r}", code="wrong_log")
            return cp
        raise ProofError("not signed by this log's key", code="bad_checkpoint_signature")

    async def report_fork(self, first: str, second: str, reporter: str) -> dict[str, Any]:
        """Check a reported fork; record ``log.fork`` when a checkpoint signed by this log is not its history."""
        try:
            cps = [self._open_own(first), self._open_own(second)]
        except ProofError as exc:
            raise Unprocessable(f"not a checkpoint of this log: {exc.message}", code=exc.code) from None
        foreign = []
        async with self.db.read() as conn:
            size = await tree.current_size(conn)
            for cp in cps:
                if cp.size > size or await tree.tree_root(conn, cp.size) != cp.root:
                    foreign.append(cp)
        same_size_split = cps[0].size == cps[1].size and cps[0].root != cps[1].root
        if not foreign and not same_size_split:
            return {"fork": False, "detail": "both checkpoints are consistent with this log's tree"}
        now = self.clock.now_ms()
        message = (f"{reporter} showed checkpoints of sizes {cps[0].size} and {cps[1].size} signed by this log "
                   f"that cannot both be its history")
        async with self.db.write() as conn:
            await open_finding(conn, F.LOG_FORK, self.origin, message,
                               {"first": first, "second": second, "reporter": reporter,
                                "not_in_tree": [c.size for c in foreign]}, now,
                               dedup_key=f"fork:{cps[0].size}:{cps[0].root.hex()[:16]}:{cps[1].size}:"
                                         f"{cps[1].root.hex()[:16]}")
        log.critical("LOG FORK reported by %s: %s", reporter, message)
        return {"fork": True, "detail": message}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
