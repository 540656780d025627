"""Device broker passwords: random, issued once in the enrollment answer, stored only as a hash.

The stored value is Mosquitto 2.0's password-file hash (``$7$ITERATIONS$SALT$HASH``,
PBKDF2-HMAC-SHA512), made and checked by :mod:`server.broker_files`, so the same value serves the
embedded broker (checked here) and a Mosquitto password file (``DEVICE_ID:HASH``, one line each).
"""

from __future__ import annotations

from server.broker_files import BrokerFilesError, PasswordLine, mosquitto_password_line, new_broker_password


def new_password() -> str:
    """A fresh random broker password for one device (192 bits)."""
    return new_broker_password()


def hash_password(username: str, password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password`` (the password-file line without its ``user:`` prefix)."""
    return mosquitto_password_line(username, password, salt=salt).split(":", 1)[1]


def check_password(username: str, stored: str, password: str | None) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time; False for anything odd)."""
    if not password:
        return False
    try:
        return PasswordLine.parse(password_line(username, stored)).matches(password)
    except BrokerFilesError:
        return False


def password_line(username: str, stored: str) -> str:
    """A Mosquitto password-file line for a stored hash."""
    return f"{username}:{stored}"
