"""The Pi files checked by the tools that judge them: systemd-analyze, shellcheck, and the installer's
own hardware report run with a fake codec and v4l2-ctl.

What cannot run here: the install itself (apt, useradd, a running systemd) and real hardware;
deploy/pi/smoke-test.sh covers the hardware on a Pi.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PI = REPO / "deploy" / "pi"
UNIT = PI / "custody-agent.service"
SCRIPTS = [PI / "install.sh", REPO / "deploy" / "mosquitto" / "run.sh"]

pytestmark = pytest.mark.integration


def _verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on the unit as installed in a root that has the agent's binary.

    verify insists that ExecStart exists, so the root gets a stand-in for the venv's ``custody``;
    it also needs systemd's own units (sysinit.target and friends), copied from this machine.
    """
    root = tmp_path / "root"
    exe = root / "opt/custody/venv/bin/custody"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / UNIT.name).write_text(unit_text)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{UNIT.name}"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/lib/systemd/system").is_dir(),
                    reason="systemd-analyze is not on this machine; install.sh runs it on the Pi")
def test_systemd_analyze_verify_accepts_the_unit_and_would_catch_a_bad_one(tmp_path: Path) -> None:
    text = UNIT.read_text()
    done = _verify(tmp_path / "good", text)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # The check has teeth: systemd ignores a bad value with a warning, and a warning fails the test.
    broken = text.replace("Restart=always", "Restart=alwayz").replace("WatchdogSec=30", "WatchdogSec=half a minute")
    done = _verify(tmp_path / "bad", broken)
    assert "Failed to parse service restart specifier" in done.stderr
    assert "Failed to parse sec value" in done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: run `make system-deps`"
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def _check(tmp_path: Path, *, codec: bool, v4l2_output: str) -> str:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ctl = fake_bin / "v4l2-ctl"
    ctl.write_text(f"#!/bin/sh\ncat <<'EOF'\n{v4l2_output}\nEOF\n")
    ctl.chmod(0o755)
    device = tmp_path / "video11"
    if codec:
        device.touch()
    env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "CUSTODY_CODEC_DEVICE": str(device),
        # The agent's PyAV: this checkout's venv, whose FFmpeg has h264_v4l2m2m compiled in.
        "CUSTODY_VENV": str(REPO / ".venv"),
    }
    done = subprocess.run(["bash", str(PI / "install.sh"), "--check"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


PI4_DEVICES = """bcm2835-codec-decode (platform:bcm2835-codec):
\t/dev/video10
\t/dev/video11
\t/dev/video12

USB Camera (usb-0000:01:00.0-1.2):
\t/dev/video0"""


def test_installer_reports_a_pi4_codec_as_hardware_encoder(tmp_path: Path) -> None:
    out = _check(tmp_path, codec=True, v4l2_output=PI4_DEVICES)
    assert "v4l2-ctl lists bcm2835-codec" in out
    assert "the agent's PyAV has h264_v4l2m2m" in out
    assert "hardware H.264 encoder: yes" in out
    assert "USB Camera" in out


def test_installer_reports_no_hardware_encoder_without_the_codec(tmp_path: Path) -> None:
    # A Pi 5: a camera, but no bcm2835-codec and no /dev/video11.
    out = _check(tmp_path, codec=False, v4l2_output="USB Camera (usb-xhci-hcd.0-1):\n\t/dev/video0")
    assert "hardware H.264 encoder: no; the agent will encode with libx264" in out


def test_installer_refuses_to_install_without_root_and_rejects_unknown_options() -> None:
    done = subprocess.run(["bash", str(PI / "install.sh"), "--bogus"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr
    if os.geteuid() != 0:
        done = subprocess.run(["bash", str(PI / "install.sh")], capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and "run as root" in done.stderr
