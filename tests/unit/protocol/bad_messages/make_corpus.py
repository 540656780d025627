"""Build the named bad-message corpus from fixed keys. Deterministic: run it, and nothing changes.

    .venv/bin/python tests/unit/protocol/bad_messages/make_corpus.py

Every case is a file (or, for chains, a folder of entry files read in name order) holding bytes
exactly as a peer would send them. What each case must fail with is NOT in the files: it is the
table in ``test_bad_messages.py``, so that a change in protocol/ that lets one through fails a test.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[3]))

from protocol.canonical import b64e, canonical_bytes  # noqa: E402
from protocol.checkpoint import Checkpoint, SignedNote, sign_checkpoint, sign_line  # noqa: E402
from protocol.envelope import Envelope  # noqa: E402
from protocol.httpsig import H_SIGNATURE, H_TIME  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.merkle import consistency_proof, inclusion_proof, leaf_hash  # noqa: E402
from protocol.messages import (  # noqa: E402
    GENESIS_PREV,
    ChunkManifest,
    EnrollmentAnswer,
    RecordingEvent,
    SignedMessage,
)
from tests.unit.protocol import samples as S  # noqa: E402

MANIFEST = ChunkManifest.PAYLOAD_TYPE

# -- helpers -------------------------------------------------------------------------------------


def signed(payload_type: str, payload: bytes, key: SigningKey = S.DEVICE_KEY) -> bytes:
    """Envelope bytes over any payload bytes: a peer holding the key can sign garbage too."""
    return Envelope.sign(payload_type, payload, key).raw


def dict_of(msg: SignedMessage, **changes: Any) -> dict[str, Any]:
    """A message's JSON object with fields changed (``None`` values are kept; use ``drop``)."""
    d = msg.to_dict()
    d.update(changes)
    return d


def signed_dict(msg: SignedMessage, key: SigningKey, **changes: Any) -> bytes:
    """``msg`` with ``changes`` applied after validation, canonically encoded and signed."""
    return signed(msg.PAYLOAD_TYPE, canonical_bytes(dict_of(msg, **changes)), key)


def manifest_payload(**changes: Any) -> bytes:
    return canonical_bytes(dict_of(S.manifest(), **changes))


def manifest_with(**changes: Any) -> bytes:
    return signed(MANIFEST, manifest_payload(**changes))


def manifest_patched(old: bytes, new: bytes) -> bytes:
    """The golden manifest's payload with a byte-level edit, signed (JSON that canonical_bytes cannot make)."""
    payload = manifest_payload()
    assert payload.count(old) == 1, old
    return signed(MANIFEST, payload.replace(old, new))


def envelope_fields(raw: bytes) -> dict[str, str]:
    fields: dict[str, str] = json.loads(raw)
    return fields


def envelope_with(raw: bytes, **changes: str) -> bytes:
    """Envelope bytes with fields replaced or added, still canonical (not re-signed)."""
    fields = envelope_fields(raw)
    fields.update(changes)
    return canonical_bytes(fields)


def flip_signature(raw: bytes) -> bytes:
    fields = envelope_fields(raw)
    sig = bytearray(base64.urlsafe_b64decode(fields["sig"] + "=="))
    sig[10] ^= 0x01
    return envelope_with(raw, sig=b64e(bytes(sig)))


def pretty(obj: object) -> bytes:
    return S.pretty(obj)


GOOD_MANIFEST = S.manifest().sign(S.DEVICE_KEY).raw


# -- chains --------------------------------------------------------------------------------------


def good_chain(recordings: int = 1, chunks: int = 4) -> list[Envelope]:
    """Recordings of ``start, chunk * chunks, stop``, linked from seq 0."""
    out: list[Envelope] = []
    prev, seq = GENESIS_PREV, 0
    for r in range(recordings):
        rec = f"rec-{r + 1:04d}"
        for i in range(chunks + 2):
            if i == 0:
                msg: SignedMessage = S.recording_start(seq, prev, rec)
            elif i == chunks + 1:
                msg = S.recording_stop(seq, prev, chunks, rec)
            else:
                msg = S.manifest(seq, prev, index=i - 1, recording_id=rec)
            env = msg.sign(S.DEVICE_KEY)
            out.append(env)
            prev, seq = env.hash.hex(), seq + 1
    return out


def chain_files(name: str, envelopes: list[bytes]) -> dict[str, bytes]:
    return {f"{name}/{i:02d}.json": raw for i, raw in enumerate(envelopes)}


def chains() -> dict[str, bytes]:
    c = [e.raw for e in good_chain()]  # seq 0 start, 1-4 chunks, 5 stop
    envs = good_chain()
    files: dict[str, bytes] = {}
    # A chunk deleted: seq 3 is missing.
    files |= chain_files("chain_seq_gap", c[:3] + c[4:])
    # A second, different entry claiming seq 3 (its prev names no entry).
    reuse = S.manifest(3, "ee" * 32, index=2).sign(S.DEVICE_KEY).raw
    files |= chain_files("chain_seq_reuse", [*c[:4], reuse, *c[4:]])
    # Chunk 3 substituted by other (validly signed) bytes: seq 4 no longer links to it.
    substituted = _replace_sha(S.manifest(3, envs[2].hash.hex(), index=2), "5b" * 32).sign(S.DEVICE_KEY).raw
    files |= chain_files("chain_prev_mismatch", [*c[:3], substituted, *c[4:]])
    # Two different entries both follow seq 2: the device's history branched.
    fork = _replace_sha(S.manifest(3, envs[2].hash.hex(), index=2), "f0" * 32).sign(S.DEVICE_KEY).raw
    files |= chain_files("chain_fork", [*c[:4], fork, *c[4:]])
    # The exact same entry presented twice.
    files |= chain_files("chain_replay", [*c[:3], c[2], *c[3:]])
    # Seq 3 before seq 2.
    files |= chain_files("chain_reordered", [c[0], c[1], c[3], c[2], c[4], c[5]])
    # The stop event names another device (signed with this device's key).
    other = S.recording_stop(5, envs[4].hash.hex(), 4)
    wrong_device = signed(RecordingEvent.PAYLOAD_TYPE, canonical_bytes(dict_of(other, device_id=S.OTHER_DEVICE_ID)))
    files |= chain_files("chain_wrong_device", [*c[:5], wrong_device])
    # The stop event signed by another device's key.
    files |= chain_files("chain_foreign_signature", [*c[:5], S.recording_stop(5, envs[4].hash.hex(), 4)
                                                     .sign(S.OTHER_DEVICE_KEY).raw])
    # A status message where an entry belongs.
    files |= chain_files("chain_malformed_entry", [*c, S.device_status().sign(S.DEVICE_KEY).raw])
    # The recording's start event removed.
    files |= chain_files("chain_missing_start", c[1:])
    # A whole recording (start, chunks, stop: seq 6-11) removed from the middle.
    three = [e.raw for e in good_chain(recordings=3)]
    files |= chain_files("chain_deleted_recording", three[:6] + three[12:])
    return files


def _replace_sha(m: ChunkManifest, sha: str) -> ChunkManifest:
    return dataclasses.replace(m, sha256=sha)


# -- requests, checkpoints, proofs, tokens -----------------------------------------------------


def requests() -> dict[str, bytes]:
    good = S.http_request_file()
    stale = {**good, "now_ms": S.T0 + 10 * 60 * 1000}  # received 10 minutes after it was signed
    replayed = [good, {**good, "now_ms": S.T0 + 1000}]
    body_mismatch = {**good, "body": b64e(b'{"seq":2}')}
    bad_signature = {**good, "path": S.HTTP_PATH.replace("seq=1", "seq=2")}
    missing = {**good, "headers": {k: v for k, v in good["headers"].items() if k != H_SIGNATURE}}
    wrong_key = S.http_request_file(key=S.OTHER_DEVICE_KEY)
    arabic = str(S.T0).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    not_ascii_time = {**good, "headers": {**good["headers"], H_TIME: arabic}}
    return {
        "request_stale.json": pretty(stale),
        "request_replayed.json": pretty(replayed),
        "request_body_mismatch.json": pretty(body_mismatch),
        "request_bad_signature.json": pretty(bad_signature),
        "request_missing_header.json": pretty(missing),
        "request_wrong_key.json": pretty(wrong_key),
        "request_time_not_ascii_digits.json": pretty(not_ascii_time),
    }


def checkpoints() -> dict[str, bytes]:
    cp = S.checkpoint()
    good = sign_checkpoint(cp, S.LOG_NAME, S.SERVER_KEY)
    wrong_origin = sign_checkpoint(Checkpoint("other.example/log", cp.size, cp.root), S.LOG_NAME, S.SERVER_KEY)
    sig = good.signatures[0]
    bad_blob = bytearray(sig.blob)
    bad_blob[0] ^= 0x01
    bad_signature = SignedNote(good.body, (type(sig)(sig.name, sig.key_hash, bytes(bad_blob)),))
    impostor = sign_checkpoint(cp, S.LOG_NAME, S.ROGUE_SERVER_KEY)
    witness_only = sign_checkpoint(cp, S.WITNESS_NAME, S.WITNESS_KEY)
    root_b64 = base64.b64encode(cp.root).decode()
    leading_zero = f"{S.LOG_NAME}\n0{cp.size}\n{root_b64}\n"
    not_ascii = f"{S.LOG_NAME}\n٤٢\n{root_b64}\n"  # 42 in Arabic-Indic digits
    return {
        "checkpoint_wrong_origin.note": wrong_origin.text().encode(),
        "checkpoint_bad_signature.note": bad_signature.text().encode(),
        "checkpoint_signed_by_impostor.note": impostor.text().encode(),
        "checkpoint_not_signed_by_log.note": witness_only.text().encode(),
        "checkpoint_size_leading_zero.note": (leading_zero + "\n" + sign_line(leading_zero, S.LOG_NAME,
                                                                               S.SERVER_KEY)).encode(),
        "checkpoint_size_not_ascii_digits.note": (not_ascii + "\n" + sign_line(not_ascii, S.LOG_NAME,
                                                                                S.SERVER_KEY)).encode(),
        "checkpoint_no_signature.note": good.body.encode() + b"\n",
    }


def proofs() -> dict[str, bytes]:
    tree = S.log_tree()

    def b64(h: bytes) -> str:
        return base64.b64encode(h).decode()

    incl = inclusion_proof(tree.node, 7, 42)
    wrong_leaf = {"kind": "inclusion", "leafIdx": 7, "treeSize": 42, "leafHash": b64(leaf_hash(b"leaf 8")),
                  "proof": [b64(h) for h in incl], "root": b64(tree.root(42))}
    cons = consistency_proof(tree.node, 20, 42)
    truncated = {"kind": "consistency", "size1": 20, "size2": 42, "proof": [b64(h) for h in cons[:-1]],
                 "root1": b64(tree.root(20)), "root2": b64(tree.root(42))}
    forked = S.log_tree(20)
    for i in range(20, 42):
        forked.append(f"rewritten leaf {i}".encode())
    fork = {"kind": "consistency", "size1": 20, "size2": 42, "proof": [b64(h) for h in cons],
            "root1": b64(tree.root(20)), "root2": b64(forked.root(42))}
    return {
        "inclusion_proof_wrong_leaf.json": pretty(wrong_leaf),
        "consistency_proof_truncated.json": pretty(truncated),
        "consistency_proof_forked_log.json": pretty(fork),
    }


def tokens() -> dict[str, bytes]:
    good = S.TOKEN.to_string()
    mid = len(good) // 2
    damaged = good[:mid] + ("A" if good[mid] != "A" else "B") + good[mid + 1:]
    fp, secret = S.TOKEN.server_fingerprint, S.TOKEN.secret
    other_fields = "cet1." + b64e(canonical_bytes({"fp": fp, "s": secret}))
    not_http = "cet1." + b64e(canonical_bytes({"fp": fp, "s": secret, "url": "ftp://custody.example"}))
    return {
        "token_damaged.txt": damaged.encode(),
        "token_truncated.txt": good[:-10].encode(),
        "token_wrong_prefix.txt": ("cet2." + good[5:]).encode(),
        "token_missing_url.txt": other_fields.encode(),
        "token_not_https.txt": not_http.encode(),
    }


# -- enrollment ----------------------------------------------------------------------------------


def enrollment() -> dict[str, bytes]:
    rogue = S.ROGUE_SERVER_KEY
    rogue_cert = S.device_certificate().sign(rogue).raw
    wrong_server = S.enrollment_answer(certificate=rogue_cert, keys=(rogue,)).sign(rogue).raw
    signed_by_other = S.enrollment_answer().sign(rogue).raw
    other_cert = S.device_certificate(S.OTHER_DEVICE_KEY.public.raw, S.OTHER_DEVICE_ID).sign(S.SERVER_KEY).raw
    other_device = S.enrollment_answer(certificate=other_cert).sign(S.SERVER_KEY).raw
    cert_by_rogue = S.enrollment_answer(certificate=rogue_cert).sign(S.SERVER_KEY).raw
    answer = S.enrollment_answer().to_dict()
    answer["server_keys"][0]["public_key"] = b64e(S.SERVER_KEY.public.raw[:31])
    short_key = signed(EnrollmentAnswer.PAYLOAD_TYPE, canonical_bytes(answer), S.SERVER_KEY)
    cert_mismatch = signed_dict(S.device_certificate(), S.SERVER_KEY, device_id=S.OTHER_DEVICE_ID)
    not_self_signed = S.enrollment_request().sign(S.OTHER_DEVICE_KEY).raw
    return {
        "enrollment_answer_wrong_server_key.json": wrong_server,
        "enrollment_answer_signed_by_other_key.json": signed_by_other,
        "enrollment_answer_other_device.json": other_device,
        "enrollment_answer_certificate_by_other_key.json": cert_by_rogue,
        "enrollment_answer_short_server_key.json": short_key,
        "certificate_device_id_mismatch.json": cert_mismatch,
        "enrollment_request_not_self_signed.json": not_self_signed,
    }


# -- single messages -----------------------------------------------------------------------------


def manifests() -> dict[str, bytes]:
    status = S.device_status().sign(S.DEVICE_KEY).raw
    huge = 60 * 1024
    return {
        # envelope layer
        "manifest_bad_signature.json": flip_signature(GOOD_MANIFEST),
        "manifest_wrong_key.json": S.manifest().sign(S.OTHER_DEVICE_KEY).raw,
        "manifest_truncated.json": GOOD_MANIFEST[: len(GOOD_MANIFEST) // 2],
        "manifest_non_canonical.json": json.dumps(envelope_fields(GOOD_MANIFEST), indent=1).encode(),
        "manifest_envelope_unknown_field.json": envelope_with(GOOD_MANIFEST, x5c="AAAA"),
        "manifest_envelope_missing_signature.json": canonical_bytes(
            {k: v for k, v in envelope_fields(GOOD_MANIFEST).items() if k != "sig"}),
        "manifest_wrong_payload_type.json": status,
        "manifest_padded_base64.json": envelope_with(GOOD_MANIFEST, payload=envelope_fields(GOOD_MANIFEST)["payload"]
                                                     + "="),
        "manifest_short_signature.json": envelope_with(GOOD_MANIFEST,
                                                       sig=envelope_fields(GOOD_MANIFEST)["sig"][:84]),
        "envelope_oversize.json": signed(MANIFEST, b"x" * huge),
        "envelope_lone_surrogate.json": envelope_with(GOOD_MANIFEST).replace(
            b'"type":"custody/chunk-manifest/v1"', b'"type":"custody/\\ud800"'),
        # payload encoding
        "manifest_payload_keys_unsorted.json": signed(MANIFEST, json.dumps(
            S.manifest().to_dict(), separators=(",", ":"), ensure_ascii=False).encode()),
        "manifest_escaped_char.json": manifest_patched(b'"recording_id":"rec-0001"',
                                                       b'"recording_id":"\\u0072ec-0001"'),
        "manifest_leading_zero.json": manifest_patched(b'"seq":1,', b'"seq":01,'),
        "manifest_float_number.json": manifest_patched(b'"duration_ms":5000,', b'"duration_ms":5000.0,'),
        "manifest_duplicate_key.json": manifest_patched(b'"seq":1,', b'"seq":1,"seq":2,'),
        "manifest_not_utf8.json": manifest_patched(b'"rec-0001"', b'"rec-\xff001"'),
        "manifest_unsafe_integer.json": manifest_patched(b'"size":1048577', b'"size":9007199254740993'),
        "manifest_huge_integer.json": manifest_patched(b'"size":1048577', b'"size":' + b"9" * 5000),
        "manifest_deep_nesting.json": signed(MANIFEST, b'{"codec":' + b"[" * 3000 + b"]" * 3000 + b"}"),
        # schema
        "manifest_unknown_field.json": manifest_with(gps="52.37,4.89"),
        "manifest_missing_field.json": signed(MANIFEST, canonical_bytes(
            {k: v for k, v in S.manifest().to_dict().items() if k != "sha256"})),
        "manifest_wrong_version.json": manifest_with(v=2),
        "manifest_bool_as_int.json": manifest_with(seq=True),
        "manifest_negative_seq.json": manifest_with(seq=-1),
        "manifest_genesis_prev.json": manifest_with(seq=0),
        "manifest_bad_sha256.json": manifest_with(sha256="AB" * 32),
        "manifest_path_traversal_recording_id.json": manifest_with(recording_id="../../etc"),
        "manifest_time_out_of_range.json": manifest_with(start_ms=946_684_799_999),
        "manifest_duration_too_long.json": manifest_with(duration_ms=65_001),
        "manifest_bad_codec.json": manifest_with(codec={**S.CODEC.to_dict(), "video": "mjpeg"}),
        "manifest_names_other_device.json": manifest_with(device_id=S.OTHER_DEVICE_ID),
    }


def others() -> dict[str, bytes]:
    cmd = S.command()
    good_cmd = cmd.sign(S.SERVER_KEY).raw
    return {
        "command_expired_ttl_too_long.json": signed_dict(cmd, S.SERVER_KEY,
                                                         expires_ms=cmd.issued_ms + 24 * 3600 * 1000 + 1),
        "command_expires_before_issued.json": signed_dict(cmd, S.SERVER_KEY, expires_ms=cmd.issued_ms - 1),
        "command_unknown_algorithm.json": envelope_with(good_cmd, alg="sm2"),
        "command_bad_nonce.json": signed_dict(cmd, S.SERVER_KEY, nonce="1234"),
        "command_forged_by_device.json": cmd.sign(S.DEVICE_KEY).raw,
        "receipt_log_index_beyond_size.json": signed_dict(S.receipt(), S.SERVER_KEY, log_index=42, tree_size=42),
        "receipt_forged_by_device.json": S.receipt().sign(S.DEVICE_KEY).raw,
        "status_head_without_seq.json": signed_dict(S.device_status(), S.DEVICE_KEY, last_seq=None),
        "status_unknown_state.json": signed_dict(S.device_status(), S.DEVICE_KEY, state="streaming"),
        "ack_refused_without_reason.json": signed_dict(S.command_ack(), S.DEVICE_KEY, reason=None),
        "key_rotation_short_key.json": signed_dict(S.key_rotation(), S.DEVICE_KEY,
                                                   new_public_key=b64e(S.NEW_DEVICE_KEY.public.raw[:31])),
    }


def build() -> dict[str, bytes]:
    """Relative path -> exact bytes of every corpus file."""
    files: dict[str, bytes] = {}
    for part in (manifests(), others(), enrollment(), requests(), checkpoints(), proofs(), tokens(), chains()):
        assert not set(part) & set(files)
        files |= part
    return files


def main() -> int:
    """Write the corpus; report files that changed or that no longer belong to it."""
    files = build()
    for rel, data in sorted(files.items()):
        path = HERE / rel
        path.parent.mkdir(exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            print(f"wrote {rel}")
    known = set(files) | {"__init__.py", "make_corpus.py", ".gitattributes"}
    for path in sorted(HERE.rglob("*")):
        rel = path.relative_to(HERE).as_posix()
        if path.is_file() and rel not in known and "__pycache__" not in rel:
            print(f"stale (not built any more): {rel}")
    print(f"{len(files)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

