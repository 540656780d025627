"""The uploader: delivers every buffered entry to the server while recording carries on.

Entries go in sequence order with bounded concurrency. For each: announce (idempotent: the
server may already know it from MQTT), PUT the bytes to the target the server chose (headers
verbatim), ask for verification, and hand the receipt to the buffer, which frees the chunk only
if the receipt verifies against a server key. A server that stores footage itself says so in its
announce answers; chunks then go in one request, the bytes with their signed manifest, and the
answer is the receipt (docs/protocol.md, "Delivering a chunk"). A server that cannot be reached is retried with
exponential backoff and jitter; a refusal is logged and the entry kept (never deleted) and
retried much later. State lives in the buffer's index, so an agent restarted mid-upload simply
picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.buffer import BufferedEntry, ChunkBuffer
from agent.client import Refused, ServerClient, Unreachable
from agent.errors import AgentError
from custody.clock import Clock
from custody.tasks import cancel_and_wait
from protocol.errors import RemoteProtocolError
from protocol.keys import VerifyKey
from protocol.states import ChunkEvent, ChunkState

log = logging.getLogger(__name__)

#: How long an entry the server refused waits before it is offered again.
REFUSED_RETRY_S = 300.0
#: Receipts remembered by their bytes, so the copy arriving by the other path is dropped unparsed.
TAKEN_RECEIPTS = 64
#: Refusals that a fresh attempt cures (a new upload target, a newly signed request).
RETRY_AT_ONCE = frozenset({"upload_url_expired", "stale_request", "replayed_request"})


@dataclass(slots=True)
class UploadStats:
    """Counters for status reports and tests."""

    delivered: int = 0
    bytes_uploaded: int = 0
    retries: int = 0
    refused: int = 0
    #: Chunks delivered in one request with their manifest (no announce first).
    direct: int = 0
    receipts_rejected: int = 0
    last_error: str | None = None
    refused_until: dict[int, float] = field(default_factory=dict)
    #: Commit-to-verified-receipt times of chunks committed by this process, in real milliseconds.
    latencies_ms: list[float] = field(default_factory=list)


class Uploader:
    """Delivers a buffer's entries to one server."""

    def __init__(
        self,
        buffer: ChunkBuffer,
        client: ServerClient,
        server_keys: Callable[[], Sequence[VerifyKey]],
        clock: Clock,
        *,
        concurrency: int = 2,
        bandwidth_bps: int | None = None,
        max_backoff: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise AgentError("upload concurrency must be at least 1")
        self.buffer = buffer
        self.client = client
        self.server_keys = server_keys
        self.clock = clock
        self.concurrency = concurrency
        self.bandwidth_bps = bandwidth_bps
        self.max_backoff = max_backoff
        self.stats = UploadStats()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._failures = 0
        self._idle = asyncio.Event()
        self._bucket_time = 0.0  # monotonic time until which the bandwidth budget is spent
        self._committed_at: dict[int, float] = {}
        #: While True, entries are announced but their bytes are held back (simulates a footage
        #: store or upload path that is down while the control plane works).
        self.hold_uploads = False
        self._held: set[int] = set()
        # The exact bytes of receipts that freed an entry. The server sends each receipt twice (the
        # HTTP answer and MQTT); the second copy would be parsed and its signature checked only to
        # find the entry gone, which costs a device (and a simulated fleet of them) real CPU.
        self._taken: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        #: Learned from the server's answers: it takes a chunk with its manifest in one PUT (the
        #: local store), so chunks skip the announce request. Off until an answer says so, and
        #: off again when a server refuses it (``wrong_store``: its footage goes to S3).
        self.direct_upload = False

    def wake(self) -> None:
        """Something new to deliver (a commit, a reconnect)."""
        self._wake.set()

    def _candidates(self) -> list[BufferedEntry]:
        now = self.clock.monotonic()
        out = []
        for e in self.buffer.entries():
            if e.seq in self._in_flight or e.seq in self._held:
                continue
            until = self.stats.refused_until.get(e.seq)
            if until is not None and until > now:
                continue
            out.append(e)
        return out

    async def run(self) -> None:
        """Deliver forever (cancel to stop)."""
        try:
            while True:
                candidates = self._candidates()
                if not candidates and not self._in_flight:
                    self._idle.set()
                free = self.concurrency - len(self._in_flight)
                for entry in candidates[:free]:
                    self._idle.clear()
                    self._in_flight[entry.seq] = asyncio.create_task(self._deliver(entry), name=f"upload-{entry.seq}")
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                waiters: set[asyncio.Future[Any]] = {waker, *self._in_flight.values()}
                # Refused entries come back on their own after a while: poll then.
                poll = 5.0 if self.stats.refused_until else None
                try:
                    await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                for seq, task in list(self._in_flight.items()):
                    if task.done():
                        del self._in_flight[seq]
                if self._failures:
                    delay = min(self.max_backoff, 0.5 * 2 ** min(self._failures, 10)) * random.uniform(0.5, 1.0)
                    log.info("server unreachable (%s); next try in %.1f s", self.stats.last_error, delay)
                    await self.clock.sleep(delay)
        finally:
            await cancel_and_wait(self._in_flight.values())

    async def drained(self) -> bool:
        """Wait until nothing is left to deliver (True), or only entries the server refused are (False).

        Bound it with ``asyncio.timeout`` where the caller cannot wait forever.
        """
        while True:
            held = self.buffer.entries()
            if not held:
                return True
            if all(e.seq in self.stats.refused_until or e.seq in self._held for e in held):
                return False
            self._idle.clear()
            self.wake()
            await self._idle.wait()

    async def _throttle(self, nbytes: int) -> None:
        if not self.bandwidth_bps:
            return
        now = self.clock.monotonic()
        start = max(now, self._bucket_time)
        self._bucket_time = start + nbytes * 8 / self.bandwidth_bps
        if start > now:
            await self.clock.sleep(start - now)

    async def _deliver(self, entry: BufferedEntry) -> None:
        try:
            await self._deliver_once(entry)
            self._failures = 0
            self.stats.delivered += 1
            self.stats.refused_until.pop(entry.seq, None)
        except Unreachable as exc:
            self._failures += 1
            self.stats.retries += 1
            self.stats.last_error = exc.message
        except Refused as exc:
            if exc.code in RETRY_AT_ONCE:
                self.stats.retries += 1
                self.stats.last_error = exc.message
                log.info("seq %d: %s; trying again with a fresh request", entry.seq, exc.message)
                return
            self.stats.refused += 1
            self.stats.last_error = exc.message
            self.stats.refused_until[entry.seq] = self.clock.monotonic() + REFUSED_RETRY_S
            log.error("server refused seq %d (%s); the chunk is kept and offered again later", entry.seq, exc.message)
            with contextlib.suppress(AgentError, RemoteProtocolError):
                if entry.state == ChunkState.UPLOADED:
                    self.buffer.mark(entry.seq, ChunkEvent.REJECT)
        except RemoteProtocolError as exc:
            # A receipt that does not verify frees nothing: keep the chunk and try again later.
            self.stats.receipts_rejected += 1
            self.stats.last_error = exc.message
            self.stats.refused_until[entry.seq] = self.clock.monotonic() + REFUSED_RETRY_S
            log.error("receipt for seq %d rejected: %s; the chunk is kept", entry.seq, exc.message)
        finally:
            self.wake()

    async def _deliver_once(self, entry: BufferedEntry) -> None:
        media, envelope = self.buffer.read(entry.seq)
        if self.direct_upload and entry.kind == "chunk" and not self.hold_uploads:
            try:
                await self._throttle(len(media))
                receipt = await self.client.deliver(entry.seq, envelope, media)
            except Refused as exc:
                if exc.code != "wrong_store":
                    raise
                log.info("the server no longer takes chunks directly (%s); announcing first", exc.message)
                self.direct_upload = False
            else:
                self.stats.bytes_uploaded += len(media)
                self.stats.direct += 1
                self._advance(entry.seq, ChunkEvent.ANNOUNCE)
                self._advance(entry.seq, ChunkEvent.UPLOAD)
                if receipt is None:  # failed a verification step: the verify request says which
                    receipt = (await self.client.verify(entry.seq)).get("receipt")
                self._take(entry.seq, receipt)
                return
        answer = await self.client.announce(envelope)
        self.direct_upload = answer.get("direct_upload") is True
        self._advance(entry.seq, ChunkEvent.ANNOUNCE)
        receipt = answer.get("receipt")
        if receipt is None and entry.kind == "chunk":
            if answer.get("state") not in ("uploaded", "verified"):
                if self.hold_uploads:
                    self._held.add(entry.seq)
                    return
                target = answer.get("upload")
                if not target:
                    raise Refused(200, "no_upload_target", "server gave no upload target for a chunk")
                await self._throttle(len(media))
                receipt = await self.client.upload(target, media)
                self.stats.bytes_uploaded += len(media)
            self._advance(entry.seq, ChunkEvent.UPLOAD)
            if receipt is None:
                receipt = (await self.client.verify(entry.seq)).get("receipt")
        self._take(entry.seq, receipt)

    def _take(self, seq: int, receipt: str | bytes | None) -> None:
        if receipt is None:
            raise Refused(200, "no_receipt", f"server gave no receipt for seq {seq}")
        self.accept(receipt.encode("ascii") if isinstance(receipt, str) else bytes(receipt))

    def _advance(self, seq: int, event: ChunkEvent) -> None:
        with contextlib.suppress(AgentError):
            self.buffer.mark(seq, event)

    def release_uploads(self) -> None:
        """End :attr:`hold_uploads`: deliver what was held back."""
        self.hold_uploads = False
        self._held.clear()
        self.wake()

    def committed(self, seq: int) -> None:
        """Note when ``seq`` was committed, to measure commit-to-receipt latency."""
        self._committed_at[seq] = time.perf_counter()

    def accept(self, receipt: bytes) -> BufferedEntry | None:
        """Take a receipt (from HTTP or MQTT); free the chunk when it verifies. None if already freed."""
        if receipt in self._taken:
            return None  # the same bytes already verified and freed their entry
        try:
            freed = self.buffer.accept_receipt(receipt, self.server_keys())
        except AgentError as exc:
            if "does not hold" in exc.message:
                return None  # already freed: the same receipt came by both paths
            raise
        self._taken[receipt] = None
        if len(self._taken) > TAKEN_RECEIPTS:
            self._taken.popitem(last=False)
        started = self._committed_at.pop(freed.seq, None)
        if started is not None and freed.kind == "chunk":
            # Real seconds, whatever clock the device runs on: this is what the latency goal is about.
            self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        return freed
