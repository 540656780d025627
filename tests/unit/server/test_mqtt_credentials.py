"""Device broker passwords: random, stored as Mosquitto 2.0 ``$7$`` hashes, checked in constant time."""

from __future__ import annotations

import base64
import hashlib

import pytest

from server.mqtt.credentials import check_password, hash_password, new_password, password_line

DEV = "abcdefghijklmnopqrstuvwx"


def test_hash_is_mosquitto_pbkdf2_sha512() -> None:
    salt = bytes(range(12))
    stored = hash_password(DEV, "s3cret", salt=salt)
    digest = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    assert stored == f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert password_line(DEV, stored) == f"{DEV}:{stored}"


def test_check_password() -> None:
    password = new_password()
    assert len(password) == 32 and password != new_password()
    stored = hash_password(DEV, password)
    assert stored != hash_password(DEV, password)  # a fresh salt each time
    assert check_password(DEV, stored, password)
    assert not check_password(DEV, stored, password + "x")


@pytest.mark.parametrize("stored", ["", "plain", "$6$abc$def", "$7$101$!!!$xyz", "$7$101$AAAA$"])
@pytest.mark.parametrize("password", [None, "", "x"])
def test_odd_input_never_matches(stored: str, password: str | None) -> None:
    assert not check_password(DEV, stored, password)
