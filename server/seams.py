"""Seams to services that live on other branches, and the interim stand-ins main runs until they land.

Each seam is a Protocol shaped exactly like the service that fills it, so wiring one is a line
in :func:`build_seams`:

=================  ======================================  ================================================
seam               service (branch)                        on main now
=================  ======================================  ================================================
``CommandSender``  ``CommandsService.issue`` (sync-server)  wired
``FleetView``      ``FleetService`` (sync-server)          wired
``CasesView``      ``CasesService`` (cases-audit)          wired
``AccessLog``      ``AccessService`` (tamper)              :class:`InterimAccessLog`: a JSON-lines file in the
                                                           data dir, written and fsynced before the access is
                                                           granted; not in the transparency log, one process
=================  ======================================  ================================================

The interim access log is not evidence-grade: it exists so that live view and playback are on
record end to end until tamper's access log lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from custody.clock import Clock
from server.auth import Principal
from server.db.database import Database
from server.errors import BadRequest

log = logging.getLogger(__name__)

# -- the seams -----------------------------------------------------------------------------------------


class CommandSender(Protocol):
    """Sign and send a command to a device (sync-server's ``CommandsService.issue``)."""

    async def issue(self, device_id: str, kind: str, params: dict[str, Any] | None, ttl_s: int | None,
                    actor: str) -> dict[str, Any]: ...


class FleetView(Protocol):
    """Health of devices as the server sees it (sync-server's ``FleetService``)."""

    async def fleet(self) -> dict[str, Any]: ...

    async def device(self, device_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads footage, as the access log records it (tamper's ``server.services.access.Reader``)."""

    actor: str
    principal_id: str
    role: str | None

    @classmethod
    def of(cls, principal: Principal) -> Reader:
        """The reader behind an authenticated request."""
        if principal.kind == "user":
            return cls(principal.actor, f"user:{principal.user_id}", principal.role.value)
        return cls(principal.actor, principal.actor, principal.role.value)


class Grant(Protocol):
    """What opening an access returns (tamper's ``AccessGrant``): at least its id."""

    @property
    def access_id(self) -> int: ...


class AccessLog(Protocol):
    """The access log (tamper's ``AccessService``): an access is on record before a byte is served."""

    async def open(self, reader: Reader, kind: str, object_keys: list[str], reason: str | None, *,
                   device_id: str | None = None, recording_id: str | None = None,
                   case_id: str | None = None) -> Grant: ...

    async def query(self, *, actor: str | None = None, device_id: str | None = None, case_id: str | None = None,
                    kind: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                    after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]: ...


class CasesView(Protocol):
    """Cases with their steps and links (cases-audit's ``CasesService``)."""

    async def list_cases(self) -> list[dict[str, Any]]: ...

    async def get_case(self, case_id: int) -> dict[str, Any]: ...


@dataclass(slots=True)
class Seams:
    """The seams one server process uses (``Services.seams``)."""

    commands: CommandSender
    fleet: FleetView
    access: AccessLog
    cases: CasesView


# -- access log (interim) ------------------------------------------------------------------------------

ACCESS_KINDS = ("view", "live_view", "download", "export", "integrity")


def check_reason(reason: str | None) -> str:
    """A reason is required and must say something (as tamper's access log demands)."""
    text = (reason or "").strip()
    if len(text) < 4:
        raise BadRequest("reading footage needs a reason (at least 4 characters)", code="reason_required")
    if len(text) > 500 or any(ord(c) < 0x20 for c in text):
        raise BadRequest("a reason is at most 500 characters, without control characters", code="bad_reason")
    return text


@dataclass(frozen=True, slots=True)
class InterimGrant:
    """An access on record."""

    access_id: int


class InterimAccessLog:
    """Access events in an append-only JSON-lines file (one process; replaced by tamper's AccessService)."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._lock = asyncio.Lock()
        self._next = 1 + sum(1 for _ in self._rows())

    def _rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def open(self, reader: Reader, kind: str, object_keys: list[str], reason: str | None, *,
                   device_id: str | None = None, recording_id: str | None = None,
                   case_id: str | None = None) -> InterimGrant:
        """Record an access (durably) and return its id."""
        if kind not in ACCESS_KINDS:
            raise ValueError(f"unknown access kind {kind!r}")
        text = check_reason(reason)
        async with self._lock:
            access_id = self._next
            row = {"id": access_id, "kind": kind, "actor": reader.actor, "principal_id": reader.principal_id,
                   "role": reader.role, "device_id": device_id, "recording_id": recording_id, "case_id": case_id,
                   "objects": len(set(object_keys)), "object_keys": sorted(set(object_keys)), "reason": text,
                   "time_ms": self.clock.now_ms(), "log_index": None}
            await asyncio.to_thread(self._append, json.dumps(row, ensure_ascii=False) + "\n")
            self._next += 1
        return InterimGrant(access_id)

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)  # on record before the first byte is served
        finally:
            os.close(fd)

    async def query(self, *, actor: str | None = None, device_id: str | None = None, case_id: str | None = None,
                    kind: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                    after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Access events, oldest first, filtered."""
        rows = await asyncio.to_thread(self._rows)
        out = []
        for r in rows:
            if r["id"] <= after_id or any(v is not None and r.get(k) != v for k, v in (
                    ("actor", actor), ("device_id", device_id), ("case_id", case_id), ("kind", kind))):
                continue
            if (from_ms is not None and r["time_ms"] < from_ms) or (to_ms is not None and r["time_ms"] >= to_ms):
                continue
            out.append(r)
            if len(out) >= limit:
                break
        return out


def build_seams(db: Database, clock: Clock, data_dir: Path, *, commands: CommandSender, fleet: FleetView,
                cases: CasesView) -> Seams:
    """The seams for this process (see the module docstring)."""
    return Seams(commands=commands, fleet=fleet, access=InterimAccessLog(data_dir / "access-log.interim.jsonl", clock),
                 cases=cases)
