"""Golden files pin the exact bytes of every wire type (see tests/golden/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from protocol.checkpoint import NoteVerifier, SignedNote, open_checkpoint
from protocol.enrollment import EnrollmentToken, open_enrollment_answer
from protocol.envelope import Envelope
from protocol.httpsig import SignedRequest
from protocol.leaves import LEAF_TYPES, parse_leaf
from protocol.merkle import leaf_hash
from protocol.messages import SIGNED_TYPES, ChunkManifest, EnrollmentRequest, payload_class
from tests.unit.protocol import samples as S

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
BUILT = S.golden_files()
SIGNED = {stem: (msg, key) for stem, msg, key in S.signed_samples()}
LEAVES = dict(S.leaf_samples())


def test_every_signed_type_has_a_golden_file() -> None:
    assert {type(msg).PAYLOAD_TYPE for msg, _ in SIGNED.values()} == set(SIGNED_TYPES)


def test_every_leaf_kind_has_a_golden_file() -> None:
    assert {leaf.KIND for leaf in LEAVES.values()} == set(LEAF_TYPES)


@pytest.mark.parametrize("stem", sorted(LEAVES))
def test_golden_leaf_parses_to_its_sample(stem: str) -> None:
    data = (GOLDEN / f"{stem}.leaf.json").read_bytes()
    leaf = parse_leaf(data)
    assert leaf == LEAVES[stem]
    assert leaf.to_bytes() == data  # canonical: the log hashes exactly these bytes
    assert leaf.hash() == leaf_hash(data)


def test_golden_directory_holds_exactly_the_built_files() -> None:
    on_disk = {p.name for p in GOLDEN.iterdir() if p.name not in {"README.md", "regenerate.py", ".gitattributes"}}
    assert on_disk == set(BUILT)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_rebuilt_bytes_equal_the_golden_file(name: str) -> None:
    assert BUILT[name] == (GOLDEN / name).read_bytes(), (
        f"{name} changed: this changes the wire contract (see tests/golden/README.md)"
    )


@pytest.mark.parametrize("stem", sorted(SIGNED))
def test_golden_envelope_parses_and_verifies(stem: str) -> None:
    data = (GOLDEN / f"{stem}.envelope.json").read_bytes()
    msg, key = SIGNED[stem]
    env = Envelope.from_bytes(data)
    assert env.raw == data
    assert env.to_bytes() == data
    cls = payload_class(env.payload_type)
    assert cls is type(msg)
    opened = cls.open(env, key.public)
    assert opened == msg
    assert opened.to_bytes() == env.payload  # the payload is canonical: re-encoding changes nothing


def test_golden_manifest_links_to_the_golden_start_event() -> None:
    start = Envelope.from_bytes((GOLDEN / "recording_event.envelope.json").read_bytes())
    manifest = Envelope.from_bytes((GOLDEN / "chunk_manifest.envelope.json").read_bytes())
    assert ChunkManifest.open(manifest, S.DEVICE_KEY.public).prev == start.hash.hex()


def test_golden_enrollment_request_is_self_signed() -> None:
    env = Envelope.from_bytes((GOLDEN / "enrollment_request.envelope.json").read_bytes())
    request = EnrollmentRequest.open_self_signed(env)
    assert request.device_id == S.DEVICE_ID
    assert EnrollmentToken.parse(request.token) == S.TOKEN


def test_golden_enrollment_answer_opens_as_a_device_would() -> None:
    token = EnrollmentToken.parse((GOLDEN / "enrollment_token.txt").read_text("ascii"))
    answer, cert = open_enrollment_answer(
        token, (GOLDEN / "enrollment_answer.envelope.json").read_bytes(), S.DEVICE_KEY.public.raw
    )
    assert cert.device_id == answer.device_id == S.DEVICE_ID
    assert answer.certificate == (GOLDEN / "device_certificate.envelope.json").read_bytes()


def test_golden_token_round_trips() -> None:
    text = (GOLDEN / "enrollment_token.txt").read_text("ascii")
    token = EnrollmentToken.parse(text)
    assert token == S.TOKEN
    assert token.to_string() == text


def test_golden_vkeys_parse_to_the_fixed_keys() -> None:
    log = NoteVerifier.from_vkey((GOLDEN / "log.vkey").read_text("ascii"))
    witness = NoteVerifier.from_vkey((GOLDEN / "witness.vkey").read_text("ascii"))
    assert log == S.LOG_VERIFIER
    assert witness == S.WITNESS_VERIFIER


def test_golden_checkpoint_verifies() -> None:
    data = (GOLDEN / "checkpoint.note").read_bytes()
    cp, note = open_checkpoint(data, S.LOG_VERIFIER)
    assert cp == S.checkpoint()
    assert note.text().encode("utf-8") == data
    assert cp.root == S.log_tree().root()


def test_golden_cosigned_checkpoint_verifies_for_log_and_witness() -> None:
    data = (GOLDEN / "checkpoint_cosigned.note").read_bytes()
    cp, note = open_checkpoint(data, S.LOG_VERIFIER)
    assert cp == S.checkpoint()
    assert note.verify(S.WITNESS_VERIFIER) == S.COSIGN_TIME
    assert SignedNote.parse(data).text().encode("utf-8") == data
    # The cosigned note is the signed note plus one line.
    assert data.startswith((GOLDEN / "checkpoint.note").read_bytes())


def test_golden_http_request_verifies() -> None:
    record = json.loads((GOLDEN / "http_request.json").read_bytes())
    body = base64.urlsafe_b64decode(record["body"] + "=" * (-len(record["body"]) % 4))
    request = SignedRequest.from_headers(record["headers"])
    request.verify(S.DEVICE_KEY.public, record["method"], record["path"], body, record["now_ms"])
    assert request.device_id == S.DEVICE_ID
