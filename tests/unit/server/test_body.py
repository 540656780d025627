"""Strict JSON bodies: unknown fields, types and bounds each with their own code."""

from __future__ import annotations

import pytest

from server.api.body import Body, F
from server.errors import BadRequest

BODY = Body("T", {"n": F("integer", lo=0, hi=10), "s": F("string", required=False, pattern=r"[a-z]+", max_len=5)})


@pytest.mark.parametrize(("raw", "code"), [
    (b"", "missing_body"), (b"[1]", "wrong_type"), (b"{", "bad_json"), (b'{"n":1,"x":2}', "unknown_field"),
    (b'{"s":"a"}', "missing_field"), (b'{"n":true}', "wrong_type"), (b'{"n":1.5}', "wrong_type"),
    (b'{"n":11}', "out_of_range"), (b'{"n":1,"s":"ABC"}', "bad_value"), (b'{"n":1,"s":"abcdef"}', "out_of_range"),
    (b'{"n":NaN}', "bad_json"), (b'{"n":1,"s":"a\\u0000"}', "bad_value"), (b'{"n":null}', "wrong_type"),
])
def test_refusals(raw: bytes, code: str) -> None:
    with pytest.raises(BadRequest) as info:
        BODY.parse(raw)
    assert info.value.code == code


def test_accepts_and_documents() -> None:
    assert BODY.parse(b'{"n":3,"s":"ab"}') == {"n": 3, "s": "ab"}
    schema = BODY.schema()
    assert schema["required"] == ["n"]
    assert schema["additionalProperties"] is False
