"""Signed HTTP requests from devices: sign/verify, header case, freshness, body, key, replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import RequestAuthError
from protocol.httpsig import (
    DEFAULT_WINDOW_MS,
    H_BODY,
    H_DEVICE,
    H_KEY_ID,
    H_NONCE,
    H_SIGNATURE,
    H_TIME,
    HEADERS,
    NonceWindow,
    SignedRequest,
    sign_request,
)
from protocol.keys import SigningKey
from tests.unit.protocol import samples as S
from tests.unit.protocol.strategies import PROPERTY, nonces, signing_keys

KEY = S.DEVICE_KEY
T0 = S.T0


def _signed(method: str = "POST", path: str = "/api/v1/x?a=1", body: bytes = b"{}", now: int = T0,
            nonce: str | None = "ab" * 16, key: SigningKey = KEY) -> SignedRequest:
    return SignedRequest.from_headers(sign_request(key, method, path, body, now, nonce=nonce))


@PROPERTY
@given(
    key=signing_keys,
    method=st.sampled_from(["GET", "POST", "PUT", "get", "Post"]),
    path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60),
    body=st.binary(max_size=200),
    skew=st.integers(-DEFAULT_WINDOW_MS, DEFAULT_WINDOW_MS),
    nonce=nonces,
)
def test_sign_verify_round_trip(key: SigningKey, method: str, path: str, body: bytes, skew: int,
                                nonce: str) -> None:
    headers = sign_request(key, method, path, body, T0, nonce=nonce)
    assert set(headers) == set(HEADERS)
    request = SignedRequest.from_headers(headers)
    assert (request.device_id, request.key_id, request.time_ms, request.nonce) == (
        key.public.device_id, key.key_id, T0, nonce)
    request.verify(key.public, method.upper(), path, body, T0 + skew)
    request.verify(key.public, method.lower(), path, body, T0 - skew)  # the method is case-insensitive


def test_headers_are_read_case_insensitively() -> None:
    headers = sign_request(KEY, "POST", "/p", b"x", T0, nonce="cd" * 16)
    for transform in (str.lower, str.upper, lambda h: h.swapcase()):
        request = SignedRequest.from_headers({transform(k): v for k, v in headers.items()})
        request.verify(KEY.public, "POST", "/p", b"x", T0)


def test_a_fresh_nonce_is_made_when_none_is_given() -> None:
    a = sign_request(KEY, "GET", "/", b"", T0)[H_NONCE]
    b = sign_request(KEY, "GET", "/", b"", T0)[H_NONCE]
    assert a != b
    assert len(a) == 32


@pytest.mark.parametrize(
    ("change", "code", "match"),
    [
        ({"method": "PUT"}, "bad_request_signature", "does not verify"),
        ({"path": "/api/v1/x?a=2"}, "bad_request_signature", "does not verify"),
        ({"body": b"{ }"}, "body_hash_mismatch", "body does not match"),
        ({"now": T0 + DEFAULT_WINDOW_MS + 1}, "stale_request", r"-300 s away|300 s away"),
        ({"now": T0 - DEFAULT_WINDOW_MS - 1000}, "stale_request", "away from the server's clock"),
        ({"key": S.OTHER_DEVICE_KEY.public}, "wrong_key", f"is not the key of device {S.DEVICE_ID}"),
    ],
)
def test_verify_refuses(change: dict[str, object], code: str, match: str) -> None:
    request = _signed()
    args: dict[str, object] = {"key": KEY.public, "method": "POST", "path": "/api/v1/x?a=1", "body": b"{}",
                               "now": T0}
    args.update(change)
    with pytest.raises(RequestAuthError, match=match) as err:
        request.verify(args["key"], args["method"], args["path"], args["body"], args["now"])  # type: ignore[arg-type]
    assert err.value.code == code


def test_the_window_is_the_callers_choice() -> None:
    request = _signed()
    request.verify(KEY.public, "POST", "/api/v1/x?a=1", b"{}", T0 + 60_000, window_ms=60_000)
    with pytest.raises(RequestAuthError, match="window ±59 s") as err:
        request.verify(KEY.public, "POST", "/api/v1/x?a=1", b"{}", T0 + 60_000, window_ms=59_999)
    assert err.value.code == "stale_request"


def test_a_signature_from_another_key_claiming_this_device_fails() -> None:
    headers = sign_request(S.OTHER_DEVICE_KEY, "POST", "/p", b"", T0, nonce="ab" * 16)
    headers[H_DEVICE], headers[H_KEY_ID] = S.DEVICE_ID, KEY.key_id
    with pytest.raises(RequestAuthError, match="does not verify") as err:
        SignedRequest.from_headers(headers).verify(KEY.public, "POST", "/p", b"", T0)
    assert err.value.code == "bad_request_signature"


@pytest.mark.parametrize(
    ("header", "value", "code", "match"),
    [
        (H_SIGNATURE, None, "missing_auth", "missing header Custody-Signature"),
        (H_TIME, None, "missing_auth", "missing header Custody-Time"),
        (H_DEVICE, "NOT-A-DEVICE", "bad_auth_header", "is not a device id"),
        (H_KEY_ID, "xyz", "bad_auth_header", "is not a key id"),
        (H_NONCE, "abc", "bad_auth_header", "16-64 lowercase hex"),
        (H_NONCE, "AB" * 16, "bad_auth_header", "16-64 lowercase hex"),
        (H_TIME, "-1", "bad_auth_header", "not milliseconds since the epoch"),
        (H_TIME, "1.5", "bad_auth_header", "not milliseconds since the epoch"),
        (H_TIME, "1" * 16, "bad_auth_header", "not milliseconds since the epoch"),
        (H_TIME, "", "bad_auth_header", "not milliseconds since the epoch"),
        (H_TIME, "²", "bad_auth_header", "not milliseconds since the epoch"),  # isdigit() but not int()-able
        (H_TIME, "١٧٦٧٢٢٥٦٠٠٠٠٠", "bad_auth_header", "not milliseconds"),  # Arabic-Indic digits
        (H_BODY, "AB" * 32, "bad_auth_header", "lowercase hex SHA-256"),
        (H_BODY, "ab" * 31, "bad_auth_header", "lowercase hex SHA-256"),
        (H_SIGNATURE, "a+b/", "bad_auth_header", "Custody-Signature is not"),
    ],
)
def test_bad_headers_are_refused(header: str, value: str | None, code: str, match: str) -> None:
    headers = sign_request(KEY, "POST", "/p", b"", T0, nonce="ab" * 16)
    if value is None:
        del headers[header]
    else:
        headers[header] = value
    with pytest.raises(RequestAuthError, match=match) as err:
        SignedRequest.from_headers(headers)
    assert err.value.code == code


# -- NonceWindow -----------------------------------------------------------------------------------


def test_nonce_window_refuses_a_replay() -> None:
    window = NonceWindow()
    window.check_and_add(S.DEVICE_ID, "ab" * 16, T0, T0)
    window.check_and_add(S.DEVICE_ID, "cd" * 16, T0, T0)  # another nonce
    window.check_and_add(S.OTHER_DEVICE_ID, "ab" * 16, T0, T0)  # the same nonce from another device
    with pytest.raises(RequestAuthError, match="already used") as err:
        window.check_and_add(S.DEVICE_ID, "ab" * 16, T0, T0 + 1000)
    assert err.value.code == "replayed_request"


def test_nonce_window_forgets_only_nonces_that_can_no_longer_be_fresh() -> None:
    window = NonceWindow(window_ms=1000)
    for i in range(10_001):
        window.check_and_add(S.DEVICE_ID, f"{i:032x}", T0, T0)
    # Past 10,000 entries it evicts, but only nonces older than twice the window.
    window.check_and_add(S.DEVICE_ID, "f" * 32, T0 + 1500, T0 + 1500)
    with pytest.raises(RequestAuthError, match="already used"):
        window.check_and_add(S.DEVICE_ID, f"{5:032x}", T0, T0 + 1500)
    window.check_and_add(S.DEVICE_ID, "e" * 32, T0 + 5000, T0 + 5000)  # now the old ones go
    window.check_and_add(S.DEVICE_ID, f"{5:032x}", T0 + 5000, T0 + 5000)  # a nonce may be reused much later
