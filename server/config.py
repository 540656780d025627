# opt() and section() return dataclasses.field(...), which ruff cannot see through.
# ruff: noqa: RUF009
"""The server's configuration: a typed tree with defaults, bounds and descriptions.

Sources, later ones winning: the defaults below, a YAML or TOML file, then environment variables
named ``CUSTODY_`` plus the upper-cased dotted path with ``_`` for dots (``CUSTODY_HTTP_PORT``,
``CUSTODY_STORAGE_S3_BUCKET``). Unknown keys are errors (a typo must not silently fall back to
a default). Secrets (marked ``secret``) may also come from a file: ``password_file: /run/secrets/x``
or ``CUSTODY_MQTT_PASSWORD_FILE``, so they need not sit in the config file or the environment.

Every problem is reported with where it came from (``FILE:LINE`` or the variable's name); see
:func:`load_config` and ``custody validate-config FILE``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from server.errors import ConfigError

ENV_PREFIX = "CUSTODY_"


class Secret:
    """A secret value: printed as ``***`` so it never lands in a log or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def opt(default: Any, doc: str, *, lo: int | None = None, hi: int | None = None,
        choices: tuple[str, ...] | None = None) -> Any:
    """A config field: default, description, and optional bounds or choices."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices}
    return field(default=default, metadata=meta)


def section(cls: type[Any], doc: str) -> Any:
    """A nested config section."""
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The HTTP API listener."""

    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(8420, "TCP port to listen on (0 picks a free port)", lo=0, hi=65535)
    public_url: str | None = opt(None, "base URL devices and the CLI use to reach the API (default from host/port)")
    tls_cert: Path | None = opt(None, "PEM certificate chain; with tls_key, the API speaks HTTPS")
    tls_key: Path | None = opt(None, "PEM private key of tls_cert")
    max_json_bytes: int = opt(1 << 20, "largest JSON request body", lo=1024, hi=16 << 20)
    access_log: bool = opt(True, "log one line per HTTP request")
    event_loop: str = opt("auto", "the process's event loop: uvloop (libuv; less CPU per request, statement "
                          "and message), asyncio (the standard library's), or auto (uvloop when installed)",
                          choices=("auto", "uvloop", "asyncio"))


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Metadata store: an SQLite file by default, PostgreSQL at scale."""

    url: str | None = opt(None, "SQLAlchemy URL: sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB "
                          "(default: custody.sqlite3 in the data dir)")
    password: Secret | None = opt(None, "database password, inserted into the URL", )
    pool_size: int = opt(5, "connections per server process (PostgreSQL)", lo=1, hi=100)
    echo: bool = opt(False, "log every SQL statement (debugging only)")


@dataclass(frozen=True, slots=True)
class S3Config:
    """An S3-compatible store with Object Lock."""

    endpoint_url: str | None = opt(None, "endpoint URL (default: AWS)")
    bucket: str = opt("custody-footage", "bucket; must have Object Lock enabled")
    region: str = opt("us-east-1", "region name")
    access_key_id: str | None = opt(None, "access key id (default: boto3's credential chain)")
    secret_access_key: Secret | None = opt(None, "secret access key")
    addressing_style: str = opt("path", "bucket addressing", choices=("path", "virtual", "auto"))
    create_bucket: bool = opt(False, "create the bucket with Object Lock when it is missing")
    retention_days: int = opt(3650, "COMPLIANCE retention of every object, in days", lo=1, hi=36500)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Footage storage."""

    backend: str = opt("local", "where footage goes", choices=("local", "s3"))
    local_path: Path | None = opt(None, "directory of the local store (default: footage/ in the data dir)")
    s3: S3Config = section(S3Config, "S3 settings (backend s3)")


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Chunk ingest and verification."""

    max_chunk_bytes: int = opt(256 << 20, "largest chunk body accepted", lo=1024, hi=1 << 30)
    upload_ttl_s: int = opt(900, "validity of an upload target", lo=30, hi=7 * 86400)
    media_check: bool = opt(True, "check container structure, sample counts and duration before the receipt")
    duration_tolerance_ms: int = opt(150, "allowed difference between measured and declared duration",
                                     lo=0, hi=5000)
    decode_after_receipt: bool = opt(True, "decode the first keyframe of each chunk after its receipt")
    decode_workers: int = opt(1, "worker processes decoding footage (first keyframes, the scrubber's full "
                              "decodes); see server/decoder.py", lo=1, hi=16)
    decode_niceness: int = opt(10, "how much lower the decoder workers' CPU priority is than the server's "
                               "(nice increment): receipts come first, decodes take the cores left", lo=0, hi=19)
    decode_timeout_s: int = opt(60, "longest one chunk's decode may take; a worker taking longer is stopped and "
                                "the chunk gets a media.decode_failed finding", lo=1, hi=3600)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Authentication."""

    request_window_s: int = opt(300, "freshness window of signed device requests, either side", lo=5, hi=3600)
    token_ttl_days: int = opt(365, "validity of new API tokens in days (0: no expiry)", lo=0, hi=3650)
    enrollment_token_ttl_s: int = opt(86400, "default validity of enrollment tokens", lo=60, hi=30 * 86400)
    upload_secret: Secret | None = opt(None, "HMAC key for local-store upload URLs; share it between server "
                                       "processes (default: generated in the data dir)")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """The MQTT control plane: the broker the server uses (embedded or external) and what devices are told."""

    url: str | None = opt(None, "broker the server connects to: unset or 'embedded' starts the embedded broker "
                          "(MQTT 3.1.1, in-process); 'off' runs without MQTT (HTTP only); or mqtt://HOST:PORT, "
                          "mqtts://HOST:PORT for Mosquitto or EMQX")
    device_url: str | None = opt(None, "broker URL handed to devices at enrollment (default: url, or the embedded "
                                 "broker's address)")
    username: str = opt("custody-server", "the server's own MQTT user name (on the embedded broker too)")
    password: Secret | None = opt(None, "the server's own MQTT password on an external broker (the embedded broker "
                                  "makes a new one at every start)")
    tls_ca: Path | None = opt(None, "CA certificate file for an mqtts:// broker with a private CA")
    broker_files_dir: Path | None = opt(None, "an external Mosquitto's password file and ACL are written here (passwd, "
                                        "acl) and rewritten within seconds of an enrollment or revocation")
    broker_files_group: str | None = opt(None, "group of the broker files (mode 0640; default 0600), e.g. mosquitto")
    embedded_host: str = opt("127.0.0.1", "address the embedded broker listens on")
    embedded_port: int = opt(1883, "port of the embedded broker (0 picks a free one: only for tests, devices "
                             "keep the URL they enrolled with)", lo=0, hi=65535)
    protocol: str = opt("auto", "MQTT version towards an external broker: auto tries 5, then 3.1.1",
                        choices=("auto", "5", "3.1.1"))
    shared_subscriptions: bool = opt(True, "on MQTT 5, subscribe as $share/custody-ingest/... so several server "
                                     "processes split ingest (ignored on 3.1.1)")
    client_id: str | None = opt(None, "client id prefix of this process (default custody-server-HOST-PID)")
    workers: int = opt(4, "messages handled at once (one device's messages stay in order)", lo=1, hi=64)
    keepalive_s: int = opt(30, "MQTT keepalive of the server's connection", lo=5, hi=600)
    clock_skew_tolerance_ms: int = opt(5000, "device clock skew beyond which a device.clock_skew finding opens",
                                       lo=100, hi=86_400_000)


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Thresholds of the audit of missing recordings (server/services/audit.py)."""

    pending_upload_s: int = opt(300, "a chunk announced this long ago and still not verified is pending upload",
                                lo=1, hi=30 * 86400)
    offline_after_s: int = opt(600, "a device not heard from for this long is offline", lo=1, hi=30 * 86400)
    coverage_tolerance_ms: int = opt(1000, "gaps in a full-recording step's coverage up to this long are ignored "
                                     "(chunk boundaries on a device clock)", lo=0, hi=60_000)


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """A second copy of footage (docs/OPERATOR.md, replication)."""

    to: str | None = opt(None, "second store: a directory or s3://BUCKET (endpoint and credentials from "
                         "replication.s3); unset: no second copy is made or expected")
    copy_in_server: bool = opt(True, "the server copies in the background; false when a separate "
                               "'custody admin replicate' process does the copying")
    delay_s: int = opt(3600, "verified footage without a verified second copy after this long is an audit finding "
                       "(storage.no_second_copy)", lo=0, hi=30 * 86400)
    interval_s: int = opt(10, "seconds between replication rounds", lo=1, hi=3600)
    batch: int = opt(200, "chunks copied per round at most", lo=1, hi=100_000)
    s3: S3Config = section(S3Config, "S3 settings of an s3:// second store (the bucket comes from replication.to)")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The transparency log (issue 7)."""

    origin: str | None = opt(None, "log name: the checkpoint origin and note key name (default custody/ plus the id "
                             "of the server's first key, stable across key rotations and processes)")
    checkpoint_interval_s: int = opt(10, "sign a checkpoint at least this often while the tree grows", lo=1,
                                     hi=86400)
    export_consistency_checkpoints: int = opt(256, "earlier checkpoints an export carries consistency proofs from",
                                              lo=1, hi=100_000)


@dataclass(frozen=True, slots=True)
class ScrubConfig:
    """Continuous re-verification of stored footage (issue 7)."""

    enabled: bool = opt(True, "re-verify stored footage in the background")
    rate_bytes_per_s: int = opt(4 << 20, "footage re-read per second, on average", lo=1024, hi=10 << 30)
    interval_s: int = opt(10, "seconds between scrub rounds (each reads rate x interval bytes)", lo=1, hi=3600)
    decode: bool = opt(True, "decode every frame (PyAV), not just hash the bytes")
    cpu_percent: int = opt(10, "most of one core the scrubber's hashing and decoding take, on average: a round "
                           "that used more is followed by a longer pause", lo=1, hi=100)
    busy_cpu_percent: int = opt(2, "the same while this process is busy (see busy_percent): ingest comes first, "
                                "the scrubber catches up when the load falls", lo=1, hi=100)
    busy_percent: int = opt(60, "the process counts as busy when its event loop, or the process as a whole on the "
                            "cores it may use, was on the CPU more than this share of the time since the "
                            "scrubber last looked", lo=1, hi=100)


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Live view (实时调阅): WebRTC from devices, relayed to browsers."""

    ice_servers: str | None = opt(None, "comma-separated STUN/TURN URLs (stun:HOST:PORT, "
                                  "turn:HOST:PORT?transport=udp); unset on a LAN: no STUN is contacted")
    turn_username: str | None = opt(None, "user name for the TURN servers")
    turn_password: Secret | None = opt(None, "credential for the TURN servers")
    max_view_s: int = opt(600, "a live session stops after this long, watched or not", lo=10, hi=86_400)
    linger_s: int = opt(5, "a live session stops this long after its last viewer leaves", lo=0, hi=600)
    device_wait_s: int = opt(20, "how long a viewer waits for the device to connect", lo=2, hi=300)
    max_viewers: int = opt(20, "viewers of one device at once", lo=1, hi=500)
    max_width: int = opt(640, "widest picture a device sends live (the recording keeps its size)", lo=160, hi=3840)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The dashboard (server-rendered pages)."""

    default_language: str = opt("zh-CN", "language of the pages before a user picks one", choices=("zh-CN", "en"))
    session_hours: int = opt(12, "lifetime of a sign-in cookie", lo=1, hi=24 * 30)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Retention classes of footage (server/retention.py); retention only ever grows."""

    unlinked_days: int = opt(183, "footage linked to no case step is kept this many days after it was recorded",
                             lo=183, hi=36500)
    case_years: int = opt(2, "footage linked to a case is kept this many years after the case's last step ended",
                          lo=0, hi=100)
    expiry_interval_s: int = opt(3600, "how often the expiry job runs (0: only through POST /api/v1/retention/run)",
                                 lo=0, hi=30 * 86400)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The whole server configuration."""

    data_dir: Path = opt(Path("custody-data"), "SQLite file, local footage, keys, admin token, server URL file")
    http: HttpConfig = section(HttpConfig, "HTTP API")
    database: DatabaseConfig = section(DatabaseConfig, "metadata database")
    storage: StorageConfig = section(StorageConfig, "footage storage")
    ingest: IngestConfig = section(IngestConfig, "ingest and verification")
    auth: AuthConfig = section(AuthConfig, "authentication")
    mqtt: MqttConfig = section(MqttConfig, "MQTT control plane and broker")
    audit: AuditConfig = section(AuditConfig, "audit of missing recordings")
    replication: ReplicationConfig = section(ReplicationConfig, "second copy of footage")
    log: LogConfig = section(LogConfig, "transparency log")
    scrub: ScrubConfig = section(ScrubConfig, "footage re-verification")
    live: LiveConfig = section(LiveConfig, "live view relay")
    web: WebConfig = section(WebConfig, "dashboard")
    retention: RetentionConfig = section(RetentionConfig, "retention classes, legal hold and expiry")

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with top-level fields replaced."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem and where it came from."""

    where: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}"


# --------------------------------------------------------------------------------------------
# Locating keys in the source text, so problems carry line numbers


def _yaml_lines(text: str, problems: list[Problem], name: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML and map each dotted key path to its line; duplicate keys are problems."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.append(Problem(f"{name}:{line}", "", f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return None, {}
    lines: dict[str, int] = {}

    def walk(n: yaml.Node, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                path = f"{prefix}{key}"
                if key in seen:
                    problems.append(Problem(f"{name}:{key_node.start_mark.line + 1}", path, "duplicate key"))
                seen.add(key)
                lines.setdefault(path, key_node.start_mark.line + 1)
                walk(value_node, path + ".")

    if node is not None:
        walk(node, "")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # composes but does not construct (e.g. a bad tag)
        problems.append(Problem(f"{name}:1", "", f"not valid YAML: {exc}"))
        return None, lines
    return data, lines


_TOML_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\s\"-]+?)\s*\]\s*(#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"-]+?)\s*=")


def _toml_lines(text: str, problems: list[Problem], name: str) -> tuple[Any, dict[str, int]]:
    """Parse TOML and map dotted key paths to lines (tomllib gives no positions: scan the text)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        problems.append(Problem(f"{name}:{match.group(1) if match else 1}", "", f"not valid TOML: {exc}"))
        return None, {}
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TOML_TABLE.match(line):
            table = m.group(1).replace(" ", "").replace('"', "")
            lines.setdefault(table, number)
            continue
        if m := _TOML_KEY.match(line):
            key = m.group(1).replace('"', "")
            path = f"{table}.{key}" if table else key
            lines.setdefault(path, number)
    return data, lines


# --------------------------------------------------------------------------------------------
# Building the typed tree


def _leaf_paths(cls: type[Any], prefix: str = "") -> dict[str, dataclasses.Field[Any]]:
    out: dict[str, dataclasses.Field[Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_leaf_paths(hints[f.name], path + "."))
        else:
            out[path] = f
    return out


def _env_name(path: str) -> str:
    return ENV_PREFIX + path.replace(".", "_").upper()


def config_keys() -> dict[str, dataclasses.Field[Any]]:
    """Every leaf key of the tree, by dotted path (for docs and env mapping)."""
    return _leaf_paths(ServerConfig)


def _is_secret(tp: Any) -> bool:
    return Secret in typing.get_args(tp) or tp is Secret


def _convert(value: Any, tp: Any, f: dataclasses.Field[Any], from_env: bool) -> Any:
    """Convert ``value`` to the field's type, raising ValueError with a message a person understands."""
    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    if value is None or (from_env and optional and value == ""):
        if optional:
            return None
        raise ValueError("must not be empty")
    meta = f.metadata
    if base is bool:
        if isinstance(value, bool):
            return value
        truthy, falsy = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
        if from_env and isinstance(value, str) and value.lower() in truthy + falsy:
            return value.lower() in truthy
        raise ValueError(f"must be true or false, not {value!r}")
    if base is int:
        if from_env and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {value!r}")
        if meta.get("lo") is not None and value < meta["lo"]:
            raise ValueError(f"{value} is below the minimum {meta['lo']}")
        if meta.get("hi") is not None and value > meta["hi"]:
            raise ValueError(f"{value} is above the maximum {meta['hi']}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__} {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"{value!r} is not one of {', '.join(meta['choices'])}")
    if base is Path:
        return Path(value).expanduser()
    if base is Secret:
        return Secret(value)
    return value


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str, where: typing.Callable[[str], str],
           problems: list[Problem], base_dir: Path | None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        name = key
        from_file = False
        if key.endswith("_file") and key[: -len("_file")] in fields and _is_secret(hints[key[: -len("_file")]]):
            name, from_file = key[: -len("_file")], True
        if name not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            problems.append(Problem(where(path), path, f"unknown key{hint}"))
            continue
        f, tp = fields[name], hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                problems.append(Problem(where(path), path, "must be a section (a mapping of keys)"))
                continue
            kwargs[name] = _build(tp, value, path + ".", where, problems, base_dir)  # type: ignore[arg-type]
            continue
        try:
            if from_file:
                if not isinstance(value, str):
                    raise ValueError("must be a file path")
                secret_path = Path(value).expanduser()
                if base_dir is not None and not secret_path.is_absolute():
                    secret_path = base_dir / secret_path
                try:
                    value = secret_path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(f"cannot read secret file {secret_path}: {exc.strerror}") from None
            kwargs[name] = _convert(value, tp, f, from_env=isinstance(value, str) and where(path).startswith("env"))
        except ValueError as exc:
            problems.append(Problem(where(path), path, str(exc)))
    return kwargs


def _merge(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _instantiate(cls: type[Any], kwargs: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    built = {}
    for name, value in kwargs.items():
        built[name] = _instantiate(hints[name], value) if dataclasses.is_dataclass(hints[name]) else value
    return cls(**built)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def check_config(path: Path | None, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> tuple[ServerConfig | None, list[Problem]]:
    """Load and validate; return the config (None when any problem) and every problem found.

    ``overrides`` are dotted paths from the command line (``{"http.port": 9000}``), applied last.
    """
    problems: list[Problem] = []
    data: Any = {}
    lines: dict[str, int] = {}
    name = str(path) if path else "<defaults>"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return None, [Problem(name, "", f"cannot read: {exc.strerror}")]
        if path.suffix.lower() == ".toml":
            data, lines = _toml_lines(text, problems, name)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            data, lines = _yaml_lines(text, problems, name)  # JSON is YAML
        else:
            return None, [Problem(name, "", "config file must end in .yaml, .yml, .json or .toml")]
        if data is None and problems:  # syntax error: nothing more can be said
            return None, problems
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            return None, [Problem(f"{name}:1", "", "the top level must be a mapping of keys")]

    def where_file(p: str) -> str:
        # A problem inside a value points at its key; an unknown nested key at itself or its section.
        probe = p
        while probe and probe not in lines:
            probe = probe.rpartition(".")[0]
        return f"{name}:{lines.get(probe, 1)}"

    file_kwargs = _build(ServerConfig, data, "", where_file, problems, path.parent if path else None)

    env = os.environ if env is None else env
    env_flat: dict[str, Any] = {}
    env_where: dict[str, str] = {}
    for key_path in config_keys():
        secret = _is_secret(_field_type(key_path))
        for suffix, target in (("", key_path), ("_FILE", key_path + "_file")):
            var = _env_name(key_path) + suffix
            if suffix and not secret:
                continue
            if var in env:
                env_flat[target] = env[var]
                env_where[target] = f"env {var}"
    env_kwargs = _build(ServerConfig, _nest(env_flat), "", lambda p: env_where.get(p, "env"), problems, None)

    cli_kwargs: dict[str, Any] = {}
    if overrides:
        cli_kwargs = _build(ServerConfig, _nest(overrides), "", lambda p: "command line", problems, None)

    if problems:
        return None, problems
    merged: dict[str, Any] = {}
    for layer in (file_kwargs, env_kwargs, cli_kwargs):
        _merge(merged, layer)
    config: ServerConfig = _instantiate(ServerConfig, merged)
    # Relative paths in a file are relative to the file, as a person reading it expects.
    if path is not None and "data_dir" in file_kwargs and not config.data_dir.is_absolute():
        config = config.replace(data_dir=path.parent / config.data_dir)
    problems.extend(_cross_checks(config))
    return (None if problems else config), problems


def _field_type(path: str) -> Any:
    cls: Any = ServerConfig
    *parents, last = path.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[last]


def _cross_checks(config: ServerConfig) -> list[Problem]:
    out = []
    if (config.http.tls_cert is None) != (config.http.tls_key is None):
        out.append(Problem("config", "http.tls_cert", "tls_cert and tls_key must be given together"))
    to = config.replication.to
    if to is not None and to.startswith("s3://") and not to[5:].strip("/"):
        out.append(Problem("config", "replication.to", "s3:// needs a bucket: s3://BUCKET"))
    elif to is not None and "://" in to and not to.startswith("s3://"):
        out.append(Problem("config", "replication.to", "must be a directory or s3://BUCKET"))
    url = config.database.url
    if url is not None and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        out.append(Problem("config", "database.url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://"))
    if config.http.public_url is not None and not config.http.public_url.startswith(("http://", "https://")):
        out.append(Problem("config", "http.public_url", "must be an http:// or https:// URL"))
    if config.mqtt.url not in (None, "embedded", "off") and not config.mqtt.url.startswith(("mqtt://", "mqtts://")):
        out.append(Problem("config", "mqtt.url", "must be unset, 'embedded', 'off', mqtt://HOST:PORT or "
                                                 "mqtts://HOST:PORT"))
    if config.mqtt.device_url is not None and not config.mqtt.device_url.startswith(("mqtt://", "mqtts://")):
        out.append(Problem("config", "mqtt.device_url", "must be an mqtt:// or mqtts:// URL"))
    return out


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """Load the configuration, or raise :class:`ConfigError` listing every problem with its place."""
    config, problems = check_config(path, env, overrides)
    if config is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(str(p) for p in problems))
    return config


def describe() -> list[tuple[str, str, Any, str]]:
    """(dotted key, env variable, default, description) for every key: the source of docs/CONFIG.md."""
    out = []
    for path, f in config_keys().items():
        default = f.default
        if isinstance(default, Path):
            default = str(default)
        doc = f.metadata.get("doc", "")
        if f.metadata.get("lo") is not None:
            doc += f" [{f.metadata['lo']}..{f.metadata['hi']}]"
        if f.metadata.get("choices"):
            doc += f" (one of {', '.join(f.metadata['choices'])})"
        if _is_secret(_field_type(path)):
            doc += f"; secret, also from {path.rpartition('.')[2]}_file or {_env_name(path)}_FILE"
        out.append((path, _env_name(path), default, doc))
    return out

