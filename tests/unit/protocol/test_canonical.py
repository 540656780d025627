"""Canonical JSON: the fast path is RFC 8785 exactly, and parsing refuses every other spelling."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol.canonical import MAX_SAFE_INT, b64d, b64e, canonical_bytes, parse_canonical
from protocol.errors import EncodingError, LocalProtocolError
from tests.unit.protocol.strategies import PROPERTY, any_char, safe_ints

ascii_keys = st.text(st.characters(max_codepoint=0x7F), max_size=8)
any_keys = st.text(any_char, max_size=6)
strings = st.text(any_char, max_size=30)  # includes C0 controls, DEL, U+2028, astral characters
leaves = st.none() | st.booleans() | safe_ints | strings


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=12,
    )


objects_ascii = st.dictionaries(ascii_keys, json_values(ascii_keys), max_size=5)
objects_any = st.dictionaries(any_keys, json_values(any_keys), max_size=5)


# -- encoding ----------------------------------------------------------------------------------


@PROPERTY
@given(json_values(ascii_keys))
def test_fast_path_equals_rfc8785(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@PROPERTY
@given(json_values(any_keys))
def test_non_ascii_keys_fall_back_to_rfc8785(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+E000 < U+1F600 by code point, but as UTF-16 the emoji is D83D DE00 < E000: JCS puts it first.
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    encoded = canonical_bytes(value)
    assert encoded == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()
    assert encoded == rfc8785.dumps(value)
    assert parse_canonical(encoded) == value
    code_point_order = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(EncodingError, match="canonical form") as err:
        parse_canonical(code_point_order)
    assert err.value.code == "not_canonical"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"a": 1.5}, "float at \\$.a"),
        ({"é": 1.5}, "float at \\$.é"),  # under a non-ASCII key too (the rfc8785 fallback takes floats)
        ({"é": [{"b": 0.0}]}, "float"),
        ({"a": 2**53}, "outside JSON's safe range"),
        ({"é": -(2**53)}, "outside JSON's safe range"),
        ({"a": b"bytes"}, "type bytes"),
        ({1: "x"}, "non-string key"),
        ({"a": "\ud800"}, "lone surrogate"),
        ({"\ud800": 1}, "cannot canonicalize"),
    ],
)
def test_values_outside_the_domain_are_our_error(value: Any, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        canonical_bytes(value)


def test_safe_integer_bounds_are_inside_the_domain() -> None:
    assert canonical_bytes({"a": MAX_SAFE_INT, "b": -MAX_SAFE_INT}) == b'{"a":9007199254740991,"b":-9007199254740991}'


def test_escapes_are_the_jcs_ones() -> None:
    value = {"s": "\b\t\n\f\r\x00\x1f\x7f\"\\/\u2028é\U0001f600"}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value) == '{"s":"\\b\\t\\n\\f\\r\\u0000\\u001f\x7f\\"\\\\/\u2028é\U0001f600"}'.encode()


# -- parsing -----------------------------------------------------------------------------------


@PROPERTY
@given(objects_any)
def test_parse_accepts_exactly_canonical_bytes(obj: dict[str, Any]) -> None:
    assert parse_canonical(canonical_bytes(obj)) == obj


def _outside_strings(data: bytes) -> list[int]:
    """Byte offsets in canonical JSON that are not inside a string (where whitespace is structural)."""
    out, in_string, escaped = [], False, False
    for i, c in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_string = False
            continue
        if c == 0x22:
            in_string = True
        out.append(i)
    out.append(len(data))
    return out


@PROPERTY
@given(obj=objects_ascii, data=st.data())
def test_parse_refuses_insignificant_whitespace(obj: dict[str, Any], data: st.DataObject) -> None:
    encoded = canonical_bytes(obj)
    pos = data.draw(st.sampled_from(_outside_strings(encoded)))
    space = data.draw(st.sampled_from([b" ", b"\n", b"\t", b"\r", b"  "]))
    with pytest.raises(EncodingError):
        parse_canonical(encoded[:pos] + space + encoded[pos:])


@PROPERTY
@given(obj=st.dictionaries(ascii_keys, json_values(ascii_keys), min_size=2, max_size=5), data=st.data())
def test_parse_refuses_keys_out_of_order(obj: dict[str, Any], data: st.DataObject) -> None:
    keys = data.draw(st.permutations(sorted(obj)))
    assume(list(keys) != sorted(obj))
    members = b",".join(canonical_bytes(k) + b":" + canonical_bytes(obj[k]) for k in keys)
    with pytest.raises(EncodingError, match="canonical form") as err:
        parse_canonical(b"{" + members + b"}")
    assert err.value.code == "not_canonical"


def _u_escape(c: str) -> str:
    units = c.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}" for i in range(0, len(units), 2))


@PROPERTY
@given(
    s=st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"], exclude_characters='"\\'),
              min_size=1, max_size=20),
    data=st.data(),
)
def test_parse_refuses_unnecessary_unicode_escapes(s: str, data: st.DataObject) -> None:
    """Any character JCS writes literally, written as \\uXXXX (or a surrogate pair), is not canonical."""
    i = data.draw(st.integers(0, len(s) - 1))
    escaped = s[:i] + _u_escape(s[i]) + s[i + 1:]
    spelled = ('{"k":"' + escaped + '"}').encode()
    assert json.loads(spelled) == {"k": s}  # the same value...
    with pytest.raises(EncodingError, match="canonical form"):  # ...but not its canonical spelling
        parse_canonical(spelled)


@pytest.mark.parametrize(
    ("data", "code", "match"),
    [
        (b'{"a":"\\u0041"}', "not_canonical", "canonical form"),
        (b'{"a":"\\/"}', "not_canonical", "canonical form"),
        (b'{"a":"\\u001F"}', "not_canonical", "canonical form"),  # JCS hex digits are lowercase
        (b'{"a":"\\u000a"}', "not_canonical", "canonical form"),  # JCS writes \n
        (b'{"a":-0}', "not_canonical", "canonical form"),
        (b'{"a":01}', "bad_encoding", "not JSON"),
        (b'{"a":-01}', "bad_encoding", "not JSON"),
        (b'{"a":1e2}', "bad_encoding", "not an integer"),
        (b'{"a":1.0}', "bad_encoding", "not an integer"),
        (b'{"a":NaN}', "bad_encoding", "NaN is not JSON"),
        (b'{"a":Infinity}', "bad_encoding", "Infinity is not JSON"),
        (b'{"a":1,"a":1}', "bad_encoding", "duplicate key 'a'"),
        (b'{"a":9007199254740992}', "bad_encoding", "safe range"),
        (b"\xef\xbb\xbf{}", "bad_encoding", "not JSON"),  # a BOM
        (b'{"a":"\xff"}', "bad_encoding", "not UTF-8 at byte 6"),
        (b"[1]", "bad_encoding", "not a JSON object"),
        (b'"a"', "bad_encoding", "not a JSON object"),
        (b"", "truncated", "empty message"),
        (b'{"a":"b', "truncated", "Unterminated string"),
        (b'{"a":', "truncated", "Expecting value"),
        (b'{"a":1', "truncated", "delimiter"),
        (b'{"a":' + b"1" * 5000 + b"}", "bad_encoding", "4300 digits"),
        (b"[" * 5000 + b"]" * 5000, "bad_encoding", "nested too deeply"),
        (b'{"a":' + b"[" * 990 + b"]" * 990 + b"}", "bad_encoding", "nested too deeply"),
    ],
)
def test_parse_refuses(data: bytes, code: str, match: str) -> None:
    with pytest.raises(EncodingError, match=match) as err:
        parse_canonical(data)
    assert err.value.code == code


def test_parse_enforces_the_size_limit_before_parsing() -> None:
    with pytest.raises(EncodingError, match="exceeds the limit of 10") as err:
        parse_canonical(b'{"a":"0123456789"}', max_bytes=10)
    assert err.value.code == "oversize"


# -- base64url -------------------------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=100))
def test_b64_round_trip(raw: bytes) -> None:
    text = b64e(raw)
    assert "=" not in text
    assert b64d(text) == raw


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("AA==", "not unpadded base64url"),
        ("AB", "not in canonical base64url form"),  # non-zero unused bits: a second spelling of one byte
        ("A", "not base64url"),
        ("A+/A", "not unpadded base64url"),  # the standard alphabet
        ("AA AA", "not base64url: Only base64 data"),
        ("AA\n", "not base64url: Only base64 data"),
        ("AAé", "not unpadded base64url"),
    ],
)
def test_b64_refuses_non_canonical_text(text: str, match: str) -> None:
    with pytest.raises(EncodingError, match=match):
        b64d(text)
