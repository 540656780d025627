"""Enrollment tokens and the device's check of the enrollment answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.canonical import b64e, canonical_bytes
from protocol.enrollment import EnrollmentToken, open_enrollment_answer
from protocol.errors import SchemaError, SignatureError
from tests.unit.protocol import samples as S
from tests.unit.protocol.strategies import PROPERTY

secrets_ = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                   min_size=22, max_size=64)
fingerprints = st.binary(min_size=32, max_size=32).map(bytes.hex)
urls = st.builds(lambda scheme, host: f"{scheme}://{host}", st.sampled_from(["http", "https"]),
                 st.text(st.characters(min_codepoint=0x21, exclude_categories=["Cs"]), min_size=1, max_size=40))


@PROPERTY
@given(secret=secrets_, fp=fingerprints, url=urls)
def test_token_round_trip(secret: str, fp: str, url: str) -> None:
    token = EnrollmentToken(secret, fp, url)
    text = token.to_string()
    assert text.startswith("cet1.")
    assert EnrollmentToken.parse(text) == token
    assert EnrollmentToken.parse(f"  {text}\n") == token  # pasted with whitespace around it


def test_the_token_pins_the_server_key() -> None:
    assert S.TOKEN.server_fingerprint == S.SERVER_KEY.public.fingerprint


def _token_of(obj: object) -> str:
    return "cet1." + b64e(canonical_bytes(obj))


GOOD = S.TOKEN.to_string()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not an enrollment token"),
        ("cet2." + GOOD[5:], "not an enrollment token .it should start with 'cet1.'"),
        (GOOD[5:], "not an enrollment token"),
        (GOOD[:-1], "enrollment token is damaged"),
        (GOOD[:-3], "enrollment token is damaged"),
        (GOOD + "A", "enrollment token is damaged"),
        (GOOD[:20] + "!" + GOOD[21:], "enrollment token is damaged"),
        (GOOD[:40] + ("B" if GOOD[40] != "B" else "C") + GOOD[41:], "enrollment token is damaged"),
        ("cet1." + b64e(b"[1,2]"), "damaged: message is not a JSON object"),
        ("cet1." + b64e(b'{"fp": "x"}'), "damaged: bytes are not in RFC 8785 canonical form"),
        (_token_of({"fp": S.TOKEN.server_fingerprint, "s": S.TOKEN.secret}), "damaged: unexpected fields"),
        (_token_of({"fp": 1, "s": S.TOKEN.secret, "url": S.API_URL}), "damaged: unexpected fields"),
        (_token_of({"fp": "ab", "s": S.TOKEN.secret, "url": S.API_URL}), "fingerprint must be 64 lowercase hex"),
        (_token_of({"fp": S.TOKEN.server_fingerprint, "s": "short", "url": S.API_URL}), "secret must be 22-64"),
        (_token_of({"fp": S.TOKEN.server_fingerprint, "s": S.TOKEN.secret, "url": "ftp://x"}), "must be http"),
    ],
)
def test_damaged_tokens_say_what_is_wrong(text: str, match: str) -> None:
    with pytest.raises(SchemaError, match=match) as err:
        EnrollmentToken.parse(text)
    assert err.value.code == "bad_token"


def test_the_device_opens_the_answer_of_the_pinned_server() -> None:
    answer, cert = open_enrollment_answer(S.TOKEN, S.enrollment_answer().sign(S.SERVER_KEY).raw,
                                          S.DEVICE_KEY.public.raw)
    assert cert.device_id == S.DEVICE_ID
    assert cert.verify_key == S.DEVICE_KEY.public
    assert [k.key_id for k in answer.server_keys] == [S.SERVER_KEY.key_id, S.OLD_SERVER_KEY.key_id]
    assert answer.mqtt_username == S.DEVICE_ID


def test_a_token_pinning_an_earlier_key_still_opens_an_answer_signed_by_that_key() -> None:
    old_token = EnrollmentToken(S.TOKEN.secret, S.OLD_SERVER_KEY.public.fingerprint, S.API_URL)
    cert = S.device_certificate().sign(S.OLD_SERVER_KEY).raw
    data = S.enrollment_answer(certificate=cert).sign(S.OLD_SERVER_KEY).raw
    _, opened = open_enrollment_answer(old_token, data, S.DEVICE_KEY.public.raw)
    assert opened.device_id == S.DEVICE_ID
    with pytest.raises(SignatureError, match="signed by key"):  # the current key's token refuses it
        open_enrollment_answer(S.TOKEN, data, S.DEVICE_KEY.public.raw)


def test_an_answer_for_another_device_key_is_refused() -> None:
    data = S.enrollment_answer().sign(S.SERVER_KEY).raw
    with pytest.raises(SignatureError, match="certifies another device's key") as err:
        open_enrollment_answer(S.TOKEN, data, S.OTHER_DEVICE_KEY.public.raw)
    assert err.value.code == "wrong_device"
