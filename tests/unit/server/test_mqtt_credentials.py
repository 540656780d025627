"""Device broker passwords: random, stored as Mosquitto 2.0 ``$7$`` hashes, checked in constant time."""

from __future__ import annotations

import base64
import hashlib

import pytest

from server.mqtt.credentials import check_password, hash_password, mosquitto_password_line, new_password


def test_hash_is_mosquitto_pbkdf2_sha512() -> None:
    salt = bytes(range(12))
    stored = hash_password("s3cret", salt=salt)
    digest = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    assert stored == f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert mosquitto_password_line("dev", stored) == f"dev:{stored}"


def test_check_password() -> None:
    password = new_password()
    assert len(password) == 32 and password != new_password()
    stored = hash_password(password)
    assert stored != hash_password(password)  # a fresh salt each time
    assert check_password(stored, password)
    assert not check_password(stored, password + "x")


@pytest.mark.parametrize("stored", ["", "plain", "$6$abc$def", "$7$101$!!!$xyz", "$7$101$AAAA$"])
@pytest.mark.parametrize("password", [None, "", "x"])
def test_odd_input_never_matches(stored: str, password: str | None) -> None:
    assert not check_password(stored, password)
