"""The machinery behind Custody's message types: frozen dataclasses validated when built.

Each message class lists its fields with type hints; :class:`Message` checks every field's
type when an instance is built (so an invalid message cannot exist), refuses unknown and
missing fields when parsing, and gives each wire type exactly one ``to_bytes`` / ``from_bytes``
pair. Range and pattern rules live in each class's ``_check``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from protocol.canonical import DEFAULT_MAX_MESSAGE_BYTES, MAX_SAFE_INT, b64d, b64e, canonical_bytes, parse_canonical
from protocol.errors import LocalProtocolError, RemoteProtocolError, SchemaError

#: Plausible wall-clock times: 2000-01-01 to 2100-01-01 UTC, in milliseconds.
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 4_102_444_800_000

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_DEVICE_ID_RE = re.compile(r"[a-z2-7]{24}")
_HEX32_RE = re.compile(r"[0-9a-f]{64}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_NONCE_RE = re.compile(r"[0-9a-f]{16,64}")
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")

MAX_TEXT = 1024


class Invalid(Exception):
    """Raised by field checks; turned into a SchemaError (peer) or LocalProtocolError (us)."""

    def __init__(self, message: str, code: str = "bad_schema") -> None:
        super().__init__(message)
        self.code = code


def check_id(name: str, value: str | None, *, optional: bool = False) -> None:
    """An identifier: 1-64 chars of letters, digits and ``._:-``, starting with a letter or digit."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise Invalid(f"{name} {value!r} is not a valid identifier", "bad_id")


def check_device_id(name: str, value: str) -> None:
    """A device id as :func:`protocol.keys.device_id_for` makes it."""
    if not _DEVICE_ID_RE.fullmatch(value):
        raise Invalid(f"{name} {value!r} is not a device id", "bad_id")


def check_hex32(name: str, value: str | None, *, optional: bool = False) -> None:
    """A SHA-256 value as 64 lowercase hex digits."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not _HEX32_RE.fullmatch(value):
        raise Invalid(f"{name} is not 64 lowercase hex digits", "bad_hash")


def check_key_id(name: str, value: str) -> None:
    """A key id (16 lowercase hex digits)."""
    if not _KEY_ID_RE.fullmatch(value):
        raise Invalid(f"{name} {value!r} is not a key id", "bad_id")


def check_nonce(name: str, value: str) -> None:
    """A nonce: 16 to 64 lowercase hex digits (64 to 256 bits)."""
    if not _NONCE_RE.fullmatch(value):
        raise Invalid(f"{name} is not 16-64 lowercase hex digits", "bad_nonce")


def check_name(name: str, value: str) -> None:
    """A lowercase snake_case word (kinds, states, statuses)."""
    if not _NAME_RE.fullmatch(value):
        raise Invalid(f"{name} {value!r} is not a lowercase name", "bad_schema")


def check_time(name: str, value: int | None, *, optional: bool = False) -> None:
    """Milliseconds since the epoch between 2000 and 2100."""
    if value is None and optional:
        return
    if not isinstance(value, int) or not MIN_TIME_MS <= value < MAX_TIME_MS:
        raise Invalid(f"{name} {value} is out of range (2000-01-01 to 2100-01-01 in ms)", "time_out_of_range")


def check_range(name: str, value: int | None, lo: int, hi: int = MAX_SAFE_INT, *, optional: bool = False) -> None:
    """An integer within ``[lo, hi]``."""
    if value is None and optional:
        return
    if not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{name} {value} is out of range [{lo}, {hi}]", "out_of_range")


def check_text(name: str, value: str | None, *, optional: bool = False, max_len: int = MAX_TEXT) -> None:
    """Free text, bounded, without control characters."""
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > max_len:
        raise Invalid(f"{name} is longer than {max_len} characters", "out_of_range")
    if any(ord(c) < 0x20 for c in value):
        raise Invalid(f"{name} contains control characters", "bad_schema")


def check_one_of(name: str, value: str, allowed: typing.Collection[str]) -> None:
    """A value from a closed set."""
    if value not in allowed:
        raise Invalid(f"{name} {value!r} is not one of {', '.join(sorted(allowed))}", "bad_value")


def _json_object_ok(value: object, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return not isinstance(value, str) or len(value) <= MAX_TEXT
    if isinstance(value, int):
        return -MAX_SAFE_INT <= value <= MAX_SAFE_INT
    if isinstance(value, Mapping):
        return len(value) <= 64 and all(
            isinstance(k, str) and _NAME_RE.fullmatch(k) and _json_object_ok(v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return len(value) <= 256 and all(_json_object_ok(v, depth + 1) for v in value)
    return False


class Message:
    """Base of every Custody wire type (a frozen dataclass)."""

    #: Signed-envelope payload type, for the messages that travel signed.
    PAYLOAD_TYPE: ClassVar[str] = ""
    #: The only ``v`` this build speaks.
    VERSION: ClassVar[int] = 1
    _hints: ClassVar[dict[str, Any]]

    def __post_init__(self) -> None:
        try:
            _check_types(self)
            self._check()
        except Invalid as exc:
            raise LocalProtocolError(f"{type(self).__name__}: {exc}", code=exc.code) from None

    def _check(self) -> None:
        """Range and pattern rules; override in subclasses."""

    # -- dict form ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object form (binary as base64url, nested messages as objects)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _to_json(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        """Build from a JSON object received from a peer; raise :class:`SchemaError` on any violation."""
        name = cls.__name__
        if not isinstance(obj, Mapping):
            raise SchemaError(f"{name}: expected a JSON object", code="wrong_type")
        hints = _hints_of(cls)
        unknown = sorted(set(obj) - set(hints))
        if unknown:
            raise SchemaError(f"{name}: unknown field {', '.join(unknown)}", code="unknown_field")
        missing = sorted(k for k in hints if k not in obj)
        if missing:
            raise SchemaError(f"{name}: missing field {', '.join(missing)}", code="missing_field")
        if "v" in hints and obj["v"] != cls.VERSION:
            raise SchemaError(
                f"{name}: version {obj['v']!r} is not supported (this build speaks v{cls.VERSION})",
                code="unsupported_version",
            )
        kwargs: dict[str, Any] = {}
        for key, hint in hints.items():
            try:
                kwargs[key] = _from_json(hint, obj[key], f"{key}")
            except Invalid as exc:
                raise SchemaError(f"{name}: {exc}", code=exc.code) from None
        try:
            return cls(**kwargs)
        except LocalProtocolError as exc:  # the peer's values broke a rule: their fault, not ours
            raise SchemaError(str(exc), code=exc.code) from None

    # -- bytes form --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (RFC 8785)."""
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Self:
        """Parse canonical JSON bytes from a peer."""
        return cls.from_dict(parse_canonical(data, max_bytes=max_bytes))


def _hints_of(cls: type) -> dict[str, Any]:
    cached = cls.__dict__.get("_hints")
    if cached is None:
        cached = typing.get_type_hints(cls)
        cached = {f.name: cached[f.name] for f in dataclasses.fields(cls)}
        cls._hints = cached  # type: ignore[attr-defined]
    return cached


def _check_types(msg: Message) -> None:
    for key, hint in _hints_of(type(msg)).items():
        if not _isinstance(getattr(msg, key), hint):
            raise Invalid(f"field {key} must be {_describe(hint)}", "wrong_type")


def _isinstance(value: object, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_isinstance(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        return isinstance(value, tuple) and all(_isinstance(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, Mapping) and _json_object_ok(value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return False


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict or hint is dict:
        return "a JSON object"
    if hint is bytes:
        return "base64url text"
    return {int: "an integer", str: "a string", bool: "a boolean"}.get(hint, getattr(hint, "__name__", str(hint)))


def _to_json(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_dict()
    if isinstance(value, bytes):
        return b64e(value)
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _from_json(non_none[0], value, path)
        raise Invalid(f"field {path} has an unsupported union type")  # pragma: no cover - schema bug
    if hint is bytes:
        if not isinstance(value, str):
            raise Invalid(f"field {path} must be base64url text", "wrong_type")
        try:
            return b64d(value, field=path)
        except RemoteProtocolError as exc:
            raise Invalid(str(exc), "bad_encoding") from None
    if origin is tuple:
        if not isinstance(value, list):
            raise Invalid(f"field {path} must be a list", "wrong_type")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_from_json(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, Message):
        try:
            return hint.from_dict(value)
        except SchemaError as exc:
            raise Invalid(f"field {path}: {exc}", exc.code) from None
    if not _isinstance(value, hint):
        raise Invalid(f"field {path} must be {_describe(hint)}", "wrong_type")
    return value
