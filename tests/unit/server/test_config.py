"""The config tree: defaults, bounds, unknown keys, env overrides, secrets from files, line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import Secret, check_config, describe, load_config
from server.errors import ConfigError


def test_defaults_need_no_file() -> None:
    config = load_config(None, env={})
    assert config.http.host == "127.0.0.1"
    assert config.storage.backend == "local"
    assert config.database.url is None  # SQLite in the data dir


def test_yaml_problems_carry_their_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("http:\n  port: -1\n  host: 1\nauth:\n  request_window_s: 99999\nmystery: 1\nmystery: 2\n")
    _, problems = check_config(f, env={})
    found = {(p.where, p.path, p.message) for p in problems}
    assert (f"{f}:2", "http.port", "-1 is below the minimum 0") in found
    assert (f"{f}:3", "http.host", "must be a string, not int 1") in found
    assert (f"{f}:5", "auth.request_window_s", "99999 is above the maximum 3600") in found
    assert any(p.where == f"{f}:6" and p.path == "mystery" and p.message.startswith("unknown key") for p in problems)
    assert any(p.where == f"{f}:7" and p.path == "mystery" and p.message == "duplicate key" for p in problems)


def test_toml_problems_carry_their_line(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('# comment\n[storage]\nbackend = "s3"\n\n[storage.s3]\nretention_days = 0\nbuket = "x"\n')
    _, problems = check_config(f, env={})
    assert [(p.where, p.path) for p in problems] == [(f"{f}:6", "storage.s3.retention_days"),
                                                     (f"{f}:7", "storage.s3.buket")]


def test_syntax_error_has_a_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("http:\n  port: 1\n bad indent: [\n")
    _, problems = check_config(f, env={})
    assert len(problems) == 1
    assert problems[0].where.startswith(f"{f}:")
    assert "YAML" in problems[0].message


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("http:\n  port: 9000\n")
    config = load_config(f, env={"CUSTODY_HTTP_PORT": "9100", "CUSTODY_INGEST_MEDIA_CHECK": "false",
                                 "CUSTODY_SERVER": "http://ignored"})
    assert config.http.port == 9100
    assert config.ingest.media_check is False
    with pytest.raises(ConfigError, match=r"env CUSTODY_HTTP_PORT: http\.port: must be an integer"):
        load_config(f, env={"CUSTODY_HTTP_PORT": "ninety"})


def test_secrets_come_from_files_and_never_print(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    f = tmp_path / "c.yaml"
    f.write_text("mqtt:\n  password_file: pw\n")
    config = load_config(f, env={})
    assert config.mqtt.password == Secret("s3cret")
    assert "s3cret" not in repr(config)
    env_config = load_config(None, env={"CUSTODY_STORAGE_S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "pw")})
    assert env_config.storage.s3.secret_access_key is not None
    assert env_config.storage.s3.secret_access_key.reveal() == "s3cret"
    f.write_text("http:\n  port_file: pw\n")  # only secrets may come from files
    assert "unknown key" in str(check_config(f, env={})[1][0])


def test_cross_checks() -> None:
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be given together"):
        load_config(None, env={}, overrides={"http.tls_cert": "/x.pem"})
    with pytest.raises(ConfigError, match=r"database\.url"):
        load_config(None, env={}, overrides={"database.url": "mysql://x"})


def test_every_key_is_described() -> None:
    rows = describe()
    assert len(rows) > 30
    assert all(doc for _, _, _, doc in rows)
    assert ("http.port", "CUSTODY_HTTP_PORT") in {(k, e) for k, e, _, _ in rows}
