"""A real export verifies; a corpus of tampered copies of it is refused, each by the step that catches it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from custody.cli import main as cli_main
from custody.verify import verify_path
from protocol.canonical import b64d, b64e, canonical_bytes, parse_canonical
from protocol.checkpoint import Checkpoint, sign_checkpoint
from protocol.envelope import Envelope
from protocol.keys import SigningKey
from protocol.messages import DeviceCertificate, Receipt
from protocol.package import (
    ACCESS_LOG,
    AUDIT,
    CHECKPOINT,
    INDEX,
    certificate_path,
    chunk_path,
    entry_path,
    proof_path,
    receipt_path,
    recording_path,
)
from protocol.verify_package import TrustedKey
from tests.integration.tamper.package_fixture import Built, build, rezip

pytestmark = pytest.mark.integration

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One real export (and a forked log) for the whole module."""
    return asyncio.run(build(tmp_path_factory.mktemp("export")))


# -- tampering helpers --------------------------------------------------------------------------------


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def move_entry(f: Files, dev: str, src: int, dst: int, *, from_files: Files | None = None) -> None:
    """Put entry ``src``'s files (entry, receipt, proof, chunk) where entry ``dst``'s belong."""
    source = from_files or dict(f)
    for path in (entry_path, receipt_path, proof_path, chunk_path):
        if path(dev, src) in source:
            f[path(dev, dst)] = source[path(dev, src)]


def delete_entry(f: Files, dev: str, seq: int) -> None:
    for path in (entry_path, receipt_path, proof_path, chunk_path):
        f.pop(path(dev, seq), None)


def repayload(env_bytes: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """An envelope whose payload was edited but whose signature was kept."""
    env = parse_canonical(env_bytes)
    payload = parse_canonical(b64d(env["payload"]))
    change(payload)
    env["payload"] = b64e(canonical_bytes(payload))
    return canonical_bytes(env)


def resign(env_bytes: bytes, key: SigningKey, change: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    """An envelope re-signed with another key (payload optionally edited)."""
    env = Envelope.from_bytes(env_bytes)
    payload = parse_canonical(env.payload)
    if change:
        change(payload)
    return Envelope.sign(env.payload_type, canonical_bytes(payload), key).raw


def edit_json(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    obj = json.loads(data)
    change(obj)
    return json.dumps(obj).encode()


def tampers(b: Built) -> dict[str, tuple[Callable[[Files], None], int, str]]:
    """name -> (tamper, step that must catch it, reason regex)."""
    a, other = b.device_a, b.device_b
    c1, c2, c3 = b.r1.seqs[1], b.r1.seqs[2], b.r1.seqs[3]  # chunks of recording 1 (seqs[0] is its start)
    r2_chunk = b.r2.seqs[1]
    b_chunk = b.r3.seqs[1]
    impostor = SigningKey.generate()

    def t(fn: Callable[[Files], None]) -> Callable[[Files], None]:
        return fn

    def chunk_byte_flipped(f: Files) -> None:
        f[chunk_path(a, c1)] = flip(f[chunk_path(a, c1)], 1000)

    def chunk_removed(f: Files) -> None:
        del f[chunk_path(a, c2)]

    def entry_and_chunk_removed(f: Files) -> None:
        delete_entry(f, a, c2)

    def recording_removed(f: Files) -> None:
        for seq in b.r2.seqs:
            delete_entry(f, a, seq)
        del f[recording_path(a, b.r2.recording_id)]

    def recording_entries_removed(f: Files) -> None:
        for seq in b.r2.seqs:
            delete_entry(f, a, seq)

    def stop_event_removed(f: Files) -> None:
        delete_entry(f, a, b.r1.seqs[-1])

    def chunks_reordered(f: Files) -> None:
        snapshot = dict(f)
        move_entry(f, a, c1, c2, from_files=snapshot)
        move_entry(f, a, c2, c1, from_files=snapshot)

    def chunk_bytes_swapped(f: Files) -> None:
        f[chunk_path(a, c1)], f[chunk_path(a, c2)] = f[chunk_path(a, c2)], f[chunk_path(a, c1)]

    def chunk_from_other_device(f: Files) -> None:
        f[chunk_path(a, c1)] = f[chunk_path(other, b_chunk)]

    def entry_from_other_device(f: Files) -> None:
        for path in (entry_path, receipt_path, proof_path, chunk_path):
            f[path(a, c1)] = f[path(other, b_chunk)]

    def chunk_from_other_recording(f: Files) -> None:
        move_entry(f, a, r2_chunk, c3)

    def entry_forged(f: Files) -> None:
        f[entry_path(a, c1)] = resign(f[entry_path(a, c1)], impostor,
                                      lambda p: p.update(sha256=hashlib.sha256(b"fake").hexdigest()))

    def entry_altered(f: Files) -> None:
        f[entry_path(a, c1)] = repayload(f[entry_path(a, c1)], lambda p: p.update(duration_ms=p["duration_ms"] + 1))

    def receipt_altered(f: Files) -> None:
        f[receipt_path(a, c1)] = repayload(f[receipt_path(a, c1)],
                                           lambda p: p.update(server_time_ms=p["server_time_ms"] - 60_000))

    def receipt_forged(f: Files) -> None:
        f[receipt_path(a, c1)] = resign(f[receipt_path(a, c1)], impostor,
                                        lambda p: p.update(server_key_id=impostor.key_id))

    def proof_altered(f: Files) -> None:
        def change(p: dict[str, Any]) -> None:
            h = base64.b64decode(p["proof"][0])
            p["proof"][0] = base64.b64encode(flip(h, 0)).decode()
        f[proof_path(a, c1)] = edit_json(f[proof_path(a, c1)], change)

    def proof_truncated(f: Files) -> None:
        f[proof_path(a, c1)] = edit_json(f[proof_path(a, c1)], lambda p: p["proof"].pop())

    def proof_of_other_leaf(f: Files) -> None:
        f[proof_path(a, c1)] = f[proof_path(a, c2)]

    def checkpoint_of_other_log(f: Files) -> None:
        cp = Checkpoint.parse_body(f[CHECKPOINT].decode().split("\n\n")[0] + "\n")
        f[CHECKPOINT] = sign_checkpoint(Checkpoint("other.example/log", cp.size, cp.root), "other.example/log",
                                        impostor).text().encode()

    def checkpoint_root_altered(f: Files) -> None:
        text = f[CHECKPOINT].decode()
        lines = text.split("\n")
        root = base64.b64decode(lines[2])
        lines[2] = base64.b64encode(flip(root, 5)).decode()
        f[CHECKPOINT] = "\n".join(lines).encode()

    def certificate_not_signed_by_server(f: Files) -> None:
        f[certificate_path(a)] = resign(f[certificate_path(a)], impostor,
                                        lambda p: p.update(issuer_key_id=impostor.key_id))

    def certificate_of_other_device(f: Files) -> None:
        f[certificate_path(a)] = f[certificate_path(other)]

    def link_removed(f: Files) -> None:
        f[INDEX] = repayload(f[INDEX], lambda p: p.update(links=p["links"][1:]))

    def index_recording_removed(f: Files) -> None:
        f[INDEX] = repayload(f[INDEX], lambda p: p.update(recordings=p["recordings"][:-1]))

    def index_resigned_by_impostor(f: Files) -> None:
        f[INDEX] = resign(f[INDEX], impostor, lambda p: p.update(links=[]))

    def remuxed_mp4_altered(f: Files) -> None:
        path = recording_path(a, b.r1.recording_id)
        f[path] = flip(f[path], 2000)

    def access_log_altered(f: Files) -> None:
        f[ACCESS_LOG] = edit_json(f[ACCESS_LOG], lambda p: p["events"].pop())

    def audit_report_altered(f: Files) -> None:
        f[AUDIT] = edit_json(f[AUDIT], lambda p: p.update(findings=[]))

    def foreign_file_added(f: Files) -> None:
        f[chunk_path(a, b.r1.seqs[0])] = f[chunk_path(a, c1)]  # a "chunk" where the start event is

    def consistency_proof_altered(f: Files) -> None:
        name = next(n for n in f if n.startswith("log/consistency/"))

        def change(p: dict[str, Any]) -> None:
            p["proof"][-1] = base64.b64encode(flip(base64.b64decode(p["proof"][-1]), 3)).decode()
        f[name] = edit_json(f[name], change)

    def key_history_altered(f: Files) -> None:
        obj = parse_canonical(f["keys/server-keys.json"])
        obj["keys"][0]["retired_ms"] = obj["keys"][0]["created_ms"] + 1
        f["keys/server-keys.json"] = canonical_bytes(obj)

    table: dict[str, tuple[Callable[[Files], None], int, str]] = {
        "chunk_byte_flipped": (chunk_byte_flipped, 8, r"bytes hash to .* the signed entry says"),
        "chunk_removed": (chunk_removed, 8, rf"chunk {c2} is missing"),
        "entry_and_chunk_removed": (entry_and_chunk_removed, 7, rf"entry {c2} is missing \(gap"),
        "recording_removed": (recording_removed, 3, r"recordings/.*\.mp4 is missing"),
        "recording_entries_removed": (recording_entries_removed, 7, r"is missing \(gap in the chain\)"),
        "stop_event_removed": (stop_event_removed, 7, rf"entry {b.r1.seqs[-1]} is missing"),
        "chunks_reordered": (chunks_reordered, 7, rf"holds seq {c2} where seq {c1} belongs"),
        "chunk_bytes_swapped": (chunk_bytes_swapped, 8, rf"chunk {c1}: bytes hash to"),
        "chunk_from_other_device": (chunk_from_other_device, 8, rf"chunk {c1}: bytes hash to"),
        "entry_from_other_device": (entry_from_other_device, 7, r"not a key of device"),
        "chunk_from_other_recording": (chunk_from_other_recording, 7, rf"holds seq {r2_chunk} where seq {c3}"),
        "entry_forged": (entry_forged, 7, rf"signed by key {impostor.key_id}, not a key of device"),
        "entry_altered": (entry_altered, 7, r"signature does not verify"),
        "receipt_altered": (receipt_altered, 9, r"receipt: signature does not verify"),
        "receipt_forged": (receipt_forged, 9, rf"signed by key {impostor.key_id}, which is not a server key"),
        "proof_altered": (proof_altered, 10, r"does not lead to the root"),
        "proof_truncated": (proof_truncated, 10, r"inclusion proof has \d+ hashes, expected"),
        "proof_of_other_leaf": (proof_of_other_leaf, 10, r"the proof's leaf is not this entry's receipt"),
        "checkpoint_of_other_log": (checkpoint_of_other_log, 4, r"checkpoint is of log 'other.example/log'"),
        "checkpoint_root_altered": (checkpoint_root_altered, 4, r"does not verify|no signature"),
        "certificate_not_signed_by_server": (certificate_not_signed_by_server, 6,
                                             rf"signed by key {impostor.key_id}, which is not a server key"),
        "certificate_of_other_device": (certificate_of_other_device, 6, rf"certificate is of device {other}"),
        "index_recording_removed": (index_recording_removed, 2, r"not signed by the trusted key"),
        "link_removed": (link_removed, 2, r"not signed by the trusted key"),
        "index_resigned_by_impostor": (index_resigned_by_impostor, 2, r"not signed by the trusted key"),
        "remuxed_mp4_altered": (remuxed_mp4_altered, 3, r"recordings/.*\.mp4 differs from the index"),
        "access_log_altered": (access_log_altered, 3, r"case/access-log.json differs from the index"),
        "audit_report_altered": (audit_report_altered, 3, r"case/audit.json differs from the index"),
        "foreign_file_added": (foreign_file_added, 3, r"is not accounted for by the index"),
        "consistency_proof_altered": (consistency_proof_altered, 5, r"log/consistency/\d+\.json"),
        "key_history_altered": (key_history_altered, 2, r"differs from the key history in the signed index"),
    }
    return table


CORPUS = [
    "chunk_byte_flipped", "chunk_removed", "entry_and_chunk_removed", "recording_removed",
    "recording_entries_removed", "stop_event_removed", "chunks_reordered", "chunk_bytes_swapped",
    "chunk_from_other_device", "entry_from_other_device", "chunk_from_other_recording", "entry_forged",
    "entry_altered", "receipt_altered", "receipt_forged", "proof_altered", "proof_truncated", "proof_of_other_leaf",
    "checkpoint_of_other_log", "checkpoint_root_altered", "certificate_not_signed_by_server",
    "certificate_of_other_device", "index_recording_removed", "link_removed", "index_resigned_by_impostor",
    "remuxed_mp4_altered", "access_log_altered", "audit_report_altered", "foreign_file_added",
    "consistency_proof_altered",
    "key_history_altered",
]


def test_the_untouched_package_verifies(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["verify", str(built.package), "--server-key", built.vkey,
                     "--checkpoint", str(built.witnessed)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "VERIFIED: every step passed" in out
    assert "cosignature by court-witness verifies" in out
    assert re.search(r"^\(13\) ok", out, re.M)  # chunks decode (PyAV is installed in the test venv)
    # the fingerprint alone is enough too (the key then comes from the signed key history)
    assert cli_main(["verify", str(built.package), "--server-key", built.fingerprint, "--no-media"]) == 0


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("name", CORPUS)
def test_tampered_package_is_refused(name: str, built: Built, tmp_path: Path) -> None:
    tamper, step, reason = tampers(built)[name]
    files = dict(built.files)
    tamper(files)
    assert files != built.files, "the tamper changed nothing"
    path = rezip(files, tmp_path / f"{name}.zip")
    report = verify_path(path, TrustedKey.parse(built.vkey), [], [], media=False)
    assert not report.ok
    first = report.first_failure
    assert first is not None
    assert first.number == step, f"{name}: caught first by step {first.number}: {first.problems}"
    assert any(re.search(reason, p) for p in first.problems), f"{name}: {first.problems}"


def test_wrong_server_key_is_refused(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    other = SigningKey.generate()
    code = cli_main(["verify", str(built.package), "--server-key", base64.b64encode(other.public.raw).decode(),
                     "--no-media"])
    out = capsys.readouterr().out
    assert code == 1 and re.search(r"^\(2\) FAIL", out, re.M), out


def test_forked_log_is_refused_with_the_other_branch_checkpoint(built: Built,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # on its own, the export from branch A verifies: a fork needs a second view to be seen
    assert cli_main(["verify", str(built.fork_package), "--server-key", built.fork_vkey, "--no-media"]) == 0
    capsys.readouterr()
    code = cli_main(["verify", str(built.fork_package), "--server-key", built.fork_vkey, "--no-media",
                     "--checkpoint", str(built.fork_other_checkpoint)])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^\(5\) FAIL", out, re.M) and "FORK" in out, out


def test_the_witness_detects_the_fork_and_tells_the_server(built: Built) -> None:
    assert built.witness_exit_on_fork == 3
    forks = list((built.witness_state / "forks").iterdir())
    assert len(forks) == 1 and {p.name for p in forks[0].iterdir()} == {"first.note", "second.note", "detail.txt"}
    assert built.fork_finding_recorded


def test_a_case_export_carries_the_case(built: Built) -> None:
    from protocol.package import ExportIndex

    index = ExportIndex.peek(Envelope.from_bytes(built.files[INDEX], max_bytes=1 << 24))
    assert index.case_id is not None
    assert {(link.step_id, link.recording_id) for link in index.links} == {
        ("s-inspect", built.r1.recording_id), ("s-inspect", built.r2.recording_id),
        ("s-evidence", built.r3.recording_id)}
    audit = json.loads(built.files[AUDIT])
    assert audit["filters"]["case_id"] == int(index.case_id)  # the case's own audit report
    events = json.loads(built.files[ACCESS_LOG])["events"]
    assert [e["kind"] for e in events] == ["export"] and events[0]["case_id"] == index.case_id


def test_receipts_in_the_package_carry_log_positions(built: Built) -> None:
    receipt = Receipt.peek(Envelope.from_bytes(built.files[receipt_path(built.device_a, built.r1.seqs[1])]))
    assert receipt.log_index is not None and receipt.tree_size == receipt.log_index + 1
    cert = DeviceCertificate.peek(Envelope.from_bytes(built.files[certificate_path(built.device_a)]))
    assert cert.device_id == built.device_a
