"""Mosquitto's password and ACL files, built from the device registry.

Pure functions build the text; :func:`write_broker_files` is the only one that touches the disk.
The server calls them whenever the set of devices allowed on the broker changes (enrollment,
suspension, revocation) and then has the broker reload (SIGHUP; in the compose deployment
``deploy/mosquitto/run.sh`` does that when the files change).

Who may do what (the per-device rules are Mosquitto ``pattern`` lines, ``%u`` being the MQTT user
name, which for a device is its device id):

- a device writes only its own ``status``, ``entry``, ``ack`` and ``availability`` topics, reads
  only its own ``cmd`` and ``receipt`` topics, and reads the public checkpoint topic;
- the server user reads and writes everything under ``custody/v1/``;
- anyone else (a user in the password file that is neither) gets nothing but the device rights
  of its own user name, which no server or device ever uses.

The broker is only transport (every message is signed end to end), so these rules are not what
makes a forged message fail; they keep a stolen or misbehaving device from flooding, reading or
squatting on other devices' topics and from publishing a checkpoint other devices would fetch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from custody.atomic_write import write_file_atomic
from protocol.errors import CustodyError
from protocol.topics import CHECKPOINT_TOPIC, PREFIX, DeviceTopic, device_acl_pattern

#: What ``mosquitto_passwd`` of Mosquitto 2.0 writes: PBKDF2-HMAC-SHA512 ("$7$"), 101 rounds,
#: a 12-byte salt. Device passwords are random (see :func:`new_broker_password`), so the
#: iteration count does not need to slow down guessing; it only has to match what brokers accept.
PBKDF2_ID = 7
DEFAULT_ITERATIONS = 101
SALT_BYTES = 12
HASH_BYTES = 64  # SHA-512 output; Mosquitto compares the whole digest

PASSWORD_FILE_NAME = "passwd"  # noqa: S105  (a file name, not a password)
ACL_FILE_NAME = "acl"

# User names this module accepts: device ids, and plain names for the server (and future
# operators). Nothing that Mosquitto's file formats or its "%u" substitution would misread:
# no ':' (password file separator), no whitespace, no '#' '+' '/' (topic syntax), not empty.
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LINE_RE = re.compile(
    r"(?P<user>[^:\s]+):\$(?P<id>\d+)\$(?P<iterations>\d+)\$(?P<salt>[A-Za-z0-9+/]+=*)\$(?P<hash>[A-Za-z0-9+/]+=*)"
)
_MAX_PASSWORD_BYTES = 65535  # the MQTT CONNECT password field is length-prefixed with 16 bits


class BrokerFilesError(CustodyError):
    """A user name, password or password-file line the broker files must not contain (our misuse)."""

    code = "bad_broker_credentials"


def new_broker_password() -> str:
    """A fresh random MQTT password for one device (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def _check_username(username: str) -> None:
    if not _USERNAME_RE.fullmatch(username):
        raise BrokerFilesError(
            f"MQTT user name {username!r} is not allowed: use 1-64 letters, digits and '._-', "
            "starting with a letter or digit"
        )


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


def mosquitto_password_line(
    username: str, password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """One password-file line, exactly as Mosquitto 2.0's ``mosquitto_passwd`` writes it (no newline).

    ``username:$7$ITERATIONS$base64(salt)$base64(PBKDF2-HMAC-SHA512(password, salt))``. ``salt``
    is for reproducible tests; leave it out in real use (a fresh random salt per line).
    """
    _check_username(username)
    if not password:
        raise BrokerFilesError(f"empty MQTT password for {username!r}")
    if len(password.encode("utf-8")) > _MAX_PASSWORD_BYTES:
        raise BrokerFilesError(f"MQTT password for {username!r} is longer than MQTT allows")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    elif len(salt) != SALT_BYTES:
        raise BrokerFilesError(f"salt must be {SALT_BYTES} bytes, as mosquitto_passwd makes it, not {len(salt)}")
    if not 1 <= iterations <= 10_000_000:
        raise BrokerFilesError(f"iterations {iterations} out of range 1..10000000")
    digest = _pbkdf2(password, salt, iterations)
    salt64 = base64.b64encode(salt).decode("ascii")
    hash64 = base64.b64encode(digest).decode("ascii")
    return f"{username}:${PBKDF2_ID}${iterations}${salt64}${hash64}"


@dataclass(frozen=True, slots=True)
class PasswordLine:
    """A parsed ``$7$`` password-file line."""

    username: str
    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, line: str) -> PasswordLine:
        """Parse a line :func:`mosquitto_password_line` (or ``mosquitto_passwd``) wrote."""
        match = _LINE_RE.fullmatch(line.strip())
        if match is None:
            raise BrokerFilesError(f"not a Mosquitto password line: {line.split(':', 1)[0]!r}...")
        if int(match["id"]) != PBKDF2_ID:
            raise BrokerFilesError(f"password line for {match['user']!r} is not PBKDF2-SHA512 ($7$)")
        _check_username(match["user"])
        try:
            salt = base64.b64decode(match["salt"], validate=True)
            digest = base64.b64decode(match["hash"], validate=True)
        except ValueError:
            raise BrokerFilesError(f"password line for {match['user']!r} has bad base64") from None
        if len(digest) != HASH_BYTES or not salt:
            raise BrokerFilesError(f"password line for {match['user']!r} has a salt or hash of the wrong size")
        return cls(match["user"], int(match["iterations"]), salt, digest)

    def matches(self, password: str) -> bool:
        """Whether ``password`` is the one this line was made from (constant-time comparison)."""
        return hmac.compare_digest(_pbkdf2(password, self.salt, self.iterations), self.digest)


def mosquitto_password_file(lines: Iterable[str]) -> str:
    """The whole password file from lines of :func:`mosquitto_password_line`, sorted by user name.

    Every line is parsed first, so a damaged stored line fails here, naming its user, instead of
    making the broker refuse to start. Two lines for one user are an error (Mosquitto would
    silently use one of them).
    """
    by_user: dict[str, str] = {}
    for line in lines:
        parsed = PasswordLine.parse(line)
        if parsed.username in by_user:
            raise BrokerFilesError(f"two password lines for MQTT user {parsed.username!r}")
        by_user[parsed.username] = line.strip()
    return "".join(f"{by_user[user]}\n" for user in sorted(by_user))


def _own_topic(kind: DeviceTopic) -> str:
    # protocol.topics builds topic names; its device pattern ends in '#', narrowed here to one kind.
    return device_acl_pattern().removesuffix("#") + kind.value


def mosquitto_acl(server_user: str) -> str:
    """The broker's ACL file: per-device rules as ``%u`` patterns, full access for ``server_user``.

    It does not list devices: the patterns cover every device id, and the password file alone
    decides who may connect. So enrolling or suspending a device changes only the password file,
    and the ACL stays the same text for a given server user.
    """
    _check_username(server_user)
    device_writes = [kind for kind in DeviceTopic if kind.from_device]
    device_reads = [kind for kind in DeviceTopic if not kind.from_device]
    lines = [
        "# Custody broker ACL, written by server.broker_files: edits are overwritten.",
        "#",
        "# Devices. Their MQTT user name is their device id, which Mosquitto puts in place of %u,",
        "# so each device reaches only its own topics. Pattern lines apply to every user.",
        *(f"pattern write {_own_topic(kind)}" for kind in device_writes),
        *(f"pattern read {_own_topic(kind)}" for kind in device_reads),
        "# The signed tree head: every device may fetch it, only the server writes it.",
        f"pattern read {CHECKPOINT_TOPIC}",
        "",
        "# The server processes (one user name; several processes share ingest on MQTT 5).",
        f"user {server_user}",
        f"topic readwrite {PREFIX}/#",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class BrokerFilePaths:
    """Where :func:`write_broker_files` put the two files."""

    password_file: Path
    acl_file: Path


def write_broker_files(
    directory: Path, *, password_file: str, acl: str, group: int | str | None = None
) -> BrokerFilePaths:
    """Write ``passwd`` and ``acl`` into ``directory``, each replaced atomically.

    Without ``group`` both files get mode 0600 (the broker runs as the same user, or copies them,
    as ``deploy/mosquitto/run.sh`` does); with ``group`` (the broker's group) 0640, so a broker
    running as another user of that group can read them: Mosquitto 2.0 opens them after dropping
    root. The ACL is written first: a broker reloading between the two renames then sees the new
    rules with the old users, never a new user without its rules. Reload the broker afterwards.
    """
    mode = 0o640 if group is not None else 0o600
    directory.mkdir(parents=True, exist_ok=True)
    paths = BrokerFilePaths(directory / PASSWORD_FILE_NAME, directory / ACL_FILE_NAME)
    write_file_atomic(paths.acl_file, acl.encode("utf-8"), mode=mode, group=group)
    write_file_atomic(paths.password_file, password_file.encode("utf-8"), mode=mode, group=group)
    return paths
