"""Canonical JSON (RFC 8785, JCS) for every signed Custody message.

Encoding goes through a fast path (the C ``json`` encoder with sorted keys and no spaces) that
produces byte-identical JCS output for the value domain Custody messages use: ASCII keys,
strings, booleans, null and integers within JSON's safe range; floats are not allowed at all.
Anything outside that domain falls back to the ``rfc8785`` reference implementation. A
property test pins the two to each other. The fast path matters: checking that received bytes
are canonical is on the verification hot path (see bench/protocol_bench.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import rfc8785

from protocol.errors import EncodingError, LocalProtocolError

#: Largest integer JCS can carry exactly (IEEE 754 double); times are milliseconds for this reason.
MAX_SAFE_INT = 2**53 - 1

#: Default upper bound for one message; envelopes are small (a manifest is about 700 bytes).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024

JSONValue = Any  # JSON is recursive; mypy cannot express it usefully without a plugin.

# One encoder instance: json.dumps() with non-default options builds a new encoder per call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_domain(value: object, path: str = "$") -> bool:
    """Raise on values JCS must not carry; return True when the fast encoder is exact for ``value``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise LocalProtocolError(f"integer at {path} is outside JSON's safe range")
        return True
    if isinstance(value, float):
        raise LocalProtocolError(f"float at {path}: Custody messages carry integers only")
    if isinstance(value, Mapping):
        exact = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise LocalProtocolError(f"non-string key at {path}")
            # Python sorts keys by code point, JCS by UTF-16 code unit: identical for ASCII keys.
            # The item is checked first: under a non-ASCII key it must still be refused if it is
            # a float or an unsafe integer (the rfc8785 fallback would encode a float).
            exact = _check_domain(item, f"{path}.{key}") and key.isascii() and exact
        return exact
    if isinstance(value, list | tuple):
        exact = True
        for i, item in enumerate(value):
            exact = _check_domain(item, f"{path}[{i}]") and exact
        return exact
    raise LocalProtocolError(f"value of type {type(value).__name__} at {path} is not JSON")


def canonical_bytes(value: JSONValue) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON (UTF-8 bytes)."""
    if _check_domain(value):
        try:
            return _ENCODER.encode(value).encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates cannot be UTF-8
            raise LocalProtocolError("string is not valid Unicode (lone surrogate)") from exc
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeError) as exc:  # a lone surrogate in a key is a UnicodeError
        raise LocalProtocolError(f"cannot canonicalize: {exc}") from exc


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise EncodingError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_float(text: str) -> Any:
    raise EncodingError(f"number {text} is not an integer; Custody messages carry integers only")


def _reject_constant(text: str) -> Any:
    raise EncodingError(f"{text} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_reject_float, parse_constant=_reject_constant)


# An integer JCS cannot carry (beyond 2**53 - 1) has at least 16 digits. Mapping every digit to
# "9" and searching for 16 of them is several times cheaper than a regex over hex-heavy messages.
_DIGITS_TO_9 = bytes.maketrans(b"0123456789", b"9" * 10)
_SIXTEEN_DIGITS = b"9" * 16


def parse_canonical(data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Parse bytes that must be one canonical JSON object; raise :class:`EncodingError` otherwise."""
    if len(data) > max_bytes:
        raise EncodingError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}", code="oversize")
    if not data:
        raise EncodingError("empty message", code="truncated")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(f"not UTF-8 at byte {exc.start}") from exc
    # Hostile input well under the size limit must not escape as another exception (a crash, or
    # a 500 for the server): a few kilobytes of "[" exceed the recursion limit, an integer of more
    # than 4300 digits exceeds int()'s, and an escaped lone surrogate ("\ud800") cannot be UTF-8.
    try:
        value = _DECODER.decode(text)
        if not isinstance(value, dict):
            raise EncodingError("message is not a JSON object")
        # Fast canonical check: the C encoder with sorted keys is exact JCS for ASCII keys and
        # safe integers. Only bytes that could hold a non-ASCII key or an integer of 16 digits
        # need the walk that confirms that domain (and refuses integers JCS cannot carry).
        # Anything that differs takes the slow path for a precise verdict.
        exact = (data.isascii() and _SIXTEEN_DIGITS not in data.translate(_DIGITS_TO_9)) or _check_domain(value)
        if not exact or _ENCODER.encode(value).encode("utf-8") != data:
            _slow_canonical_check(text, data)
    except json.JSONDecodeError as exc:
        # Cut off mid-string (where a cut usually falls: envelopes are mostly base64 text), json
        # reports the string's start, not the end of the input.
        at_end = exc.pos >= len(text) - 1 or exc.msg.startswith("Unterminated string")
        code = "truncated" if at_end and text[:1] in "{[" else "bad_encoding"
        raise EncodingError(f"not JSON: {exc.msg} at offset {exc.pos}", code=code) from exc
    except LocalProtocolError as exc:  # an integer beyond 2**53 - 1 is the peer's fault here
        raise EncodingError(str(exc)) from exc
    except UnicodeEncodeError:
        raise EncodingError("string is not valid Unicode (lone surrogate)") from None
    except RecursionError:
        raise EncodingError("not JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits (int conversion limit)
        raise EncodingError(f"not JSON: {str(exc).split(';')[0]}") from None
    return value


def _slow_canonical_check(text: str, data: bytes) -> None:
    """Explain why ``data`` is not canonical, or accept it (non-ASCII key order, which JCS sorts by UTF-16)."""
    value = json.loads(text, object_pairs_hook=_reject_duplicates)  # raises on a duplicate key
    try:
        canonical = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, ValueError) as exc:
        raise EncodingError(f"cannot be canonical JSON: {exc}") from exc
    if canonical != data:
        raise EncodingError("bytes are not in RFC 8785 canonical form", code="not_canonical")


def b64e(data: bytes) -> str:
    """Base64url without padding, the text form of every binary field."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def b64d(text: str, *, field: str = "value") -> bytes:
    """Decode base64url without padding, strictly (exactly one encoding per byte string)."""
    if not isinstance(text, str) or not text.isascii():
        raise EncodingError(f"{field} is not unpadded base64url")
    data = text.encode("ascii")
    if b"=" in data or b"+" in data or b"/" in data:
        raise EncodingError(f"{field} is not unpadded base64url")
    return b64d_alphabet_checked(data, field=field)


def b64d_alphabet_checked(data: bytes, *, field: str = "value") -> bytes:
    """:func:`b64d` for bytes already known to hold only ``[A-Za-z0-9_-]`` (the envelope's fast path)."""
    try:
        raw = binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodingError(f"{field} is not base64url: {exc}") from exc
    # Non-zero unused bits in the last character would give a second text for the same bytes.
    tail = len(raw) % 3
    if tail and b64e(raw[-tail:]).encode("ascii") != data[-(tail + 1) :]:
        raise EncodingError(f"{field} is not in canonical base64url form")
    return raw
