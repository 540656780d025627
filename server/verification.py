"""A chunk's verification as a numbered checklist, like sigstore's verifier.

Each step has a number, a title and an outcome; a failing step names itself and why. Outcomes:

- ``pass``;
- ``fail``: the chunk is rejected (no receipt), the bytes stay stored, a finding is recorded;
- ``provisional``: cannot be decided yet (the previous entry has not arrived: a gap finding is
  open and closes itself when it does); not a refusal;
- ``finding``: a fact recorded as a finding (a broken chain link) that does not stop the receipt,
  because the receipt attests this entry's integrity and authenticity, and refusing it would only
  keep the evidence on a device that may be lost;
- ``skipped``: not applicable (a recording event has no bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASS, FAIL, PROVISIONAL, FINDING, SKIPPED = "pass", "fail", "provisional", "finding", "skipped"

#: The steps, in order. Titles are stable: clients and docs refer to them.
STEP_BYTES = (1, "stored bytes' size and SHA-256 match the entry")
STEP_SIGNATURE = (2, "entry signature verifies with the device's enrolled key")
STEP_CHAIN = (3, "entry links to the previous entry of the device's chain")
STEP_MEDIA = (4, "media structure, sample counts and duration match the entry")
STEP_STORAGE = (5, "stored object is write-once")


@dataclass(slots=True)
class Step:
    """One step's outcome."""

    number: int
    title: str
    status: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"number": self.number, "title": self.title, "status": self.status, "detail": self.detail}


@dataclass(slots=True)
class Checklist:
    """The steps run so far."""

    steps: list[Step] = field(default_factory=list)

    def add(self, step: tuple[int, str], status: str, detail: str = "") -> Step:
        """Record a step's outcome."""
        s = Step(step[0], step[1], status, detail)
        self.steps.append(s)
        return s

    @property
    def failed(self) -> Step | None:
        """The first failing step, if any."""
        return next((s for s in self.steps if s.status == FAIL), None)

    def to_json(self) -> list[dict[str, Any]]:
        """JSON form."""
        return [s.to_json() for s in self.steps]

    def lines(self) -> list[str]:
        """Human-readable checklist."""
        return [f"({s.number}) {s.status:<11} {s.title}" + (f": {s.detail}" if s.detail else "") for s in self.steps]
