"""The broker's password and ACL files: exact Mosquitto formats, refusals, and how they are written.

That a real Mosquitto accepts these files (and enforces the ACL) is proven in
tests/integration/deploy/test_broker_acl.py; here the text itself is pinned.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from server.broker_files import (
    BrokerFilesError,
    PasswordLine,
    mosquitto_acl,
    mosquitto_password_file,
    mosquitto_password_line,
    new_broker_password,
    write_broker_files,
)

# Written by `mosquitto_passwd -c -b pw alice secret` of Mosquitto 2.0.11 (Debian 12).
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$GY7i72MnWKs49wm8$8G9LGJ+9XhoKOzDLRu+zEJUyALzcLLOSOMivChEM3asn2Bbvj51tBwVkzUztCFvlyQIJxZCde3SXQAV0wDlvYA=="
)
DEVICE_A = "a" * 24
DEVICE_B = "b" * 24


def test_a_line_with_mosquitto_passwds_salt_is_byte_for_byte_what_it_wrote() -> None:
    salt = base64.b64decode("GY7i72MnWKs49wm8")
    assert mosquitto_password_line("alice", "secret", salt=salt) == MOSQUITTO_PASSWD_LINE


def test_a_mosquitto_passwd_line_parses_and_checks_the_password() -> None:
    line = PasswordLine.parse(MOSQUITTO_PASSWD_LINE)
    assert (line.username, line.iterations, len(line.salt), len(line.digest)) == ("alice", 101, 12, 64)
    assert line.matches("secret")
    assert not line.matches("Secret")


def test_each_line_gets_a_fresh_salt() -> None:
    first = mosquitto_password_line(DEVICE_A, "pw")
    second = mosquitto_password_line(DEVICE_A, "pw")
    assert first != second
    assert first.startswith(f"{DEVICE_A}:$7$101$")
    assert PasswordLine.parse(first).matches("pw") and PasswordLine.parse(second).matches("pw")


def test_iterations_are_written_and_used() -> None:
    line = mosquitto_password_line("custody-server", "pw", iterations=1000)
    assert line.split("$")[2] == "1000"
    assert PasswordLine.parse(line).matches("pw")


def test_new_broker_passwords_are_random_and_url_safe() -> None:
    passwords = {new_broker_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 32 and p.replace("-", "").replace("_", "").isalnum() for p in passwords)


@pytest.mark.parametrize(
    "username",
    ["", "a:b", "a b", "#comment", "a+b", "a/b", "dev#", "-leading-dash", "x" * 65, "a\nb", "é"],
    ids=["empty", "colon", "space", "hash", "plus", "slash", "trailing-hash", "dash", "too-long", "newline",
         "non-ascii"],
)
def test_user_names_the_file_formats_or_percent_u_would_misread_are_refused(username: str) -> None:
    with pytest.raises(BrokerFilesError, match="is not allowed"):
        mosquitto_password_line(username, "pw")
    with pytest.raises(BrokerFilesError, match="is not allowed"):
        mosquitto_acl(username)


def test_empty_password_and_wrong_salt_size_are_refused() -> None:
    with pytest.raises(BrokerFilesError, match="empty MQTT password"):
        mosquitto_password_line(DEVICE_A, "")
    with pytest.raises(BrokerFilesError, match="salt must be 12 bytes"):
        mosquitto_password_line(DEVICE_A, "pw", salt=b"short")
    with pytest.raises(BrokerFilesError, match="iterations 0 out of range"):
        mosquitto_password_line(DEVICE_A, "pw", iterations=0)


def test_password_file_is_sorted_one_line_per_user() -> None:
    lines = [mosquitto_password_line(u, "pw") for u in (DEVICE_B, "custody-server", DEVICE_A)]
    text = mosquitto_password_file(lines)
    assert text.endswith("\n")
    assert [line.split(":")[0] for line in text.splitlines()] == [DEVICE_A, DEVICE_B, "custody-server"]
    assert mosquitto_password_file([]) == ""


def test_password_file_refuses_two_lines_for_one_user() -> None:
    lines = [mosquitto_password_line(DEVICE_A, "one"), mosquitto_password_line(DEVICE_A, "two")]
    with pytest.raises(BrokerFilesError, match="two password lines for MQTT user 'aaaa"):
        mosquitto_password_file(lines)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice:plaintext", "not a Mosquitto password line"),
        ("alice:$6$GY7i72MnWKs49wm8$8G9L", "not a Mosquitto password line"),
        (MOSQUITTO_PASSWD_LINE.replace("$7$", "$8$"), r"is not PBKDF2-SHA512 \(\$7\$\)"),
        (MOSQUITTO_PASSWD_LINE[:-8] + "==", "wrong size|bad base64"),
        ("bad user:" + MOSQUITTO_PASSWD_LINE.split(":", 1)[1], "not a Mosquitto password line"),
    ],
    ids=["plaintext", "sha512-without-iterations", "unknown-hash-id", "truncated-hash", "space-in-user"],
)
def test_damaged_stored_lines_fail_before_the_broker_sees_them(line: str, message: str) -> None:
    with pytest.raises(BrokerFilesError, match=message):
        mosquitto_password_file([line])


def test_acl_grants_devices_their_own_topics_and_the_server_everything() -> None:
    acl = mosquitto_acl("custody-server")
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "pattern write custody/v1/devices/%u/status",
        "pattern write custody/v1/devices/%u/entry",
        "pattern write custody/v1/devices/%u/ack",
        "pattern write custody/v1/devices/%u/availability",
        "pattern read custody/v1/devices/%u/cmd",
        "pattern read custody/v1/devices/%u/receipt",
        "pattern read custody/v1/log/checkpoint",
        "user custody-server",
        "topic readwrite custody/v1/#",
    ]


def test_acl_has_no_topic_rule_that_would_apply_to_anonymous_clients() -> None:
    # Mosquitto applies `topic` lines that come before any `user` line to anonymous clients.
    rules = [line for line in mosquitto_acl("custody-server").splitlines() if line and not line.startswith("#")]
    first_user = next(i for i, line in enumerate(rules) if line.startswith("user "))
    assert not any(line.startswith("topic ") for line in rules[:first_user])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_written_0600_without_a_group(tmp_path: Path) -> None:
    paths = write_broker_files(tmp_path / "broker", password_file="x:y\n", acl="# acl\n")
    assert paths.password_file.read_text() == "x:y\n"
    assert paths.acl_file.read_text() == "# acl\n"
    assert _mode(paths.password_file) == 0o600
    assert _mode(paths.acl_file) == 0o600
    assert sorted(p.name for p in (tmp_path / "broker").iterdir()) == ["acl", "passwd"]  # no temporary left


def test_files_are_written_0640_for_the_brokers_group(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # the mode must not depend on the caller's umask
    try:
        paths = write_broker_files(tmp_path, password_file="", acl="", group=os.getgid())
    finally:
        os.umask(old_umask)
    for path in (paths.password_file, paths.acl_file):
        assert _mode(path) == 0o640
        assert path.stat().st_gid == os.getgid()


def test_rewriting_replaces_both_files_and_drops_a_stale_temporary(tmp_path: Path) -> None:
    write_broker_files(tmp_path, password_file="old\n", acl="old\n")
    (tmp_path / ".passwd.tmp").write_text("left by a crashed writer")
    paths = write_broker_files(tmp_path, password_file="new\n", acl="new acl\n")
    assert paths.password_file.read_text() == "new\n"
    assert paths.acl_file.read_text() == "new acl\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acl", "passwd"]


def test_an_unknown_group_fails_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no group named"):
        write_broker_files(tmp_path, password_file="x\n", acl="y\n", group="no-such-group-custody")
    assert list(tmp_path.iterdir()) == []
