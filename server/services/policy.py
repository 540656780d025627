"""The recording-requirement list (音像记录事项清单): a versioned YAML file the agency edits.

The file says, per enforcement category and step activity, whether a step must be recorded:
``none``, ``key`` (footage linked to the step) or ``full`` (footage covering the step's whole
window, 全过程音像记录). The shipped default is ``server/policy/default.yaml``; its comments cite the
policy texts each rule comes from. Every version ever loaded is kept in ``recording_policies``;
the newest is in force, and each case step records the version that decided its requirement.

The words it uses (categories, activities, levels) are in server/case_terms.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from server.case_terms import ACTIVITIES, CATEGORIES, LEVELS
from server.config import Problem, _yaml_lines
from server.db.database import Database
from server.db.schema import recording_policies
from server.errors import Conflict, NotFound, Unprocessable

FORMAT = "custody/recording-requirements/v1"

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_TOP_KEYS = {"format", "version", "title", "default", "activities", "categories"}


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed, validated requirement list."""

    version: str
    title: str
    default: str
    activities: dict[str, str]
    categories: dict[str, dict[str, str]]
    text: str

    @property
    def sha256(self) -> str:
        """Hash of the exact text (what was loaded, comments included)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def requirement(self, category: str, activity: str) -> str:
        """The level for a step: the category's rule, else the activity's, else the default."""
        by_category = self.categories.get(category, {})
        if activity in by_category:
            return by_category[activity]
        return self.activities.get(activity, self.default)

    def table(self) -> dict[str, dict[str, str]]:
        """The resolved level of every category x activity (what the file means, spelled out)."""
        return {c: {a: self.requirement(c, a) for a in ACTIVITIES} for c in CATEGORIES}

    def to_json(self, *, with_text: bool = True) -> dict[str, Any]:
        """API form."""
        out: dict[str, Any] = {"version": self.version, "title": self.title, "sha256": self.sha256,
                               "default": self.default, "activities": self.activities,
                               "categories": self.categories, "table": self.table()}
        if with_text:
            out["text"] = self.text
        return out


class PolicyError(Unprocessable):
    """A requirement list that does not validate; ``problems`` lists each with its line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems), code="bad_policy",
                         problems=[str(p) for p in problems])


def parse_policy(text: str, name: str = "policy") -> Policy:
    """Parse and validate a requirement list; every problem is reported with ``NAME:LINE``."""
    problems: list[Problem] = []
    data, lines = _yaml_lines(text, problems, name)
    if problems:
        raise PolicyError(problems)

    def where(path: str) -> str:
        # The nearest enclosing key that has a line (a value's own line is its key's line).
        while path and path not in lines:
            path = path.rpartition(".")[0]
        return f"{name}:{lines.get(path, 1)}"

    def bad(path: str, message: str) -> None:
        problems.append(Problem(where(path), path, message))

    if not isinstance(data, dict):
        raise PolicyError([Problem(f"{name}:1", "", "a requirement list is a mapping (format, version, ...)")])
    for key in sorted(set(data) - _TOP_KEYS, key=str):
        bad(str(key), "unknown key")
    if data.get("format") != FORMAT:
        bad("format", f"must be {FORMAT!r}")
    version = data.get("version")
    if not isinstance(version, str | int | float) or not _VERSION_RE.fullmatch(str(version)):
        bad("version", "a version of 1 to 64 letters, digits and ._:- is required (it names the list in URLs)")
    title = data.get("title", "")
    if not isinstance(title, str) or len(title) > 200:
        bad("title", "must be text of at most 200 characters")

    def level(path: str, value: Any) -> str:
        if value not in LEVELS:
            bad(path, f"{value!r} is not one of {', '.join(LEVELS)}")
            return "none"
        return str(value)

    def activity_map(path: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            bad(path, "must be a mapping of activity: level")
            return {}
        out: dict[str, str] = {}
        for key, lvl in value.items():
            if key not in ACTIVITIES:
                bad(f"{path}.{key}", f"unknown activity (one of {', '.join(ACTIVITIES)})")
                continue
            out[str(key)] = level(f"{path}.{key}", lvl)
        return out

    default = level("default", data.get("default", "none"))
    activities = activity_map("activities", data.get("activities"))
    categories: dict[str, dict[str, str]] = {}
    raw_categories = data.get("categories") or {}
    if not isinstance(raw_categories, dict):
        bad("categories", "must be a mapping of category: {activity: level}")
        raw_categories = {}
    for key, value in raw_categories.items():
        if key not in CATEGORIES:
            bad(f"categories.{key}", f"unknown category (one of {', '.join(CATEGORIES)})")
            continue
        categories[str(key)] = activity_map(f"categories.{key}", value)
    if problems:
        raise PolicyError(problems)
    return Policy(version=str(version), title=str(title), default=default, activities=activities,
                  categories=categories, text=text)


def default_policy_text() -> str:
    """The shipped default list (package data)."""
    return resources.files("server.policy").joinpath("default.yaml").read_text(encoding="utf-8")


class PolicyService:
    """Versions of the requirement list in the database; the newest is in force."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._current: Policy | None = None
        self._current_id = 0

    async def bootstrap(self) -> None:
        """Load the shipped default when no list was ever loaded (first start)."""
        async with self.db.read() as conn:
            any_row = (await conn.execute(sa.select(recording_policies.c.id).limit(1))).first()
        if any_row is None:
            await self.load(default_policy_text(), "system:default")

    async def current(self) -> Policy:
        """The list in force (cached; another process may have loaded a newer one, so check the id)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(recording_policies.c.id, recording_policies.c.text)
                                      .order_by(recording_policies.c.id.desc()).limit(1))).first()
        if row is None:
            raise NotFound("no recording-requirement list is loaded", code="no_policy")
        if self._current is None or row.id != self._current_id:
            self._current, self._current_id = parse_policy(row.text), row.id
        return self._current

    async def load(self, text: str, actor: str) -> tuple[Policy, bool]:
        """Validate and store a new version; the same text again is a no-op (False), a reused version a 409."""
        policy = parse_policy(text)
        async with self.db.write() as conn:
            existing = (await conn.execute(sa.select(recording_policies).where(
                recording_policies.c.version == policy.version))).first()
            if existing is not None:
                if existing.sha256 == policy.sha256:
                    latest = (await conn.execute(sa.select(sa.func.max(recording_policies.c.id)))).scalar()
                    if latest == existing.id:
                        return policy, False
                raise Conflict(f"version {policy.version!r} was already loaded with other content (or is no longer "
                               "the newest): give the edited list a new version", code="policy_version_exists")
            await conn.execute(recording_policies.insert().values(
                version=policy.version, text=text, sha256=policy.sha256, loaded_ms=self.clock.now_ms(),
                loaded_by=actor))
        return policy, True

    async def versions(self) -> list[dict[str, Any]]:
        """Every version loaded, oldest first (without the text)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(
                recording_policies.c.version, recording_policies.c.sha256, recording_policies.c.loaded_ms,
                recording_policies.c.loaded_by).order_by(recording_policies.c.id))).all()
        return [dict(r._mapping) for r in rows]

    async def version(self, version: str) -> Policy:
        """One version as it was loaded."""
        async with self.db.read() as conn:
            text = (await conn.execute(sa.select(recording_policies.c.text).where(
                recording_policies.c.version == version))).scalar()
        if text is None:
            raise NotFound(f"no recording-requirement list version {version!r}", code="unknown_policy_version")
        return parse_policy(text)
