"""The guard against a log that rolled back: at start, the tree must contain the last checkpoint published.

A restored backup, a database copied from an older snapshot, or a PostgreSQL point-in-time
recovery can bring back a log that is shorter than what the server already published to devices,
witnesses and verifiers, or one that differs from it. Serving on from such a log would sign
checkpoints that fork the published history, so the server refuses to start and says why.

The last published checkpoint lives outside the database and outside backups (the data dir's
``published-checkpoint`` file, written after each checkpoint is stored). :func:`judge` is the pure
decision; the start-up wiring reads the file, checks its signature and computes the root.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import ConfigError


class LogRolledBack(ConfigError):
    """The database's log is behind, or not an extension of, the last checkpoint published."""

    code = "log_rolled_back"


@dataclass(frozen=True, slots=True)
class Published:
    """The last checkpoint this server published: tree size and root hash."""

    size: int
    root: bytes
    origin: str


def judge(published: Published | None, tree_size: int, root_at_published: bytes | None) -> str:
    """Refuse (raise :class:`LogRolledBack`) unless the tree extends the published checkpoint; say what was checked.

    ``root_at_published`` is the database tree's root at ``published.size`` (None when the tree is smaller).
    """
    # (1) nothing published yet (first start, or a data dir that never published): nothing to roll back past
    if published is None:
        return "no published checkpoint to check against"
    # (2) the tree must reach the published size
    if tree_size < published.size:
        raise LogRolledBack(
            f"refusing to start: the database's log has {tree_size} leaves but checkpoint {published.size} of "
            f"{published.origin} was already published; this database is older than what devices, witnesses and "
            "verifiers have seen (a restored backup or an old snapshot?). Restore a newer backup or the database "
            "the server last ran on; starting from this one would fork the published log")
    # (3) and hold the same leaves up to it
    if root_at_published != published.root:
        raise LogRolledBack(
            f"refusing to start: the database's log has a different root at size {published.size} than the "
            f"checkpoint {published.size} of {published.origin} that was published; the log was altered or this "
            "database belongs to another history. Restore the database the server last ran on")
    return f"the log ({tree_size} leaves) extends the published checkpoint {published.size}"
