"""Every RFC 6962 vector of transparency-dev/merkle: a proof verifies exactly when wantErr is false."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import ProofError
from protocol.merkle import verify_consistency, verify_inclusion

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "vectors" / "rfc6962-merkle"
#: CI checks the repo out with the project's shared/ folder beside it.
SHARED = REPO.parent / "shared" / "vectors" / "rfc6962-merkle"


def _cases(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).rglob("*.json"))


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _proof(case: dict[str, Any]) -> list[bytes]:
    # Go marshals an empty proof (a nil slice) as null.
    return [_b64(h) for h in case["proof"] or []]


def test_copy_has_the_license_and_every_folder() -> None:
    assert "Apache License" in (VECTORS / "LICENSE").read_text()
    assert len(_cases("inclusion")) > 90
    assert len(_cases("consistency")) > 90


#: SHA-256 over the copy's files (relative path and bytes, in path order), taken when the copy was
#: made from shared/vectors and checked against it: the copy stays the vendored one wherever the
#: repo is checked out, with or without shared/ beside it.
COPY_DIGEST = "e6dd72e462c95f4c782751c3300202bbb43f3520ff6815c314030263c0e6d773"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file() and x.name != "ORIGIN.md"):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def test_copy_is_the_vendored_one() -> None:
    assert _digest(VECTORS) == COPY_DIGEST


def test_copy_matches_the_shared_vectors_when_they_are_beside_the_repo() -> None:
    if not SHARED.exists():  # the digest above already pins the copy
        return
    assert _digest(SHARED) == COPY_DIGEST
    shared = sorted(p.relative_to(SHARED) for p in SHARED.rglob("*") if p.is_file())
    ours = sorted(p.relative_to(VECTORS) for p in VECTORS.rglob("*") if p.is_file() and p.name != "ORIGIN.md")
    assert ours == shared


@pytest.mark.parametrize("path", _cases("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    case = _load(path)
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), _proof(case),
            _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    case = _load(path)
    args = (case["size1"], case["size2"], _proof(case), _b64(case["root1"]),
            _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)
