"""C2SP checkpoints: signing, parsing, verifying, cosigning, verifier keys, and refusals."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.checkpoint import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteVerifier,
    SignedNote,
    cosign_line,
    cosignature_message,
    key_hash,
    open_checkpoint,
    sign_checkpoint,
)
from protocol.errors import LocalProtocolError, ProofError
from protocol.keys import SigningKey
from tests.unit.protocol import samples as S
from tests.unit.protocol.strategies import PROPERTY, signing_keys

origins = st.from_regex(r"[a-z0-9.-]{1,20}/[a-z0-9]{1,10}", fullmatch=True)


@PROPERTY
@given(origin=origins, size=st.integers(0, 2**63), root=st.binary(min_size=32, max_size=32), key=signing_keys,
       ext=st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
                    max_size=2))
def test_sign_parse_verify_round_trip(origin: str, size: int, root: bytes, key: SigningKey, ext: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(ext))
    note = sign_checkpoint(cp, origin, key)
    text = note.text()
    opened, parsed = open_checkpoint(text, NoteVerifier(origin, key.public))
    assert opened == cp
    assert parsed.text() == text
    assert Checkpoint.parse_body(cp.body()) == cp
    assert open_checkpoint(text.encode(), NoteVerifier(origin, key.public))[0] == cp


def test_body_is_the_c2sp_text_format() -> None:
    cp = S.checkpoint()
    assert cp.body() == f"{S.LOG_NAME}\n42\n{base64.b64encode(cp.root).decode()}\n"
    note = S.signed_checkpoint_text()
    _, sig_line = note.split("\n\n")
    assert sig_line.startswith("\u2014 custody.example/log ")
    blob = base64.b64decode(sig_line.split(" ")[-1])
    assert blob[:4] == key_hash(S.LOG_NAME, SIG_ED25519, S.SERVER_KEY.public.raw)
    assert len(blob) == 4 + 64


@PROPERTY
@given(timestamp=st.integers(0, 2**40))
def test_cosignature_binds_its_timestamp(timestamp: int) -> None:
    note = sign_checkpoint(S.checkpoint(), S.LOG_NAME, S.SERVER_KEY)
    cosigned = note.with_line(cosign_line(note.body, S.WITNESS_NAME, S.WITNESS_KEY, timestamp))
    assert cosigned.verify(S.WITNESS_VERIFIER) == timestamp
    assert cosigned.verify(S.LOG_VERIFIER) is None
    assert len(cosigned.signatures) == 2
    # The same line again is not added twice.
    again = cosigned.with_line(cosign_line(note.body, S.WITNESS_NAME, S.WITNESS_KEY, timestamp))
    assert again == cosigned
    # Changing the timestamp in the line (without re-signing) breaks the cosignature.
    sig = cosigned.signatures[1]
    moved = (timestamp + 1).to_bytes(8, "big") + sig.blob[8:]
    tampered = SignedNote(cosigned.body, (cosigned.signatures[0], type(sig)(sig.name, sig.key_hash, moved)))
    with pytest.raises(ProofError, match="does not verify") as err:
        tampered.verify(S.WITNESS_VERIFIER)
    assert err.value.code == "bad_checkpoint_signature"


def test_cosignature_message_is_the_c2sp_one() -> None:
    assert cosignature_message("o\n1\nAA==\n", 1700) == b"cosignature/v1\ntime 1700\no\n1\nAA==\n"


@PROPERTY
@given(key=signing_keys, name=st.from_regex(r"[a-z0-9./_-]{1,30}", fullmatch=True),
       sig_type=st.sampled_from([SIG_ED25519, SIG_COSIGNATURE_V1]))
def test_vkey_round_trip(key: SigningKey, name: str, sig_type: int) -> None:
    verifier = NoteVerifier(name, key.public, sig_type)
    assert NoteVerifier.from_vkey(verifier.vkey()) == verifier
    assert NoteVerifier.from_vkey(verifier.vkey() + "\n") == verifier


def test_vkey_whose_key_base64_contains_plus() -> None:
    # The fixed witness key's base64 holds '+': the text is split at the first two '+' only.
    text = S.WITNESS_VERIFIER.vkey()
    assert text.count("+") > 2
    assert NoteVerifier.from_vkey(text) == S.WITNESS_VERIFIER


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nohash", "must be name\\+hash\\+key"),
        ("a+b", "must be name\\+hash\\+key"),
        ("a+00000000+!!!!", "verifier key is not base64"),
        ("a+00000000+" + base64.b64encode(b"\x01" + b"k" * 31).decode(), "not an Ed25519 or cosignature/v1 key"),
        ("a+00000000+" + base64.b64encode(b"\x02" + b"k" * 32).decode(), "not an Ed25519 or cosignature/v1 key"),
        ("a+00000000+" + base64.b64encode(b"\x01" + b"k" * 32).decode(), "key hash does not match"),
        ("+00000000+" + base64.b64encode(b"\x01" + b"k" * 32).decode(), "bad verifier key"),
    ],
)
def test_bad_vkeys(text: str, match: str) -> None:
    with pytest.raises(ProofError, match=match) as err:
        NoteVerifier.from_vkey(text)
    assert err.value.code == "bad_vkey"


def test_wrong_origin_is_refused() -> None:
    other = sign_checkpoint(Checkpoint("other.example/log", 1, bytes(32)), S.LOG_NAME, S.SERVER_KEY)
    with pytest.raises(ProofError, match=r"checkpoint of log 'other\.example/log'") as err:
        open_checkpoint(other.text(), S.LOG_VERIFIER)
    assert err.value.code == "wrong_log"


def test_a_note_signed_by_another_key_under_the_log_name_is_refused() -> None:
    note = sign_checkpoint(S.checkpoint(), S.LOG_NAME, S.ROGUE_SERVER_KEY)
    with pytest.raises(ProofError, match=r"carries no signature by custody\.example/log") as err:
        open_checkpoint(note.text(), S.LOG_VERIFIER)
    assert err.value.code == "missing_checkpoint_signature"


def test_an_altered_body_is_refused() -> None:
    text = S.signed_checkpoint_text().replace("\n42\n", "\n43\n")
    with pytest.raises(ProofError, match="does not verify") as err:
        open_checkpoint(text, S.LOG_VERIFIER)
    assert err.value.code == "bad_checkpoint_signature"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("custody.example/log\n42\n", "no signature block"),
        ("custody.example/log\n42\nAAAA\n\n", "note has no signatures"),
        ("custody.example/log\n42\nAAAA\n\nno dash AAAA\n", "malformed signature line"),
        ("custody.example/log\n42\nAAAA\n\n\u2014 name AAA=\n", "malformed signature line"),
        ("custody.example/log\n42\nAAAA\n\n\u2014 name !!!!\n", "signature is not base64"),
        ("custody.example/log\n42\nAAAA\n\n\u2014 name AAAAAAAA", "no signature block"),
        (b"\xff\n\n", "not UTF-8"),
        (b"x" * (64 * 1024 + 1), "too large"),
    ],
)
def test_malformed_notes(text: str | bytes, match: str) -> None:
    with pytest.raises(ProofError, match=match) as err:
        SignedNote.parse(text)
    assert err.value.code == "bad_checkpoint"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("o\n1\nAAAA", "must end with a newline"),
        ("o\n1\n", "fewer than three lines"),
        ("o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n", "'01' is not a decimal number"),
        ("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", "'-1' is not a decimal number"),
        ("o\n\u00b2\n" + base64.b64encode(bytes(32)).decode() + "\n", "is not a decimal number"),
        ("o\n\u0663\n" + base64.b64encode(bytes(32)).decode() + "\n", "is not a decimal number"),
        ("o\n1\n!!!!\n", "checkpoint root is not base64"),
        ("o\n1\nAAAA\n", "root must be 32 bytes"),
        ("\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", "origin must be one non-empty line"),
        ("o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n", "extension lines must be non-empty"),
    ],
)
def test_bad_checkpoint_bodies(body: str, match: str) -> None:
    with pytest.raises(ProofError, match=match) as err:
        Checkpoint.parse_body(body)
    assert err.value.code == "bad_checkpoint"


def test_building_a_bad_checkpoint_or_verifier_is_our_error() -> None:
    with pytest.raises(LocalProtocolError, match="origin"):
        Checkpoint(" log", 1, bytes(32))
    with pytest.raises(LocalProtocolError, match="size"):
        Checkpoint("log", -1, bytes(32))
    with pytest.raises(LocalProtocolError, match="no spaces and no"):
        NoteVerifier("a+b", S.SERVER_KEY.public)
    with pytest.raises(LocalProtocolError, match="only Ed25519"):
        NoteVerifier("a", S.SERVER_KEY.public, 0x02)
