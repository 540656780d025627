"""Strict JSON request bodies: declared fields only, exact types, bounds; each failure with its own code.

The same declarations produce the request schemas of the OpenAPI document, so the document
cannot drift from what the server accepts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from server.errors import BadRequest

_TYPES: dict[str, Any] = {"string": str, "integer": int, "boolean": bool, "array": list, "object": dict}


@dataclass(frozen=True, slots=True)
class F:
    """One field of a JSON object (body field or query parameter)."""

    type: str
    doc: str = ""
    required: bool = True
    nullable: bool = False
    lo: int | None = None
    hi: int | None = None
    max_len: int = 200
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    #: Strings only: newlines and tabs are allowed (a YAML document); other control characters never are.
    multiline: bool = False
    #: Arrays only: the type of every item, and how many there may be.
    items: F | None = None
    max_items: int = 50

    def schema(self) -> dict[str, Any]:
        """JSON Schema (OpenAPI 3.0 dialect) of this field."""
        s: dict[str, Any] = {"type": self.type, "description": self.doc}
        if self.nullable:
            s["nullable"] = True
        if self.lo is not None:
            s["minimum"] = self.lo
        if self.hi is not None:
            s["maximum"] = self.hi
        if self.type == "array" and self.items is not None:
            s["items"] = self.items.schema()
            s["maxItems"] = self.max_items
        if self.type == "string":
            s["maxLength"] = self.max_len
            if self.pattern:
                s["pattern"] = f"^{self.pattern}$"
            if self.enum:
                s["enum"] = list(self.enum)
        return s

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` if it fits, else raise :class:`BadRequest` with a precise code."""
        if value is None:
            if self.nullable:
                return None
            raise BadRequest(f"{name} must not be null", code="wrong_type", field=name)
        # bool is an int in Python, never in JSON.
        if not isinstance(value, _TYPES[self.type]) or (self.type == "integer" and isinstance(value, bool)):
            raise BadRequest(f"{name} must be a{'n' if self.type[0] in 'ai' else ''} {self.type}",
                             code="wrong_type", field=name)
        if self.type == "integer" and ((self.lo is not None and value < self.lo)
                                       or (self.hi is not None and value > self.hi)):
            raise BadRequest(f"{name} must be between {self.lo} and {self.hi}", code="out_of_range", field=name)
        if self.type == "array":
            if len(value) > self.max_items:
                raise BadRequest(f"{name} has more than {self.max_items} items", code="out_of_range", field=name)
            assert self.items is not None
            return [self.items.check(f"{name}[{i}]", item) for i, item in enumerate(value)]
        if self.type == "string":
            if len(value) > self.max_len:
                raise BadRequest(f"{name} is longer than {self.max_len} characters", code="out_of_range",
                                 field=name)
            if any(ord(c) < 0x20 and not (self.multiline and c in "\n\r\t") for c in value):
                raise BadRequest(f"{name} contains control characters", code="bad_value", field=name)
            if self.enum and value not in self.enum:
                raise BadRequest(f"{name} must be one of {', '.join(self.enum)}", code="bad_value", field=name)
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise BadRequest(f"{name} {value!r} is not valid", code="bad_value", field=name)
        return value

    def parse_query(self, name: str, text: str) -> Any:
        """Convert a query-string value, then check it."""
        if self.type == "integer":
            if not re.fullmatch(r"-?\d{1,16}", text):
                raise BadRequest(f"{name} must be an integer", code="wrong_type", field=name)
            return self.check(name, int(text))
        if self.type == "boolean":
            if text not in ("true", "false", "1", "0"):
                raise BadRequest(f"{name} must be true or false", code="wrong_type", field=name)
            return text in ("true", "1")
        return self.check(name, text)


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON object body."""

    name: str
    fields: dict[str, F] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        """JSON Schema of the object."""
        return {
            "type": "object",
            "additionalProperties": False,
            "required": [k for k, f in self.fields.items() if f.required],
            "properties": {k: f.schema() for k, f in self.fields.items()},
        }

    def parse(self, raw: bytes) -> dict[str, Any]:
        """Parse and check; unknown fields are refused (a typo must not be silently ignored)."""
        if not raw.strip():
            if any(f.required for f in self.fields.values()):
                raise BadRequest("the request needs a JSON body", code="missing_body")
            return {}
        try:
            value = json.loads(raw, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(f"body is not JSON: {exc}", code="bad_json") from None
        if not isinstance(value, dict):
            raise BadRequest("body must be a JSON object", code="wrong_type")
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            raise BadRequest(f"unknown field {', '.join(unknown)}", code="unknown_field", fields=unknown)
        out: dict[str, Any] = {}
        for name, f in self.fields.items():
            if name not in value:
                if f.required:
                    raise BadRequest(f"missing field {name}", code="missing_field", field=name)
                continue
            out[name] = f.check(name, value[name])
        return out


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")
