"""deploy/pi/: the unit says what the agent and the installer rely on, and they agree on paths.

systemd's own check of the unit, shellcheck and a run of the installer's --check are in
tests/integration/deploy/test_pi_install.py.
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from agent.watchdog import watchdog_interval

PI = Path(__file__).resolve().parents[3] / "deploy" / "pi"
UNIT = PI / "custody-agent.service"
INSTALL = PI / "install.sh"
ENROLL = PI / "ENROLL.md"


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    # strict: a key given twice is an error here, while systemd would quietly take the last one.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def _installer_vars() -> dict[str, str]:
    """install.sh's top-level ``NAME=value`` lines; ``${X:-default}`` read as its default, $PREFIX expanded."""
    found: dict[str, str] = {}
    for match in re.finditer(r'^([A-Z_]+)="?([^"\n]*)"?$', INSTALL.read_text(), re.M):
        value = re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", match[2])
        found[match[1]] = value.replace("$PREFIX", found.get("PREFIX", "$PREFIX"))
    return found


def test_the_unit_restarts_always_and_watches_the_agent(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"  # only the agent's own process may ping
    assert service["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"  # never give up restarting
    watchdog_sec = int(service["WatchdogSec"])
    # What systemd hands the agent, and how often agent/watchdog.py then says to ping.
    assert watchdog_interval(environ={"WATCHDOG_USEC": str(watchdog_sec * 1_000_000)}) == watchdog_sec / 2
    assert int(service["TimeoutStopSec"]) >= 10  # time to close and sign the chunk being recorded


def test_the_unit_runs_as_custody_with_camera_and_audio_and_a_private_data_dir(
    unit: configparser.ConfigParser,
) -> None:
    service = unit["Service"]
    assert (service["User"], service["Group"]) == ("custody", "custody")
    assert set(service["SupplementaryGroups"].split()) == {"video", "audio"}
    assert (service["StateDirectory"], service["StateDirectoryMode"]) == ("custody", "0700")
    assert service["UMask"] == "0077"
    assert "PrivateDevices" not in service  # it would hide the camera, codec and sound card
    assert "MemoryDenyWriteExecute" not in service  # libffi callbacks need W+X pages
    assert service["ReadWritePaths"] == "/var/lib/custody"


def test_unit_and_installer_agree_on_paths(unit: configparser.ConfigParser) -> None:
    installer = _installer_vars()
    argv = shlex.split(unit["Service"]["ExecStart"])
    venv, data_dir = installer["VENV"], installer["DATA_DIR"]
    assert argv[:5] == [f"{venv}/bin/custody", "agent", "run", "--data-dir", data_dir]
    assert argv[5:] == ["$CUSTODY_AGENT_ARGS"]
    assert unit["Service"]["EnvironmentFile"] == f"-{installer['CONF_DIR']}/agent.env"
    assert f"/var/lib/{unit['Service']['StateDirectory']}" == data_dir
    assert installer["AGENT_USER"] == unit["Service"]["User"]
    assert installer["UNIT_NAME"] == UNIT.name
    assert unit["Unit"]["Documentation"] == f"file://{installer['PREFIX']}/ENROLL.md"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_installer_installs_the_agent_extra_only() -> None:
    text = INSTALL.read_text()
    installs = re.findall(r'pip" install .*"\$\{source_spec\}\[(\w+)\]"', text)
    assert installs == ["agent"]
    assert "usermod --append --groups video,audio" in text
    assert 'install -d -m 0700 -o "$AGENT_USER" -g "$AGENT_USER" "$DATA_DIR"' in text
    assert "chown -R" not in text.replace("Never chown -R", "")  # a re-install never touches footage


def test_the_walkthrough_names_the_commands_of_the_flow() -> None:
    text = ENROLL.read_text()
    assert "enroll-token create" in text
    command = " ".join(text.replace("\\\n", " ").split())  # shell continuation lines joined
    assert "agent run --server https://custody.example.org --data-dir /var/lib/custody --enroll-token" in command
    assert "sudo -u custody" in text  # files in the data dir must belong to the service's user
    assert "deploy/pi/smoke-test.sh" in text
    assert "systemctl start custody-agent" in text


def test_the_units_command_and_the_walkthroughs_parse_with_the_real_cli(unit: configparser.ConfigParser) -> None:
    from custody.cli import build_parser

    parser = build_parser()
    template = re.search(r"^CUSTODY_AGENT_ARGS=(.*)$", INSTALL.read_text(), re.M)
    assert template, "install.sh writes no CUSTODY_AGENT_ARGS"
    agent_args = template[1].replace("$mic", "+alsa:plughw:1,0")
    argv = shlex.split(unit["Service"]["ExecStart"].replace("$CUSTODY_AGENT_ARGS", agent_args))[1:]
    args = parser.parse_args(argv)
    assert (args.command, args.agent_command, str(args.data_dir)) == ("agent", "run", "/var/lib/custody")
    assert args.source == "v4l2:/dev/video0+alsa:plughw:1,0"  # a real camera, not the synthetic default
    command = " ".join(ENROLL.read_text().replace("\\\n", " ").split())
    enroll = re.search(r"/opt/custody/venv/bin/custody (agent run [^`]*?--enroll-token TOKEN)", command)
    assert enroll, "the walkthrough's enrollment command is gone"
    args = parser.parse_args(shlex.split(enroll[1]))
    # --server may be repeated (other processes of the same server): the URLs, in the order given.
    assert (args.server, args.enroll_token) == (["https://custody.example.org"], "TOKEN")


def test_every_admin_command_in_the_walkthrough_parses_with_the_real_cli() -> None:
    from custody.cli import build_parser

    parser = build_parser()
    text = ENROLL.read_text().replace("\\\n", " ")
    commands = re.findall(r"^(custody admin .*)$", text, re.M) + re.findall(r"`(custody admin [^`]*)`", text)
    assert len(commands) >= 5
    for command in commands:
        argv = shlex.split(command.replace('"$CUSTODY_TOKEN"', "T").replace('"..."', "why"))[1:]
        parser.parse_args(argv)  # argparse exits (SystemExit) on anything it does not know
