"""Log leaves: canonical bytes, strict parsing, no free text; the trusted-key forms custody verify accepts."""

from __future__ import annotations

import pytest

from protocol.checkpoint import NoteVerifier
from protocol.errors import LocalProtocolError, ProofError, SchemaError
from protocol.keys import SigningKey
from protocol.leaves import AccessLeaf, EntryLeaf, HoldLeaf, KeyLeaf, keys_sha256, parse_leaf, text_sha256
from protocol.merkle import leaf_hash
from protocol.verify_package import TrustedKey

T = 1_790_000_000_000
DEV = "a" * 24


def test_leaves_round_trip_and_hash_their_bytes() -> None:
    leaves = [
        EntryLeaf(v=1, leaf="entry", device_id=DEV, seq=4, entry_hash="1" * 64, stored_sha256=None, time_ms=T),
        AccessLeaf(v=1, leaf="access", access_id=3, kind="export", principal="user:17", device_id=DEV,
                   recording_id="rec-1", case_id=None, objects=2, objects_sha256=keys_sha256(["b", "a"]),
                   reason_sha256=text_sha256("court"), time_ms=T),
        KeyLeaf(v=1, leaf="key", event="device_state", key_id=None, fingerprint=None, device_id=DEV, state="lost",
                cutoff_seq=9, time_ms=T),
    ]
    for leaf in leaves:
        data = leaf.to_bytes()
        assert parse_leaf(data) == leaf
        assert leaf.hash() == leaf_hash(data)
    assert keys_sha256(["a", "b"]) == keys_sha256(["b", "a"])


def test_bad_leaves_are_refused() -> None:
    with pytest.raises(SchemaError, match="unknown leaf kind"):
        parse_leaf(b'{"leaf":"gossip","v":1}')
    with pytest.raises(LocalProtocolError):
        KeyLeaf(v=1, leaf="key", event="server_key", key_id=None, fingerprint=None, device_id=None, state=None,
                cutoff_seq=None, time_ms=T)
    with pytest.raises(LocalProtocolError):  # a name where an opaque id belongs
        AccessLeaf(v=1, leaf="access", access_id=1, kind="view", principal="Zhang San", device_id=None,
                   recording_id=None, case_id=None, objects=0, objects_sha256="0" * 64, reason_sha256="0" * 64,
                   time_ms=T)


def hold(**changes: object) -> HoldLeaf:
    fields: dict[str, object] = dict(v=1, leaf="hold", hold_id=4, action="set", target="case", case_id="12",
                                     device_id=None, recording_id=None, principal="user:3", role="supervisor",
                                     reason_sha256=text_sha256("complaint"), time_ms=T)
    fields.update(changes)
    return HoldLeaf(**fields)  # type: ignore[arg-type]


def test_hold_leaves_name_one_target_and_hash_the_reason() -> None:
    case_hold = hold()
    assert parse_leaf(case_hold.to_bytes()) == case_hold
    assert b"complaint" not in case_hold.to_bytes()
    lifted = hold(action="lift", target="recording", case_id=None, device_id=DEV, recording_id="rec-1")
    assert parse_leaf(lifted.to_bytes()) == lifted
    with pytest.raises(LocalProtocolError, match="names the case and no recording"):
        hold(device_id=DEV, recording_id="rec-1")
    with pytest.raises(LocalProtocolError, match="names the device and the recording"):
        hold(target="recording", case_id=None, device_id=DEV)
    with pytest.raises(LocalProtocolError, match="action"):
        hold(action="release")
    with pytest.raises(LocalProtocolError, match="role"):
        hold(role="Legal Reviewer")  # a role name, never free text
    with pytest.raises(LocalProtocolError, match="principal"):
        hold(principal="Zhang San")
    with pytest.raises(SchemaError):  # a peer's bytes: the reason in clear instead of its hash
        parse_leaf(hold().to_bytes().replace(b'"reason_sha256":"', b'"reason_sha256":"x'))


def test_trusted_key_forms() -> None:
    key = SigningKey.generate()
    vkey = NoteVerifier("custody/abc", key.public).vkey()
    by_vkey = TrustedKey.parse(vkey)
    assert by_vkey.key == key.public and by_vkey.origin == "custody/abc"
    assert TrustedKey.parse(key.public.fingerprint).key is None
    import base64

    assert TrustedKey.parse(base64.b64encode(key.public.raw).decode()).key == key.public
    with pytest.raises(ProofError):
        TrustedKey.parse("not a key")
