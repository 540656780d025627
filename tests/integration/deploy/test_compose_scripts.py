"""The shell the compose file runs, run here: minio-init against a fake `mc`, and shellcheck on it.

Docker cannot run where the tests run; these prove the scripts inside compose.yml do what they
say once the containers are there: the commands, their order, and a policy MinIO can parse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[3] / "deploy" / "compose.yml"

pytestmark = pytest.mark.integration

FAKE_MC = """#!/bin/sh
# Records each call; keeps the policy file, which the script deletes with its /tmp.
echo "$*" >> "$MC_LOG"
if [ "$1 $2 $3" = "admin policy create" ]; then cp "$6" "$MC_POLICY"; fi
"""


def _minio_init_script() -> str:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["minio-init"]
    assert service["entrypoint"] == ["/bin/sh", "-euc"]
    # Compose turns "$$" into "$" before the container's shell sees the script.
    return str(service["command"][0]).replace("$$", "$")


def test_minio_init_makes_a_locked_bucket_and_a_user_that_cannot_delete(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mc").write_text(FAKE_MC)
    (bin_dir / "mc").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MC_LOG": str(tmp_path / "mc.log"),
        "MC_POLICY": str(tmp_path / "policy.json"),
        "MINIO_ROOT_USER": "root",
        "MINIO_ROOT_PASSWORD": "rootpw",
        "S3_BUCKET": "footage",
        "S3_ACCESS_KEY": "custody-server",
        "S3_SECRET_KEY": "serverpw",
        "RETENTION_DAYS": "3650",
    }
    done = subprocess.run(["sh", "-euc", _minio_init_script()], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "bucket footage ready (Object Lock, COMPLIANCE 3650d)" in done.stdout
    calls = (tmp_path / "mc.log").read_text().splitlines()
    assert calls == [
        "alias set site https://minio:9000 root rootpw",
        "mb --ignore-existing --with-lock site/footage",
        "retention set --default COMPLIANCE 3650d site/footage",
        "retention info --default site/footage",
        "admin user add site custody-server serverpw",
        "admin policy create site custody-server /tmp/custody-server.json",
        "admin policy attach site custody-server --user custody-server",
    ]
    policy = json.loads((tmp_path / "policy.json").read_text())
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::footage", "arn:aws:s3:::footage/*"}
    assert {"s3:PutObject", "s3:GetObject", "s3:PutObjectRetention", "s3:GetBucketObjectLockConfiguration"} <= actions
    assert not any("Delete" in action or "Bypass" in action or action.endswith("*") for action in actions)


def test_minio_init_script_is_shellcheck_clean(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: run `make system-deps`"
    script = tmp_path / "minio-init.sh"
    script.write_text("#!/bin/sh\nset -eu\n" + _minio_init_script())
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
