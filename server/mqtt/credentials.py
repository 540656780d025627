"""Device broker passwords: random, issued once in the enrollment answer, stored only as a hash.

The hash is Mosquitto 2.0's password-file format (``$7$ITERATIONS$SALT$HASH``, PBKDF2-HMAC-SHA512),
so the same stored value serves the embedded broker (checked here) and a Mosquitto password file
(one line ``DEVICE_ID:HASH`` per device).

SEAM: ``server/broker_files.py`` (deploy branch) implements the same format for writing
Mosquitto's files (``mosquitto_password_line``, ``PasswordLine``). Once it is on main, replace
:func:`hash_password` / :func:`check_password` with calls into it; the stored values stay valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

#: What ``mosquitto_passwd`` writes: PBKDF2-HMAC-SHA512, 101 rounds, 12-byte salt. The passwords
#: are 192 random bits, so a slow hash buys nothing against guessing; matching Mosquitto matters.
ITERATIONS = 101
SALT_BYTES = 12
_HASH_RE = re.compile(r"\$7\$(?P<iterations>\d{1,8})\$(?P<salt>[A-Za-z0-9+/]+=*)\$(?P<hash>[A-Za-z0-9+/]+=*)")


def new_password() -> str:
    """A fresh random broker password for one device (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password`` (Mosquitto ``$7$`` without the ``user:`` prefix)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _pbkdf2(password, salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(stored: str, password: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time; False for anything odd)."""
    if not password:
        return False
    match = _HASH_RE.fullmatch(stored)
    if match is None:
        return False
    try:
        salt = base64.b64decode(match["salt"], validate=True)
        digest = base64.b64decode(match["hash"], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(_pbkdf2(password, salt, int(match["iterations"])), digest)


def mosquitto_password_line(username: str, stored: str) -> str:
    """A Mosquitto password-file line for a stored hash (for deployments that build the file themselves)."""
    return f"{username}:{stored}"
