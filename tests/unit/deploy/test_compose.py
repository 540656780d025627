"""deploy/compose.yml read as data: services, images, ports, volumes, health checks, variables.

Docker does not run where the tests run, so this is what can be checked without it. The broker
config and run.sh that the mosquitto service runs are exercised with a real Mosquitto in
tests/integration/deploy/; minio-init's script runs against a fake `mc` there too.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
COMPOSE = DEPLOY / "compose.yml"
EXAMPLE_ENV = DEPLOY / "example.env"
# ${NAME}, ${NAME:-default}, ${NAME:?error}; "$${NAME}" is an escape for the container's shell.
_COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
LONG_RUNNING = {"postgres", "minio", "mosquitto", "server"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _env_file() -> dict[str, str]:
    values = {}
    for line in EXAMPLE_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"example.env: not NAME=value: {line!r}"
            assert name not in values, f"example.env sets {name} twice"
            values[name] = value
    return values


def test_the_services_and_their_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "minio-init", "mosquitto", "server"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert services["minio"]["image"].startswith("minio/minio:RELEASE.")  # pinned, never :latest
    assert services["minio-init"]["image"].startswith("minio/mc:RELEASE.")
    build = services["server"]["build"]
    assert (build["context"], build["dockerfile"]) == ("..", "deploy/Dockerfile")
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "\nFROM python:3.11-slim\n" in dockerfile
    assert 'pip install ".[server]"' in dockerfile
    assert "\nUSER custody\n" in dockerfile  # the server never runs as root


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert {"interval", "timeout", "retries"} <= set(check), name
    assert compose["services"]["minio-init"]["restart"] == "no"  # one-shot


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["server"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
        "mosquitto": {"condition": "service_healthy"},
    }
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}


def _published(service: dict[str, Any]) -> set[str]:
    return {str(port).rsplit(":", 1)[-1] for port in service.get("ports", [])}


def test_only_the_api_device_mqtt_and_s3_are_published(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _published(services["server"]) == {"8420"}
    assert _published(services["mosquitto"]) == {"8883"}  # not 8884 (servers) nor 1880 (health)
    assert _published(services["minio"]) == {"9000"}  # not the console
    assert _published(services["postgres"]) == set()


def test_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith(("./", "../")):
                assert (DEPLOY / source).exists(), f"{name}: {source} is not in the repository"
            elif not source.startswith("${"):
                used.add(source)
    assert used == declared == {"pgdata", "minio-data", "mosquitto-data", "broker-auth", "custody-data"}
    server = compose["services"]["server"]["volumes"]
    broker = compose["services"]["mosquitto"]["volumes"]
    assert "broker-auth:/custody/broker" in server  # the server writes passwd and acl ...
    assert "broker-auth:/custody/broker:ro" in broker  # ... the broker only reads them


def test_the_broker_runs_the_shipped_config_through_run_sh(compose: dict[str, Any]) -> None:
    mosquitto = compose["services"]["mosquitto"]
    assert mosquitto["command"] == ["/bin/sh", "/custody/run.sh"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.endswith(":ro") else v.split(":", 1) for v in mosquitto["volumes"])
    assert mounts["./mosquitto/mosquitto.conf"] == "/mosquitto/config/mosquitto.conf"
    assert mounts["./mosquitto/health.acl"] == "/mosquitto/config/health.acl"
    assert mounts["./mosquitto/run.sh"] == "/custody/run.sh"
    run_sh = (DEPLOY / "mosquitto" / "run.sh").read_text()
    # The mount points are run.sh's defaults, so the compose file sets none of its variables.
    assert "auth_src=${CUSTODY_BROKER_AUTH_SRC:-/custody/broker}" in run_sh
    assert "tls_src=${CUSTODY_BROKER_TLS_SRC:-/custody/tls}" in run_sh
    assert "/custody/broker" in mounts.values() and "/custody/tls" in mounts.values()
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 1880 127.0.0.1" in conf
    health = [arg.replace("$$", "$") for arg in mosquitto["healthcheck"]["test"][1:]]
    assert health == shlex.split("mosquitto_sub -h 127.0.0.1 -p 1880 -t '$SYS/broker/uptime' -C 1 -W 5")


def test_the_bucket_is_made_with_object_lock(compose: dict[str, Any]) -> None:
    script = compose["services"]["minio-init"]["command"][0]
    assert 'mc mb --ignore-existing --with-lock "site/$${S3_BUCKET}"' in script
    assert "mc retention set --default COMPLIANCE" in script
    assert "s3:DeleteObject" not in script


def test_every_variable_the_compose_file_uses_is_documented_in_example_env() -> None:
    used = set(_COMPOSE_VAR.findall(COMPOSE.read_text()))
    documented = set(_env_file())
    assert used - documented == set(), "used in compose.yml but missing from example.env"
    assert documented - used == set(), "in example.env but used nowhere"


def test_each_example_env_setting_is_explained_by_a_comment() -> None:
    # A comment may explain a group of settings on the lines right below it (the three ports).
    lines = EXAMPLE_ENV.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            j = i - 1
            while j >= 0 and lines[j] and not lines[j].startswith("#"):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"example.env line {i + 1} ({line.split('=')[0]}): no comment"


def test_server_environment_names_are_server_config_keys(compose: dict[str, Any]) -> None:
    from server import config

    keys = {config._env_name(path) for path in config.config_keys()}
    pending: set[str] = set()
    env = compose["services"]["server"]["environment"]
    custody = {name for name in env if name.startswith("CUSTODY_")}
    assert custody - keys - pending == set()
