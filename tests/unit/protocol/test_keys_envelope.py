"""Keys, ids and the envelope container (PAE domain separation, exact bytes)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelope import Envelope, pae
from protocol.errors import EncodingError, LocalProtocolError, SchemaError, SignatureError
from protocol.keys import ED25519, SigningKey, VerifyKey, device_id_for, key_fingerprint, key_id_for
from tests.unit.protocol import samples as S
from tests.unit.protocol.strategies import PROPERTY, key_bytes


def test_ids_of_the_fixed_device_key() -> None:
    raw = S.DEVICE_KEY.public.raw
    assert S.DEVICE_ID == device_id_for(raw) == S.DEVICE_KEY.public.device_id
    assert len(S.DEVICE_ID) == 24
    assert S.DEVICE_KEY.key_id == key_id_for(raw) == key_fingerprint(raw)[:16]
    assert S.DEVICE_KEY.public.fingerprint == key_fingerprint(raw)


@PROPERTY
@given(key_bytes)
def test_device_ids_are_topic_and_path_safe(raw: bytes) -> None:
    device_id = device_id_for(raw)
    assert len(device_id) == 24
    assert set(device_id) <= set("abcdefghijklmnopqrstuvwxyz234567")


@PROPERTY
@given(raw=key_bytes, sig=st.binary(max_size=80), msg=st.binary(max_size=50))
def test_any_key_and_signature_bytes_fail_only_as_signature_errors(raw: bytes, sig: bytes, msg: bytes) -> None:
    """Arbitrary 32-byte public keys (most are not curve points) never raise anything else."""
    key = VerifyKey(ED25519, raw)
    with pytest.raises(SignatureError, match="does not verify"):
        key.verify(sig, msg)
    assert not key.is_valid(sig, msg)


def test_the_signing_key_never_shows_its_secret() -> None:
    text = repr(S.DEVICE_KEY)
    assert S.DEVICE_KEY.key_id in text
    assert bytes(range(32)).hex() not in text
    assert S.DEVICE_KEY.private_bytes() == bytes(range(32))


@pytest.mark.parametrize(
    ("alg", "raw", "code"),
    [("sm2", bytes(32), "unsupported_algorithm"), (ED25519, bytes(31), "bad_key"), (ED25519, b"", "bad_key")],
)
def test_verify_keys_are_checked_when_built(alg: str, raw: bytes, code: str) -> None:
    with pytest.raises(SignatureError) as err:
        VerifyKey(alg, raw)
    assert err.value.code == code


def test_private_keys_are_32_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        SigningKey.from_private_bytes(bytes(31))


def test_pae_is_pinned() -> None:
    assert pae("custody/x/v1", b"{}") == b"CUSTODY-SIG-V1 12 custody/x/v1 2 {}"
    assert pae("t", b"") == b"CUSTODY-SIG-V1 1 t 0 "
    # Lengths make the encoding unambiguous: moving bytes between type and payload changes it.
    assert pae("a b", b"c") != pae("a", b"b c")


def test_envelope_wire_form_and_hash() -> None:
    env = Envelope.sign("custody/test/v1", b'{"a":1}', S.DEVICE_KEY)
    assert env.raw.startswith(b'{"alg":"ed25519","kid":"' + S.DEVICE_KEY.key_id.encode() + b'","payload":"')
    assert env.raw.endswith(b'","type":"custody/test/v1"}')
    assert Envelope.from_bytes(env.raw) == env
    assert env.hash == hashlib.sha256(env.raw).digest()
    env.verify(S.DEVICE_KEY.public)
    env.verify(S.DEVICE_KEY.public, payload_type="custody/test/v1")
    with pytest.raises(SignatureError, match="expected 'custody/other/v1'") as err:
        env.verify(S.DEVICE_KEY.public, payload_type="custody/other/v1")
    assert err.value.code == "wrong_payload_type"


def test_signing_needs_a_payload_type() -> None:
    with pytest.raises(LocalProtocolError, match="payload type"):
        Envelope.sign("", b"{}", S.DEVICE_KEY)


@pytest.mark.parametrize(
    ("data", "error", "code", "match"),
    [
        (b'{"alg":1,"kid":"","payload":"","sig":"","type":""}', SchemaError, "wrong_type", "alg must be a string"),
        (b'{"alg":"ed25519","kid":"x","payload":"","sig":"","type":"t"}', None, None, None),
        (b'{"alg":"ed25519","kid":"x","payload":"","sig":"","type":"t","z":""}', SchemaError, "unknown_field",
         "unknown field z"),
        (b'{"kid":"x","payload":"","sig":"","type":"t"}', SchemaError, "missing_field", "missing alg"),
        (b'{"alg":"ed25519","kid":"x","payload":"=","sig":"","type":"t"}', EncodingError, "bad_encoding",
         "payload is not unpadded base64url"),
        (b'["alg"]', EncodingError, "bad_encoding", "not a JSON object"),
        (b'{"alg":"ed25519", "kid":"x","payload":"","sig":"","type":"t"}', EncodingError, "not_canonical",
         "canonical form"),
    ],
)
def test_envelope_parse(data: bytes, error: type[Exception] | None, code: str | None, match: str | None) -> None:
    if error is None:
        env = Envelope.from_bytes(data)  # parses; the key id is checked by verify, against a key
        with pytest.raises(SignatureError, match="signed by key x"):
            env.verify(S.DEVICE_KEY.public)
        return
    with pytest.raises(error, match=match) as err:
        Envelope.from_bytes(data)
    assert getattr(err.value, "code", None) == code


def test_envelope_size_limit_is_the_callers() -> None:
    env = Envelope.sign("custody/test/v1", b"x" * 1000, S.DEVICE_KEY)
    assert Envelope.from_bytes(env.raw, max_bytes=len(env.raw)) == env
    with pytest.raises(EncodingError, match="exceeds the limit") as err:
        Envelope.from_bytes(env.raw, max_bytes=len(env.raw) - 1)
    assert err.value.code == "oversize"
