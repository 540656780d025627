"""The named bad-message corpus: each file is refused with its own error class, code and reason.

The expected outcome of every case is the table below, never the file, so that a change in
protocol/ that lets a bad message through (or refuses it for another reason) fails here. The
files are made by ``bad_messages/make_corpus.py`` from fixed keys; a test checks that running it
again reproduces them byte for byte.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.chain import verify_chain
from protocol.checkpoint import open_checkpoint
from protocol.enrollment import EnrollmentToken, open_enrollment_answer
from protocol.envelope import Envelope
from protocol.errors import (
    CustodyError,
    EncodingError,
    ProofError,
    RequestAuthError,
    SchemaError,
    SignatureError,
)
from protocol.httpsig import NonceWindow, SignedRequest
from protocol.merkle import verify_consistency, verify_inclusion
from protocol.messages import (
    ChunkManifest,
    Command,
    CommandAck,
    DeviceCertificate,
    DeviceStatus,
    EnrollmentRequest,
    KeyRotation,
    Receipt,
    open_entry,
)
from tests.unit.protocol import samples as S
from tests.unit.protocol.bad_messages import make_corpus

CORPUS = Path(__file__).resolve().parent / "bad_messages"
DEVICE, SERVER = S.DEVICE_KEY.public, S.SERVER_KEY.public


# -- how each kind of case is received -------------------------------------------------------------


def _env(data: bytes) -> Envelope:
    return Envelope.from_bytes(data)


def _requests(data: bytes) -> None:
    """Each request as the server takes it: parse headers, verify, then the nonce window."""
    records: Any = json.loads(data)
    window = NonceWindow()
    for r in records if isinstance(records, list) else [records]:
        body = base64.urlsafe_b64decode(r["body"] + "=" * (-len(r["body"]) % 4))
        request = SignedRequest.from_headers(r["headers"])
        request.verify(DEVICE, r["method"], r["path"], body, r["now_ms"])
        window.check_and_add(request.device_id, request.nonce, request.time_ms, r["now_ms"])


def _proof(data: bytes) -> None:
    case = json.loads(data)
    h = base64.b64decode
    if case["kind"] == "inclusion":
        verify_inclusion(case["leafIdx"], case["treeSize"], h(case["leafHash"]), [h(x) for x in case["proof"]],
                         h(case["root"]))
    else:
        verify_consistency(case["size1"], case["size2"], [h(x) for x in case["proof"]], h(case["root1"]),
                           h(case["root2"]))


RECEIVE: dict[str, Callable[[bytes], object]] = {
    "manifest": lambda d: ChunkManifest.open(_env(d), DEVICE),
    "entry": lambda d: open_entry(_env(d), DEVICE),
    "status": lambda d: DeviceStatus.open(_env(d), DEVICE),
    "ack": lambda d: CommandAck.open(_env(d), DEVICE),
    "key_rotation": lambda d: KeyRotation.open(_env(d), DEVICE),
    "command": lambda d: Command.open(_env(d), SERVER),
    "receipt": lambda d: Receipt.open(_env(d), SERVER),
    "certificate": lambda d: DeviceCertificate.open(_env(d), SERVER),
    "enrollment_request": lambda d: EnrollmentRequest.open_self_signed(_env(d)),
    "enrollment_answer": lambda d: open_enrollment_answer(S.TOKEN, d, DEVICE.raw),
    "token": lambda d: EnrollmentToken.parse(d.decode("utf-8")),
    "request": _requests,
    "checkpoint": lambda d: open_checkpoint(d, S.LOG_VERIFIER),
    "proof": _proof,
}


@dataclass(frozen=True)
class Refused:
    """Receiving the file as ``kind`` raises exactly ``error`` with ``code``, its message matching ``match``."""

    kind: str
    error: type[CustodyError]
    code: str
    match: str


E, Sc, Sg, R, P = EncodingError, SchemaError, SignatureError, RequestAuthError, ProofError

CASES: dict[str, Refused] = {
    # -- envelopes ----------------------------------------------------------------------------
    "manifest_bad_signature.json": Refused("manifest", Sg, "bad_signature", "signature does not verify with key"),
    "manifest_short_signature.json": Refused("manifest", Sg, "bad_signature", "signature does not verify"),
    "manifest_wrong_key.json": Refused("manifest", Sg, "wrong_key",
                                       f"signed by key {S.OTHER_DEVICE_KEY.key_id}, expected key {DEVICE.key_id}"),
    "manifest_wrong_payload_type.json": Refused("manifest", Sg, "wrong_payload_type",
                                                "payload type is 'custody/device-status/v1', "
                                                "expected 'custody/chunk-manifest/v1'"),
    "manifest_names_other_device.json": Refused("entry", Sg, "wrong_device",
                                                f"entry names device {S.OTHER_DEVICE_ID} but is signed by the key "
                                                f"of {S.DEVICE_ID}"),
    "command_unknown_algorithm.json": Refused("command", Sg, "unsupported_algorithm",
                                              "unsupported signature algorithm 'sm2'"),
    "manifest_truncated.json": Refused("manifest", E, "truncated", "Unterminated string"),
    "manifest_non_canonical.json": Refused("manifest", E, "not_canonical", "not in RFC 8785 canonical form"),
    "manifest_envelope_unknown_field.json": Refused("manifest", Sc, "unknown_field", "envelope: unknown field x5c"),
    "manifest_envelope_missing_signature.json": Refused("manifest", Sc, "missing_field", "envelope: missing sig"),
    "manifest_padded_base64.json": Refused("manifest", E, "bad_encoding", "payload is not unpadded base64url"),
    "envelope_oversize.json": Refused("manifest", E, "oversize", "bytes exceeds the limit of 65536"),
    "envelope_lone_surrogate.json": Refused("manifest", E, "bad_encoding", "lone surrogate"),
    # -- payload encoding (validly signed: a device can sign garbage too) ---------------------------
    "manifest_payload_keys_unsorted.json": Refused("manifest", E, "not_canonical", "canonical form"),
    "manifest_escaped_char.json": Refused("manifest", E, "not_canonical", "canonical form"),
    "manifest_leading_zero.json": Refused("manifest", E, "bad_encoding", "not JSON: Expecting ',' delimiter"),
    "manifest_float_number.json": Refused("manifest", E, "bad_encoding", "number 5000.0 is not an integer"),
    "manifest_duplicate_key.json": Refused("manifest", E, "bad_encoding", "duplicate key 'seq'"),
    "manifest_not_utf8.json": Refused("manifest", E, "bad_encoding", "not UTF-8 at byte"),
    "manifest_unsafe_integer.json": Refused("manifest", E, "bad_encoding", r"integer at \$\.size is outside"),
    "manifest_huge_integer.json": Refused("manifest", E, "bad_encoding", "4300 digits"),
    "manifest_deep_nesting.json": Refused("manifest", E, "bad_encoding", "nested too deeply"),
    # -- payload schema ----------------------------------------------------------------------
    "manifest_unknown_field.json": Refused("manifest", Sc, "unknown_field", "ChunkManifest: unknown field gps"),
    "manifest_missing_field.json": Refused("manifest", Sc, "missing_field", "ChunkManifest: missing field sha256"),
    "manifest_wrong_version.json": Refused("manifest", Sc, "unsupported_version",
                                           "version 2 is not supported .this build speaks v1"),
    "manifest_bool_as_int.json": Refused("manifest", Sc, "wrong_type", "field seq must be an integer"),
    "manifest_negative_seq.json": Refused("manifest", Sc, "out_of_range", "seq -1 is out of range"),
    "manifest_genesis_prev.json": Refused("manifest", Sc, "bad_genesis", "seq 0 must have prev = 32 zero bytes"),
    "manifest_bad_sha256.json": Refused("manifest", Sc, "bad_hash", "sha256 is not 64 lowercase hex digits"),
    "manifest_path_traversal_recording_id.json": Refused("manifest", Sc, "bad_id",
                                                         r"recording_id '\.\./\.\./etc' is not a valid identifier"),
    "manifest_time_out_of_range.json": Refused("manifest", Sc, "time_out_of_range",
                                               "start_ms 946684799999 is out of range"),
    "manifest_duration_too_long.json": Refused("manifest", Sc, "out_of_range", r"duration_ms 65001 is out of range"),
    "manifest_bad_codec.json": Refused("manifest", Sc, "bad_value", "field codec: CodecInfo: video 'mjpeg'"),
    "status_head_without_seq.json": Refused("status", Sc, "bad_schema", "last_seq and head are both set or both null"),
    "status_unknown_state.json": Refused("status", Sc, "bad_value", "state 'streaming' is not one of"),
    "ack_refused_without_reason.json": Refused("ack", Sc, "bad_schema", "an ack that is not ok must say why"),
    "key_rotation_short_key.json": Refused("key_rotation", Sc, "bad_key", "new_public_key must be 32 bytes"),
    # -- commands and receipts -----------------------------------------------------------------
    "command_expired_ttl_too_long.json": Refused("command", Sc, "bad_expiry", "within 24 h"),
    "command_expires_before_issued.json": Refused("command", Sc, "bad_expiry", "expires_ms must be after issued_ms"),
    "command_bad_nonce.json": Refused("command", Sc, "bad_nonce", "nonce is not 16-64 lowercase hex digits"),
    "command_forged_by_device.json": Refused("command", Sg, "wrong_key", f"expected key {SERVER.key_id}"),
    "receipt_log_index_beyond_size.json": Refused("receipt", Sc, "bad_schema", "log_index must be below tree_size"),
    "receipt_forged_by_device.json": Refused("receipt", Sg, "wrong_key", f"expected key {SERVER.key_id}"),
    # -- enrollment ---------------------------------------------------------------------------
    "enrollment_answer_wrong_server_key.json": Refused("enrollment_answer", Sg, "wrong_server_key",
                                                       "does not come from the server the token names"),
    "enrollment_answer_signed_by_other_key.json": Refused("enrollment_answer", Sg, "wrong_key",
                                                          f"signed by key {S.ROGUE_SERVER_KEY.key_id}"),
    "enrollment_answer_certificate_by_other_key.json": Refused("enrollment_answer", Sg, "wrong_key",
                                                               f"signed by key {S.ROGUE_SERVER_KEY.key_id}"),
    "enrollment_answer_other_device.json": Refused("enrollment_answer", Sg, "wrong_device",
                                                   "certifies another device's key"),
    "enrollment_answer_short_server_key.json": Refused("enrollment_answer", Sc, "bad_key",
                                                       r"server_keys\[0\]: ServerKey: public_key must be 32 bytes"),
    "certificate_device_id_mismatch.json": Refused("certificate", Sc, "wrong_device",
                                                   "device_id is not the id of public_key"),
    "enrollment_request_not_self_signed.json": Refused("enrollment_request", Sg, "wrong_key",
                                                       f"expected key {DEVICE.key_id}"),
    "token_damaged.txt": Refused("token", Sc, "bad_token", "enrollment token is damaged"),
    "token_truncated.txt": Refused("token", Sc, "bad_token", "enrollment token is damaged"),
    "token_wrong_prefix.txt": Refused("token", Sc, "bad_token", "it should start with 'cet1.'"),
    "token_missing_url.txt": Refused("token", Sc, "bad_token", "damaged: unexpected fields"),
    "token_not_https.txt": Refused("token", Sc, "bad_token", r"api url must be http\(s\)"),
    # -- signed HTTP requests -----------------------------------------------------------------
    "request_stale.json": Refused("request", R, "stale_request", "600 s away from the server's clock"),
    "request_replayed.json": Refused("request", R, "replayed_request", r"nonce was already used \(replay\)"),
    "request_body_mismatch.json": Refused("request", R, "body_hash_mismatch", "body does not match its signed"),
    "request_bad_signature.json": Refused("request", R, "bad_request_signature", "request signature does not verify"),
    "request_missing_header.json": Refused("request", R, "missing_auth", "missing header Custody-Signature"),
    "request_wrong_key.json": Refused("request", R, "wrong_key", f"is not the key of device {S.OTHER_DEVICE_ID}"),
    "request_time_not_ascii_digits.json": Refused("request", R, "bad_auth_header",
                                                  "Custody-Time is not milliseconds since the epoch"),
    # -- checkpoints and proofs ---------------------------------------------------------------
    "checkpoint_wrong_origin.note": Refused("checkpoint", P, "wrong_log",
                                            "checkpoint of log 'other.example/log', expected 'custody.example/log'"),
    "checkpoint_bad_signature.note": Refused("checkpoint", P, "bad_checkpoint_signature",
                                             "signature by custody.example/log does not verify"),
    "checkpoint_signed_by_impostor.note": Refused("checkpoint", P, "missing_checkpoint_signature",
                                                  "no signature by custody.example/log"),
    "checkpoint_not_signed_by_log.note": Refused("checkpoint", P, "missing_checkpoint_signature",
                                                 "no signature by custody.example/log"),
    "checkpoint_no_signature.note": Refused("checkpoint", P, "bad_checkpoint", "note has no signatures"),
    "checkpoint_size_leading_zero.note": Refused("checkpoint", P, "bad_checkpoint",
                                                 "size '042' is not a decimal number"),
    "checkpoint_size_not_ascii_digits.note": Refused("checkpoint", P, "bad_checkpoint",
                                                     "size '٤٢' is not a decimal number"),
    "inclusion_proof_wrong_leaf.json": Refused("proof", P, "root_mismatch",
                                               "inclusion proof for leaf 7 does not lead to the root of size 42"),
    "consistency_proof_truncated.json": Refused("proof", P, "bad_proof_size", "has 4 hashes, expected 5"),
    "consistency_proof_forked_log.json": Refused("proof", P, "root_mismatch",
                                                 "does not lead to the root of size 42"),
}


@dataclass(frozen=True)
class Found:
    """verify_chain reports exactly one finding: ``code`` at checklist step ``step``, about ``where``."""

    step: int
    code: str
    where: dict[str, int]
    match: str


CHAIN_CASES: dict[str, Found] = {
    "chain_malformed_entry": Found(1, "entry.malformed", {"position": 6},
                                   "item 6: payload type 'custody/device-status/v1' is not a chain entry"),
    "chain_foreign_signature": Found(2, "signature.invalid", {"seq": 5},
                                     f"seq 5: signed by key {S.OTHER_DEVICE_KEY.key_id}"),
    "chain_wrong_device": Found(3, "chain.wrong_device", {"seq": 5}, f"seq 5 names device {S.OTHER_DEVICE_ID}"),
    "chain_replay": Found(4, "chain.replay", {"seq": 2, "position": 3},
                          r"seq 2 presented again at item 3 \(first at item 2\)"),
    "chain_reordered": Found(5, "chain.reordered", {"seq": 2, "position": 3}, "seq 2 comes after seq 3"),
    "chain_seq_reuse": Found(6, "chain.seq_reuse", {"seq": 3, "position": 4},
                             "seq 3 is used by two different entries"),
    "chain_fork": Found(6, "chain.fork", {"seq": 3, "position": 4}, "seq 3 and seq 3 both follow entry"),
    "chain_seq_gap": Found(7, "chain.gap", {"from_seq": 3, "to_seq": 3}, r"gap at seq 3 \(1 missing\)"),
    "chain_missing_start": Found(7, "chain.gap", {"from_seq": 0, "to_seq": 0}, r"gap at seq 0 \(1 missing\)"),
    "chain_deleted_recording": Found(7, "chain.gap", {"from_seq": 6, "to_seq": 11},
                                     r"gap at seq 6-11 \(6 missing\)"),
    "chain_prev_mismatch": Found(8, "chain.prev_mismatch", {"seq": 4, "position": 4},
                                 "seq 4: prev .* is not the hash of seq 3"),
}


# -- the tests ---------------------------------------------------------------------------------------


def _case_names() -> set[str]:
    return {p.name for p in CORPUS.iterdir() if not p.name.startswith((".", "__")) and p.suffix != ".py"}


def test_every_corpus_file_has_an_expected_outcome_and_vice_versa() -> None:
    assert _case_names() == set(CASES) | set(CHAIN_CASES)


def test_the_corpus_is_large_and_covers_every_error_class() -> None:
    assert len(CASES) + len(CHAIN_CASES) >= 25
    assert {c.error for c in CASES.values()} == {EncodingError, SchemaError, SignatureError, RequestAuthError,
                                                 ProofError}
    assert {c.kind for c in CASES.values()} == set(RECEIVE)


def test_make_corpus_reproduces_the_committed_files() -> None:
    built = make_corpus.build()
    on_disk = {p.relative_to(CORPUS).as_posix(): p.read_bytes() for p in CORPUS.rglob("*")
               if p.is_file() and p.suffix != ".py" and not p.name.startswith(".") and "__pycache__" not in p.parts}
    assert sorted(built) == sorted(on_disk)
    changed = [name for name in built if built[name] != on_disk[name]]
    assert not changed, f"run make_corpus.py: {changed}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_message_is_refused(name: str) -> None:
    case = CASES[name]
    data = (CORPUS / name).read_bytes()
    with pytest.raises(case.error, match=case.match) as err:
        RECEIVE[case.kind](data)
    assert type(err.value) is case.error, f"{type(err.value).__name__}: {err.value}"
    assert err.value.code == case.code


@pytest.mark.parametrize("name", sorted(CHAIN_CASES))
def test_bad_chain_is_reported_at_its_step(name: str) -> None:
    expected = CHAIN_CASES[name]
    envelopes = [p.read_bytes() for p in sorted((CORPUS / name).iterdir())]
    report = verify_chain(envelopes, DEVICE)
    assert not report.ok
    found = [(step.number, f) for step in report.steps for f in step.findings]
    assert len(found) == 1, report.lines()
    step, finding = found[0]
    assert (step, finding.code.code) == (expected.step, expected.code)
    assert {k: finding.evidence[k] for k in expected.where} == expected.where
    assert finding.subject == S.DEVICE_ID
    assert re.search(expected.match, finding.message), finding.message
    # The failing step is named in the report's text as well.
    assert any(line.startswith(f"({expected.step}) FAIL") for line in report.lines())


def test_the_chains_are_bad_only_where_the_corpus_broke_them() -> None:
    """The good chains the corpus cuts its cases from verify cleanly."""
    for recordings in (1, 3):
        chain = [e.raw for e in make_corpus.good_chain(recordings=recordings)]
        report = verify_chain(chain, DEVICE)
        assert report.ok, report.lines()
