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
from collections.abc import Callable, Mapping
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

    def __post_init__(self) -> None:
        plan = _plan_of(type(self))
        try:
            bad = plan.type_check(self)
            if bad is not None:
                raise Invalid(f"field {bad} must be {_describe(plan.hints[bad])}", "wrong_type")
            self._check()
        except Invalid as exc:
            raise LocalProtocolError(f"{type(self).__name__}: {exc}", code=exc.code) from None

    def _check(self) -> None:
        """Range and pattern rules; override in subclasses."""

    # -- dict form ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object form (binary as base64url, nested messages as objects)."""
        return {key: _to_json(getattr(self, key)) for key in _plan_of(type(self)).hints}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        """Build from a JSON object received from a peer; raise :class:`SchemaError` on any violation."""
        name = cls.__name__
        if type(obj) is not dict and not isinstance(obj, Mapping):
            raise SchemaError(f"{name}: expected a JSON object", code="wrong_type")
        plan = _plan_of(cls)
        if obj.keys() != plan.names:
            unknown = sorted(set(obj) - plan.names)
            if unknown:
                raise SchemaError(f"{name}: unknown field {', '.join(unknown)}", code="unknown_field")
            missing = sorted(plan.names - set(obj))
            raise SchemaError(f"{name}: missing field {', '.join(missing)}", code="missing_field")
        if "v" in plan.names and obj["v"] != cls.VERSION:
            raise SchemaError(
                f"{name}: version {obj['v']!r} is not supported (this build speaks v{cls.VERSION})",
                code="unsupported_version",
            )
        kwargs = dict(obj)
        try:
            # Only binary, nested and list fields need converting; every other value is checked
            # once, by __post_init__, when the instance is built.
            for key, convert in plan.converters:
                kwargs[key] = convert(kwargs[key], key)
            return cls(**kwargs)
        except Invalid as exc:
            raise SchemaError(f"{name}: {exc}", code=exc.code) from None
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


Checker = Callable[[Any], bool]
Converter = Callable[[Any, str], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """Per-class validation plan, compiled once from the type hints (the hot path of every parse)."""

    names: frozenset[str]
    hints: dict[str, Any]
    type_check: Callable[[Any], str | None]
    converters: tuple[tuple[str, Converter], ...]


_PLANS: dict[type, _Plan] = {}


def _plan_of(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        all_hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls)]
        hints = {name: all_hints[name] for name in fields}
        converters = tuple(
            (name, conv) for name in fields if (conv := _compile_convert(hints[name])) is not None
        )
        plan = _PLANS[cls] = _Plan(frozenset(fields), hints, _generate_type_check(hints), converters)
    return plan


def _generate_type_check(hints: dict[str, Any]) -> Callable[[Any], str | None]:
    """One generated function checking every field's type inline, returning the first bad field.

    Generated source (as dataclasses and attrs do) because a call per field was most of the
    cost of parsing a manifest; the checks themselves are exact-type tests.
    """
    env: dict[str, Any] = {"_Mapping": Mapping, "_json_ok": _json_object_ok}
    lines = ["def type_check(self):"]
    for i, (name, hint) in enumerate(hints.items()):
        env[f"_c{i}"] = _compile_check(hint)
        expr = _inline_check(hint, f"self.{name}")
        if expr is None:
            expr = f"_c{i}(self.{name})"
        lines.append(f"    if not ({expr}): return {name!r}")
    lines.append("    return None")
    exec("\n".join(lines), env)  # noqa: S102 - source built above from field names only
    fn: Callable[[Any], str | None] = env["type_check"]
    return fn


def _inline_check(hint: Any, ref: str) -> str | None:
    simple = {int: "int", str: "str", bool: "bool", bytes: "bytes"}
    if hint in simple:
        return f"type({ref}) is {simple[hint]}"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        non_none = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(non_none) == 1 and non_none[0] in simple:
            return f"{ref} is None or type({ref}) is {simple[non_none[0]]}"
    return None


def _compile_check(hint: Any) -> Checker:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            inner = _compile_check(non_none[0])
            return lambda v: v is None or inner(v)
        parts = [_compile_check(h) for h in args]
        return lambda v: any(p(v) for p in parts)
    if hint is type(None):
        return lambda v: v is None
    if hint in (int, str, bool, bytes):
        exact: type = hint
        return lambda v: type(v) is exact
    if origin is tuple:
        item = _compile_check(typing.get_args(hint)[0])
        return lambda v: type(v) is tuple and all(item(x) for x in v)
    if origin is dict or hint is dict:
        return lambda v: isinstance(v, Mapping) and _json_object_ok(v)
    if isinstance(hint, type):
        cls: type = hint
        return lambda v: isinstance(v, cls)
    raise TypeError(f"unsupported field type {hint!r}")  # pragma: no cover - a schema bug


def _compile_convert(hint: Any) -> Converter | None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _compile_convert(non_none[0]) if len(non_none) == 1 else None
        if inner is None:
            return None
        conv: Converter = inner
        return lambda v, path: None if v is None else conv(v, path)
    if hint is bytes:
        return _convert_bytes
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        item_conv = _compile_convert(item_hint)

        def convert_list(v: Any, path: str) -> tuple[Any, ...]:
            if not isinstance(v, list):
                raise Invalid(f"field {path} must be a list", "wrong_type")
            if item_conv is None:
                return tuple(v)
            return tuple(item_conv(x, f"{path}[{i}]") for i, x in enumerate(v))

        return convert_list
    if isinstance(hint, type) and issubclass(hint, Message):
        msg_cls: type[Message] = hint

        def convert_message(v: Any, path: str) -> Message:
            try:
                return msg_cls.from_dict(v)
            except SchemaError as exc:
                raise Invalid(f"field {path}: {exc}", exc.code) from None

        return convert_message
    return None


def _convert_bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise Invalid(f"field {path} must be base64url text", "wrong_type")
    try:
        return b64d(value, field=path)
    except RemoteProtocolError as exc:
        raise Invalid(str(exc), "bad_encoding") from None


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
