"""The Merkle tree in the database: the single sequencer, perfect-subtree nodes, roots and proofs.

Appending happens inside the caller's write transaction (an entry is accepted and logged in one
commit, or neither). The ``log_state`` row is the sequencer: on PostgreSQL appenders take its
row lock (``SELECT ... FOR UPDATE``) and wait for each other however many server processes run;
SQLite has one writer (and :class:`server.db.database.Database` queues writers), so the plain
read is already serialized. The lock is taken as late as possible in a transaction and held
until it commits: appending is the last thing an ingest transaction does.

Hash arithmetic is :mod:`protocol.merkle`'s; this module only decides which perfect-subtree
hashes to read. Proof shapes depend on sizes alone, so a first pass with a recording reader
collects every (level, index) a proof needs and one query fetches them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from protocol.merkle import consistency_proof, inclusion_proof, leaf_hash, node_hash, root_hash
from server.db.dialect import insert_ignore
from server.db.schema import log_leaves, log_nodes, log_state

T = TypeVar("T")
Node = tuple[int, int]
_ZERO = bytes(32)


async def ensure_state(conn: AsyncConnection, now_ms: int) -> None:
    """Create the sequencer row if this database has none yet (safe from several processes)."""
    await insert_ignore(conn, log_state, {"id": 1, "size": 0, "updated_ms": now_ms}, ["id"])


# Appending runs once per accepted entry: its statements are built once (building one costs about
# twice what running it does). FOR UPDATE renders as nothing on SQLite, whose writer queue
# already serialises appenders.
_LOCKED_SIZE = sa.select(log_state.c.size).where(log_state.c.id == 1).with_for_update()
_LEAVES_OF_SUBJECTS = sa.select(log_leaves.c.subject, log_leaves.c.idx).where(
    log_leaves.c.subject.in_(sa.bindparam("b_subjects", expanding=True)))
_NODES = sa.select(log_nodes.c.level, log_nodes.c.idx, log_nodes.c.hash).where(
    sa.tuple_(log_nodes.c.level, log_nodes.c.idx).in_(sa.bindparam("b_nodes", expanding=True)))
_INSERT_LEAF = log_leaves.insert()
_INSERT_NODES = log_nodes.insert()
_SET_SIZE = log_state.update().where(log_state.c.id == 1)


async def locked_size(conn: AsyncConnection) -> int:
    """The tree size, with the sequencer lock held until the caller's transaction ends."""
    size = (await conn.execute(_LOCKED_SIZE)).scalar_one_or_none()
    if size is None:
        raise RuntimeError("log_state has no row: the log service did not start")
    return int(size)


async def current_size(conn: AsyncConnection) -> int:
    """The committed tree size (no lock)."""
    size = (await conn.execute(sa.select(log_state.c.size).where(log_state.c.id == 1))).scalar_one_or_none()
    return int(size or 0)


def _frontier(size: int) -> list[Node]:
    """The perfect subtrees that tile the first ``size`` leaves: one per 1 bit of ``size``.

    Appending any number of leaves after ``size`` combines only with these and with what the
    appends themselves make: a left sibling wholly among the first ``size`` leaves whose right
    sibling reaches past them is a maximal perfect subtree of the first ``size``.
    """
    return [(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1]


async def append_leaf(conn: AsyncConnection, kind: str, subject: str, data: bytes, now_ms: int) -> tuple[int, bool]:
    """Append leaf ``data`` about ``subject``; return (index, True), or (earlier index, False) if logged already."""
    return (await append_leaves(conn, [(kind, subject, data)], now_ms))[0]


async def append_leaves(conn: AsyncConnection, leaves: Sequence[tuple[str, str, bytes]], now_ms: int
                        ) -> list[tuple[int, bool]]:
    """Append ``(kind, subject, data)`` leaves in order under one sequencer lock.

    Returns (index, True) for each leaf appended, or (earlier index, False) for a subject logged
    already (also earlier in the same call). However many leaves, the same five statements: the
    lock, the subjects already logged, the frontier's hashes, then the leaves, the new nodes and
    the size, each in one statement; so appending what has queued up costs little more than one.
    """
    size = await locked_size(conn)
    subjects = sorted({subject for _, subject, _ in leaves})
    # Checked under the lock: two processes logging the same subject cannot both append it.
    logged: dict[str, int] = {}
    for start in range(0, len(subjects), 500):
        rows = (await conn.execute(_LEAVES_OF_SUBJECTS, {"b_subjects": subjects[start:start + 500]})).all()
        logged.update({r.subject: int(r.idx) for r in rows})
    known = await read_nodes(conn, _frontier(size))
    placed: list[tuple[int, bool]] = []
    new_leaves: list[dict[str, object]] = []
    new_nodes: list[dict[str, object]] = []
    index = size
    for kind, subject, data in leaves:
        if subject in logged:
            placed.append((logged[subject], False))
            continue
        h = leaf_hash(data)
        new_leaves.append({"idx": index, "kind": kind, "subject": subject, "leaf": data, "leaf_hash": h.hex(),
                           "created_ms": now_ms})
        new_nodes.append({"level": 0, "idx": index, "hash": h})
        level, i, current = 0, index, h
        known[(0, index)] = h
        while i % 2 == 1:
            current = node_hash(known[(level, i - 1)], current)
            level, i = level + 1, i // 2
            known[(level, i)] = current
            new_nodes.append({"level": level, "idx": i, "hash": current})
        logged[subject] = index
        placed.append((index, True))
        index += 1
    if new_leaves:
        await conn.execute(_INSERT_LEAF, new_leaves)
        await conn.execute(_INSERT_NODES, new_nodes)
        await conn.execute(_SET_SIZE, {"size": index, "updated_ms": now_ms})
    return placed


async def read_nodes(conn: AsyncConnection, wanted: Iterable[Node]) -> dict[Node, bytes]:
    """Perfect-subtree hashes by (level, index); raise when one is missing (a bug or a damaged database)."""
    pairs = sorted(set(wanted))
    out: dict[Node, bytes] = {}
    for start in range(0, len(pairs), 500):
        part = pairs[start:start + 500]
        rows = (await conn.execute(_NODES, {"b_nodes": part})).all()
        out.update({(int(r.level), int(r.idx)): bytes(r.hash) for r in rows})
    missing = [p for p in pairs if p not in out]
    if missing:
        raise RuntimeError(f"log nodes missing from the database: {missing[:5]}")
    return out


async def _with_nodes(conn: AsyncConnection, compute: Callable[[Callable[[int, int], bytes]], T]) -> T:
    wanted: set[Node] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return _ZERO

    compute(record)
    nodes = await read_nodes(conn, wanted)
    return compute(lambda level, index: nodes[(level, index)])


async def tree_root(conn: AsyncConnection, size: int) -> bytes:
    """Root hash of the first ``size`` leaves."""
    return await _with_nodes(conn, lambda r: root_hash(r, size))


async def tree_inclusion(conn: AsyncConnection, index: int, size: int) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return await _with_nodes(conn, lambda r: inclusion_proof(r, index, size))


async def tree_consistency(conn: AsyncConnection, size1: int, size2: int) -> list[bytes]:
    """Consistency proof from ``size1`` to ``size2``."""
    return await _with_nodes(conn, lambda r: consistency_proof(r, size1, size2))
