"""Merkle trees: MemoryTree's roots and proofs against a naive RFC 6962 reference, and tampering."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, ProofError
from protocol.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from tests.unit.protocol.strategies import PROPERTY

MAX_SIZE = 300


def _leaf(i: int) -> bytes:
    return i.to_bytes(4, "big")


@cache
def _tree() -> MemoryTree:
    tree = MemoryTree()
    for i in range(MAX_SIZE):
        tree.append(_leaf(i))
    return tree


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, literally."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert MemoryTree().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_rfc6962_reference_root_of_eight_leaves() -> None:
    """The root of the RFC 6962 test data (leaves "", 00, 10, 2021, 3031, 40414243, ...)."""
    leaves = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"]]
    tree = MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
    assert tree.root().hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@PROPERTY
@given(st.integers(0, MAX_SIZE))
def test_root_matches_the_reference_at_every_size(size: int) -> None:
    assert _tree().root(size) == _mth([_leaf(i) for i in range(size)])


@PROPERTY
@given(data=st.data())
def test_inclusion_proofs_verify_and_mutations_fail(data: st.DataObject) -> None:
    tree = _tree()
    size = data.draw(st.integers(1, MAX_SIZE))
    index = data.draw(st.integers(0, size - 1))
    root, leaf = tree.root(size), leaf_hash(_leaf(index))
    proof = inclusion_proof(tree.node, index, size)
    verify_inclusion(index, size, leaf, proof, root)
    assert root_from_inclusion_proof(index, size, leaf, proof) == root

    mutation = data.draw(st.sampled_from(["flip_proof", "flip_leaf", "drop", "append", "index", "root"]))
    bad_proof, bad_leaf, bad_index, bad_root = list(proof), leaf, index, root
    if mutation == "flip_proof" and proof:
        i, bit = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 255))
        bad_proof[i] = _flip(proof[i], bit)
    elif mutation == "flip_leaf" or (mutation == "flip_proof" and not proof):
        bad_leaf = _flip(leaf, data.draw(st.integers(0, 255)))
    elif mutation == "drop" and proof:
        del bad_proof[data.draw(st.integers(0, len(proof) - 1))]
    elif mutation in ("append", "drop"):
        bad_proof.insert(data.draw(st.integers(0, len(proof))), bytes(32))
    elif mutation == "index" and size > 1:
        bad_index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    else:
        bad_root = _flip(root, data.draw(st.integers(0, 255)))
    with pytest.raises(ProofError):
        verify_inclusion(bad_index, size, bad_leaf, bad_proof, bad_root)


@PROPERTY
@given(data=st.data())
def test_consistency_proofs_verify_and_mutations_fail(data: st.DataObject) -> None:
    tree = _tree()
    size2 = data.draw(st.integers(1, MAX_SIZE))
    size1 = data.draw(st.integers(1, size2))
    root1, root2 = tree.root(size1), tree.root(size2)
    proof = consistency_proof(tree.node, size1, size2)
    verify_consistency(size1, size2, proof, root1, root2)

    mutation = data.draw(st.sampled_from(["flip_proof", "drop", "append", "root1", "root2", "swap"]))
    bad_proof, bad_root1, bad_root2 = list(proof), root1, root2
    if mutation == "flip_proof" and proof:
        i, bit = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 255))
        bad_proof[i] = _flip(proof[i], bit)
    elif mutation == "drop" and proof:
        del bad_proof[data.draw(st.integers(0, len(proof) - 1))]
    elif mutation in ("append", "drop", "flip_proof"):
        bad_proof.insert(data.draw(st.integers(0, len(proof))), bytes(32))
    elif mutation == "root1":
        bad_root1 = _flip(root1, data.draw(st.integers(0, 255)))
    elif mutation == "root2":
        bad_root2 = _flip(root2, data.draw(st.integers(0, 255)))
    elif size1 != size2:
        bad_root1, bad_root2 = root2, root1
    else:
        bad_root2 = _flip(root2, 0)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, bad_proof, bad_root1, bad_root2)


def _flip(h: bytes, bit: int) -> bytes:
    out = bytearray(h)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_every_inclusion_and_consistency_proof_of_a_small_tree_verifies() -> None:
    tree = _tree()
    for size in range(1, 33):
        root = tree.root(size)
        for index in range(size):
            verify_inclusion(index, size, leaf_hash(_leaf(index)), inclusion_proof(tree.node, index, size), root)
        for size1 in range(1, size + 1):
            verify_consistency(size1, size, consistency_proof(tree.node, size1, size), tree.root(size1), root)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: inclusion_proof(t.node, 5, 5), "leaf 5 is not in a tree of size 5"),
        (lambda t: inclusion_proof(t.node, -1, 5), "leaf -1"),
        (lambda t: consistency_proof(t.node, 6, 5), "no consistency proof from size 6 to size 5"),
        (lambda t: consistency_proof(t.node, 0, 5), "from an empty tree"),
    ],
)
def test_asking_for_an_impossible_proof_is_our_error(call: Callable[[MemoryTree], object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        call(_tree())


@pytest.mark.parametrize(
    ("args", "code", "match"),
    [
        ((5, 5, bytes(32), [], bytes(32)), "bad_proof_index", "beyond tree size"),
        ((0, 2, bytes(32), [bytes(31)], bytes(32)), "bad_proof_hash", "31 bytes"),
        ((0, 2, bytes(32), [], bytes(32)), "bad_proof_size", "0 hashes, expected 1"),
        ((0, 2, bytes(32), [bytes(32)], bytes(32)), "root_mismatch", "does not lead to the root"),
    ],
)
def test_inclusion_errors_say_why(args: tuple[Any, ...], code: str, match: str) -> None:
    with pytest.raises(ProofError, match=match) as err:
        verify_inclusion(*args)
    assert err.value.code == code


def test_consistency_from_an_empty_tree_is_refused_not_vacuously_true() -> None:
    with pytest.raises(ProofError, match="size1 is 0") as err:
        verify_consistency(0, 5, [], EMPTY_ROOT, _tree().root(5))
    assert err.value.code == "bad_proof_size"


def test_memory_tree_keeps_perfect_subtrees() -> None:
    tree = MemoryTree()
    for i in range(7):
        assert tree.append(_leaf(i)) == i
    assert [len(level) for level in tree.levels] == [7, 3, 1]
    assert tree.node(2, 0) == _mth([_leaf(i) for i in range(4)])
