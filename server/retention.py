"""Retention classes and the expiry decision: pure functions, no I/O, no clock.

Like Frigate's ``SegmentInfo.should_discard_segment``, the whole decision of whether a piece of
footage may leave is one function of facts the caller gathered and the time it passes in:

- **unlinked**: footage linked to no case step is kept ``unlinked_days`` after it was received;
- **case**: footage linked to a case is kept until the case's life ended (its last step completed or
  was cancelled) plus ``case_years``; while any linked case is open there is no end yet;
- **indefinite**: footage linked to the decision step of a major case, or to any step of a case
  whose major decision a legal reviewer signed off (the footage the review saw), is kept for ever
  (on S3 by an Object Lock legal hold, since retention dates have no "for ever").

Retention only grows: the end a recording was once given is a floor (``floor_ms``), so unlinking
footage never brings its expiry forward. A legal hold on the recording or on any case it is
linked to stops expiry whatever the class says.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS + DAY_MS // 4  # a Julian year: "N years" never falls short on leap years

UNLINKED, CASE, INDEFINITE = "unlinked", "case", "indefinite"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The configured classes (server/config.py RetentionConfig)."""

    unlinked_days: int = 183
    case_years: int = 2


@dataclass(frozen=True, slots=True)
class CaseLife:
    """What retention needs of a linked case."""

    case_id: int
    ended_ms: int | None  # None while any of its steps is still planned or in progress


@dataclass(frozen=True, slots=True)
class FootageFacts:
    """Everything the decision looks at for one recording (device, recording id)."""

    device_id: str
    recording_id: str
    received_ms: int  # the server's time of the recording's first entry
    cases: tuple[CaseLife, ...] = ()
    major_decision: bool = False  # linked to a major case's decision step, or reviewed in a sign-off
    held: bool = False  # a legal hold on the recording or on a linked case is in force
    floor_ms: int | None = None  # the retention end given earlier (never shortened)
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Retention:
    """A recording's class and the end of its retention (None: no end, for now or for ever)."""

    klass: str
    until_ms: int | None

    @property
    def indefinite(self) -> bool:
        """True when no date ends it."""
        return self.until_ms is None


def retention_for(facts: FootageFacts, policy: RetentionPolicy) -> Retention:
    """The recording's retention class and end, never earlier than its floor."""
    if facts.major_decision:
        return Retention(INDEFINITE, None)
    until = facts.received_ms + policy.unlinked_days * DAY_MS
    klass = UNLINKED
    if facts.cases:
        klass = CASE
        if any(c.ended_ms is None for c in facts.cases):
            return Retention(CASE, None)  # an open case: its footage's end is not known yet
        until = max(until, max(c.ended_ms or 0 for c in facts.cases) + policy.case_years * YEAR_MS)
    if facts.floor_ms is not None:
        until = max(until, facts.floor_ms)
    return Retention(klass, until)


def should_expire(facts: FootageFacts, now_ms: int, policy: RetentionPolicy) -> bool:
    """True exactly when the recording's retention has ended and no hold applies."""
    if facts.removed or facts.held:
        return False
    retention = retention_for(facts, policy)
    return retention.until_ms is not None and now_ms >= retention.until_ms
