"""Chain verification: a device's entries form one hash chain over a device-wide sequence.

:func:`verify_chain` checks an ordered list of entry envelopes as a numbered checklist (like
sigstore's verifier): every failing step names the entries and the reason. :class:`ChainTracker`
is the incremental form the server keeps per device: entries arrive in any order, a missing
sequence number is a provisional gap finding that closes itself when the entry arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocol import findings as F
from protocol.envelope import Envelope
from protocol.errors import RemoteProtocolError
from protocol.findings import Finding
from protocol.keys import VerifyKey
from protocol.messages import GENESIS_PREV, ChunkManifest, RecordingEvent, parse_entry

AnyEntry = ChunkManifest | RecordingEvent


def entry_hash(envelope_bytes: bytes) -> str:
    """Hex SHA-256 of the exact envelope bytes: what the next entry's ``prev`` must hold."""
    return hashlib.sha256(envelope_bytes).hexdigest()


@dataclass(frozen=True, slots=True)
class CheckedEntry:
    """An entry that parsed, with its envelope and hash."""

    position: int
    envelope: Envelope
    entry: AnyEntry
    hash: str


@dataclass(slots=True)
class ChainStep:
    """One numbered step of the checklist."""

    number: int
    title: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the step found nothing."""
        return not self.findings


@dataclass(slots=True)
class ChainReport:
    """The checklist's outcome."""

    device_id: str
    steps: list[ChainStep]
    entries: list[CheckedEntry]

    @property
    def ok(self) -> bool:
        """True when every step passed."""
        return all(step.passed for step in self.steps)

    @property
    def findings(self) -> list[Finding]:
        """Every finding, in step order."""
        return [f for step in self.steps for f in step.findings]

    def lines(self) -> list[str]:
        """The checklist as text, one line per step and one per finding."""
        out = []
        for step in self.steps:
            mark = "ok  " if step.passed else "FAIL"
            out.append(f"({step.number}) {mark} {step.title}")
            out.extend(f"      {f.code.code}: {f.message}" for f in step.findings)
        return out


def verify_chain(
    envelopes: Sequence[bytes | Envelope],
    key: VerifyKey,
    *,
    start_seq: int | None = 0,
) -> ChainReport:
    """Verify an ordered list of a device's entries.

    ``start_seq`` is the sequence number the list must start at (0 for a whole chain; ``None``
    when verifying a slice whose first ``prev`` cannot be checked).

    Steps:
      (1) every item is a well-formed signed chain entry;
      (2) every signature verifies with the device key;
      (3) every entry names the device of that key;
      (4) no entry is presented twice (replay);
      (5) sequence numbers increase in the order given (no reordering);
      (6) no sequence number is used twice and no two entries share a predecessor (fork);
      (7) no sequence number is missing (gap);
      (8) every entry's ``prev`` is the hash of the entry before it.
    """
    device_id = key.device_id
    steps = [
        ChainStep(1, "entries are well-formed signed chain entries"),
        ChainStep(2, f"signatures verify with device key {key.key_id}"),
        ChainStep(3, f"entries belong to device {device_id}"),
        ChainStep(4, "no entry is replayed"),
        ChainStep(5, "sequence numbers are in order"),
        ChainStep(6, "no sequence number is reused and the chain does not fork"),
        ChainStep(7, "no sequence number is missing"),
        ChainStep(8, "each entry links to the hash of the one before"),
    ]
    s = {step.number: step.findings for step in steps}

    # (1) parse
    checked: list[CheckedEntry] = []
    for pos, item in enumerate(envelopes):
        try:
            env = item if isinstance(item, Envelope) else Envelope.from_bytes(item)
            entry = parse_entry(env)
        except RemoteProtocolError as exc:
            s[1].append(Finding(F.ENTRY_MALFORMED, device_id, f"item {pos}: {exc}", {"position": pos}))
            continue
        checked.append(CheckedEntry(pos, env, entry, entry_hash(env.raw)))

    # (2) signatures: an entry that fails here is excluded from the chain checks below, because
    # nothing it says can be believed.
    trusted: list[CheckedEntry] = []
    for c in checked:
        try:
            c.envelope.verify(key)
        except RemoteProtocolError as exc:
            s[2].append(Finding(F.SIGNATURE_INVALID, device_id, f"seq {c.entry.seq}: {exc}", _ev(c)))
            continue
        trusted.append(c)

    # (3) device
    own: list[CheckedEntry] = []
    for c in trusted:
        if c.entry.device_id != device_id:
            s[3].append(
                Finding(F.CHAIN_WRONG_DEVICE, device_id, f"seq {c.entry.seq} names device {c.entry.device_id}", _ev(c))
            )
            continue
        own.append(c)

    # (4) replay
    seen: dict[str, CheckedEntry] = {}
    unique: list[CheckedEntry] = []
    for c in own:
        first = seen.get(c.hash)
        if first is not None:
            s[4].append(
                Finding(
                    F.CHAIN_REPLAY,
                    device_id,
                    f"seq {c.entry.seq} presented again at item {c.position} (first at item {first.position})",
                    _ev(c),
                )
            )
            continue
        seen[c.hash] = c
        unique.append(c)

    # (5) order
    highest: CheckedEntry | None = None
    for c in unique:
        if highest is not None and c.entry.seq < highest.entry.seq:
            s[5].append(
                Finding(
                    F.CHAIN_REORDERED,
                    device_id,
                    f"seq {c.entry.seq} comes after seq {highest.entry.seq}",
                    _ev(c),
                )
            )
        if highest is None or c.entry.seq > highest.entry.seq:
            highest = c

    # (6) reuse and fork
    by_seq: dict[int, CheckedEntry] = {}
    by_prev: dict[str, CheckedEntry] = {}
    for c in unique:
        other_prev = by_prev.get(c.entry.prev)
        other_seq = by_seq.get(c.entry.seq)
        if other_prev is not None:
            s[6].append(
                Finding(
                    F.CHAIN_FORK,
                    device_id,
                    f"seq {c.entry.seq} and seq {other_prev.entry.seq} both follow entry {c.entry.prev[:16]}…",
                    {**_ev(c), "other_hash": other_prev.hash},
                )
            )
        elif other_seq is not None:
            s[6].append(
                Finding(
                    F.CHAIN_SEQ_REUSE,
                    device_id,
                    f"seq {c.entry.seq} is used by two different entries",
                    {**_ev(c), "other_hash": other_seq.hash},
                )
            )
        by_seq.setdefault(c.entry.seq, c)
        by_prev.setdefault(c.entry.prev, c)

    # (7) gaps
    if by_seq:
        first_seq = start_seq if start_seq is not None else min(by_seq)
        for lo, hi in missing_ranges(by_seq.keys(), first_seq, max(by_seq)):
            s[7].append(
                Finding(
                    F.CHAIN_GAP,
                    device_id,
                    f"gap at seq {lo}" + (f"-{hi}" if hi != lo else "") + f" ({hi - lo + 1} missing)",
                    {"from_seq": lo, "to_seq": hi},
                )
            )

    # (8) links
    for seq, c in sorted(by_seq.items()):
        if seq == 0:
            expected: str | None = GENESIS_PREV
        else:
            before = by_seq.get(seq - 1)
            expected = before.hash if before is not None else None
        if expected is not None and c.entry.prev != expected:
            s[8].append(
                Finding(
                    F.CHAIN_PREV_MISMATCH,
                    device_id,
                    f"seq {seq}: prev {c.entry.prev[:16]}… is not the hash of seq {seq - 1} ({expected[:16]}…)",
                    {**_ev(c), "expected_prev": expected},
                )
            )
    return ChainReport(device_id, steps, checked)


def _ev(c: CheckedEntry) -> dict[str, object]:
    return {"seq": c.entry.seq, "position": c.position, "hash": c.hash}


def missing_ranges(present: Iterable[int], first: int, last: int) -> list[tuple[int, int]]:
    """Inclusive ranges of integers in ``[first, last]`` not in ``present``."""
    out: list[tuple[int, int]] = []
    expect = first
    for seq in sorted(set(present)):
        if seq < first:
            continue
        if seq > last:
            break
        if seq > expect:
            out.append((expect, seq - 1))
        expect = seq + 1
    if expect <= last:
        out.append((expect, last))
    return out


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What adding one entry to a :class:`ChainTracker` found."""

    new: bool
    findings: tuple[Finding, ...]


class ChainTracker:
    """Incremental chain state of one device, for entries arriving in any order, any number of times.

    Gaps are provisional: :meth:`open_gaps` lists what is missing now, up to the highest
    sequence known from entries or from the device's signed status (``known_last_seq``).
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._hash: dict[int, str] = {}
        self._prev: dict[int, str] = {}
        self._by_prev: dict[str, int] = {}
        self.known_last_seq: int | None = None

    def __contains__(self, seq: int) -> bool:
        return seq in self._hash

    def hash_at(self, seq: int) -> str | None:
        """Hash of the entry at ``seq``, if known."""
        return self._hash.get(seq)

    def add(self, seq: int, hash_: str, prev: str) -> LinkResult:
        """Record an entry; return whether it is new and what it reveals (reuse, fork, broken link)."""
        found: list[Finding] = []
        existing = self._hash.get(seq)
        if existing is not None:
            if existing == hash_:
                return LinkResult(False, ())
            return LinkResult(
                False,
                (
                    Finding(
                        F.CHAIN_SEQ_REUSE,
                        self.device_id,
                        f"seq {seq} is used by two different entries",
                        {"seq": seq, "hash": hash_, "other_hash": existing},
                    ),
                ),
            )
        sibling = self._by_prev.get(prev)
        if sibling is not None:
            found.append(
                Finding(
                    F.CHAIN_FORK,
                    self.device_id,
                    f"seq {seq} and seq {sibling} both follow entry {prev[:16]}…",
                    {"seq": seq, "hash": hash_, "other_seq": sibling},
                )
            )
        expected = GENESIS_PREV if seq == 0 else self._hash.get(seq - 1)
        if expected is not None and prev != expected:
            found.append(self._mismatch(seq, prev, expected, hash_))
        after_prev = self._prev.get(seq + 1)
        if after_prev is not None and after_prev != hash_:
            found.append(self._mismatch(seq + 1, after_prev, hash_, self._hash[seq + 1]))
        self._hash[seq] = hash_
        self._prev[seq] = prev
        self._by_prev.setdefault(prev, seq)
        return LinkResult(True, tuple(found))

    def _mismatch(self, seq: int, prev: str, expected: str, hash_: str) -> Finding:
        return Finding(
            F.CHAIN_PREV_MISMATCH,
            self.device_id,
            f"seq {seq}: prev {prev[:16]}… is not the hash of seq {seq - 1} ({expected[:16]}…)",
            {"seq": seq, "hash": hash_, "expected_prev": expected},
        )

    def note_status(self, last_seq: int | None) -> None:
        """Take the device's signed claim of its last committed sequence (continuity)."""
        if last_seq is not None and (self.known_last_seq is None or last_seq > self.known_last_seq):
            self.known_last_seq = last_seq

    @property
    def last_seq(self) -> int | None:
        """Highest sequence known from entries or status."""
        highest = max(self._hash) if self._hash else None
        candidates = [x for x in (highest, self.known_last_seq) if x is not None]
        return max(candidates) if candidates else None

    def open_gaps(self) -> list[tuple[int, int]]:
        """Inclusive ranges of sequence numbers known to exist but not received."""
        last = self.last_seq
        if last is None:
            return []
        return missing_ranges(self._hash.keys(), 0, last)
