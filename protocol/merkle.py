"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs, and their verification (pure).

Leaf hash ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``. The
verification functions follow RFC 9162 §2.1.3.2 and §2.1.4.2 in the formulation of
transparency-dev/merkle (whose test vectors, in ../shared/vectors, the tests run in full).

Proof *generation* reads hashes of perfect subtrees through a :class:`NodeReader`: the server
stores one hash per perfect subtree (about two per leaf), so roots and proofs cost O(log² n)
reads at any tree size instead of rehashing every leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from protocol.errors import LocalProtocolError, ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: ``reader(level, index)`` returns the hash of the perfect subtree of 2**level leaves starting
#: at leaf ``index << level``.
NodeReader = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(reader: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) from perfect-subtree hashes (``start`` aligned as RFC 6962 recursion keeps it)."""
    n = end - start
    if n <= 0:
        raise LocalProtocolError("empty range has no subtree hash")
    if n & (n - 1) == 0 and start % n == 0:
        return reader(n.bit_length() - 1, start // n)
    k = _largest_power_of_two_below(n)
    return node_hash(subtree_hash(reader, start, start + k), subtree_hash(reader, start + k, end))


def root_hash(reader: NodeReader, size: int) -> bytes:
    """Root of the tree of the first ``size`` leaves (SHA-256 of nothing for the empty tree)."""
    return EMPTY_ROOT if size == 0 else subtree_hash(reader, 0, size)


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size])."""
    if not 0 <= index < size:
        raise LocalProtocolError(f"leaf {index} is not in a tree of size {size}")

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*path(m, start, start + k), subtree_hash(reader, start + k, end)]
        return [*path(m - k, start + k, end), subtree_hash(reader, start, start + k)]

    return path(index, 0, size)


def consistency_proof(reader: NodeReader, size1: int, size2: int) -> list[bytes]:
    """RFC 6962 PROOF(size1, D[0:size2])."""
    if not 0 <= size1 <= size2:
        raise LocalProtocolError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0:
        raise LocalProtocolError("no consistency proof from an empty tree")
    if size1 == size2:
        return []

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [subtree_hash(reader, start, end)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), subtree_hash(reader, start + k, end)]
        return [*subproof(m - k, start + k, end, False), subtree_hash(reader, start, start + k)]

    return subproof(size1, 0, size2, True)


class MemoryTree:
    """An in-memory tree that keeps every perfect-subtree hash: for tests, tools and verifiers."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def append_hash(self, h: bytes) -> int:
        """Append a leaf hash; return its index."""
        index = self.size
        self.levels[0].append(h)
        level, i = 0, index
        while i % 2 == 1:  # this leaf completed a perfect subtree at the next level up
            if len(self.levels) <= level + 1:
                self.levels.append([])
            self.levels[level + 1].append(node_hash(self.levels[level][i - 1], self.levels[level][i]))
            level, i = level + 1, i // 2
        return index

    def append(self, data: bytes) -> int:
        """Append leaf data; return its index."""
        return self.append_hash(leaf_hash(data))

    def node(self, level: int, index: int) -> bytes:
        """A perfect-subtree hash (a :data:`NodeReader`)."""
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """Root at ``size`` (default: now)."""
        return root_hash(self.node, self.size if size is None else size)


# -- verification (RFC 9162) ------------------------------------------------------------------


def _check_hashes(proof: Sequence[bytes], *others: bytes) -> None:
    for h in (*proof, *others):
        if len(h) != HASH_SIZE:
            raise ProofError(f"hash of {len(h)} bytes in proof (expected {HASH_SIZE})", code="bad_proof_hash")


def _decomp_incl_proof(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies; raise :class:`ProofError` if its shape is wrong."""
    if index < 0 or index >= size:
        raise ProofError(f"leaf index {index} is beyond tree size {size}", code="bad_proof_index")
    _check_hashes(proof, leaf)
    inner, border = _decomp_incl_proof(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, expected {inner + border}", code="bad_proof_size")
    res = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(res, proof[inner:])


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``root``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of size {size}",
                         code="root_mismatch")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows tree ``root1`` (size1) is a prefix of ``root2`` (size2)."""
    if size1 < 0 or size2 < size1:
        raise ProofError(f"size {size2} is smaller than size {size1}", code="bad_proof_size")
    if size1 == 0:
        # Every tree extends the empty tree, so such a "proof" proves nothing; a caller asking for
        # one has no earlier checkpoint and must say so rather than treat this as verified.
        raise ProofError("no consistency proof from an empty tree (size1 is 0)", code="bad_proof_size")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal but the consistency proof is not empty", code="bad_proof_size")
        if root1 != root2:
            raise ProofError("two different roots for the same tree size", code="root_mismatch")
        return
    if not proof:
        raise ProofError("consistency proof is empty", code="bad_proof_size")
    _check_hashes(proof, root1, root2)
    inner, border = _decomp_incl_proof(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    seed, start = proof[0], 1
    if size1 == 1 << shift:
        seed, start = root1, 0
    if len(proof) != start + inner + border:
        raise ProofError(
            f"consistency proof has {len(proof)} hashes, expected {start + inner + border}", code="bad_proof_size"
        )
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if hash1 != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}", code="root_mismatch")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if hash2 != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}", code="root_mismatch")
