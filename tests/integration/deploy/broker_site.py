"""A broker site as the compose deployment runs it, on loopback: the shipped config through run.sh.

:class:`ShippedBroker` renders ``deploy/mosquitto/mosquitto.conf`` with only the listener ports and
the ``/mosquitto/`` prefix substituted, and starts ``deploy/mosquitto/run.sh`` (the compose
command) with dash, so the tests prove the files, the wrapper and the config together.

Run as root where a ``mosquitto`` user exists (CI), nothing else changes either: the broker drops
root to that user, as in the container, and must read the files run.sh installed for it.
Otherwise a ``user`` line naming the current user is appended, since an unprivileged broker
cannot switch users.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from custody.tls import CertifiedKey, create_site_ca, issue_server_certificate, write_certificate, write_certified_key
from protocol.keys import SigningKey
from server.broker_files import (
    mosquitto_acl,
    mosquitto_password_file,
    mosquitto_password_line,
    new_broker_password,
    write_broker_files,
)
from tests.services.mosquitto import find_mosquitto
from tests.services.ports import (
    LOOPBACK,
    START_ATTEMPTS,
    ServiceStartError,
    die_with_parent,
    port_accepts,
    terminate,
    wait_until,
)

REPO = Path(__file__).resolve().parents[3]
SHIPPED_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
HEALTH_ACL = REPO / "deploy" / "mosquitto" / "health.acl"
RUN_SH = REPO / "deploy" / "mosquitto" / "run.sh"
SERVER_USER = "custody-server"
WAIT = 10.0  # seconds for any single event on loopback

# The listener lines of the shipped config, each replaced by a free loopback port.
DEVICE_LISTENER = "listener 8883"
SERVER_LISTENER = "listener 8884"
HEALTH_LISTENER = "listener 1880 127.0.0.1"


def render_shipped_config(text: str, root: Path, ports: dict[str, int], *, run_as: str | None) -> str:
    """The shipped config with listener ports and the ``/mosquitto/`` prefix substituted; nothing else.

    Fails if a listener line the tests rely on is missing, so a change to the shipped config
    cannot make the tests quietly run something else.
    """
    lines = text.splitlines()
    out = []
    wanted = {DEVICE_LISTENER: "device", SERVER_LISTENER: "server", HEALTH_LISTENER: "health"}
    found = set()
    for line in lines:
        if line.strip() in wanted:
            name = wanted[line.strip()]
            found.add(name)
            line = f"listener {ports[name]} {LOOPBACK}"
        out.append(line.replace("/mosquitto/", f"{root}/"))
    missing = set(wanted.values()) - found
    assert not missing, f"the shipped config lost its {missing} listener(s)"
    if run_as is not None:
        out.append(f"user {run_as}")
    return "\n".join(out) + "\n"


@dataclass
class Device:
    """An enrolled device's MQTT identity."""

    device_id: str
    password: str


@dataclass
class Site:
    """One site's TLS material and MQTT users, written where the compose volumes would hold them."""

    root: Path
    ca: CertifiedKey
    server_password: str = field(default_factory=new_broker_password)
    devices: list[Device] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        """The site CA certificate clients trust."""
        return self.root / "tls" / "ca.crt"

    @property
    def auth_dir(self) -> Path:
        """The shared directory the server writes the broker files into."""
        return self.root / "broker"

    def add_device(self) -> Device:
        """Enroll one more device (MQTT side only): a fresh id and random password."""
        device = Device(SigningKey.generate().public.device_id, new_broker_password())
        self.devices.append(device)
        return device

    def write_broker_files(self, *, devices: list[Device] | None = None) -> None:
        """What the server does after an enrollment or suspension: rewrite passwd and acl."""
        chosen = self.devices if devices is None else devices
        lines = [mosquitto_password_line(SERVER_USER, self.server_password)]
        lines += [mosquitto_password_line(d.device_id, d.password) for d in chosen]
        write_broker_files(self.auth_dir, password_file=mosquitto_password_file(lines), acl=mosquitto_acl(SERVER_USER))


def make_site(root: Path, *, dns_names: tuple[str, ...] = ("mosquitto", "localhost"),
              ip_addresses: tuple[str, ...] = ("127.0.0.1",)) -> Site:
    """A site CA, the broker's certificate (written as run.sh expects them), no broker files yet."""
    now = dt.datetime.now(dt.UTC)
    ca = create_site_ca("Test site", now=now)
    broker = issue_server_certificate(ca, dns_names=list(dns_names), ip_addresses=list(ip_addresses), now=now)
    tls = root / "tls"
    write_certificate(tls, "ca", ca.cert_pem)
    write_certified_key(tls, "broker", broker)
    return Site(root=root, ca=ca)


def _distinct_free_ports() -> dict[str, int]:
    """Three free loopback ports, all different (one after another, the kernel may hand out one twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        ports = [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    return dict(zip(("device", "server", "health"), ports, strict=True))


def _faithful_user() -> bool:
    """Whether the broker can drop root to a ``mosquitto`` user here, as it does in the container."""
    if os.geteuid() != 0:
        return False
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return False
    return True


class ShippedBroker:
    """``deploy/mosquitto/run.sh`` running Mosquitto with the shipped config on three loopback ports."""

    def __init__(self, site: Site, *, config_text: str | None = None, reload_interval: float = 0.2) -> None:
        self.site = site
        self.faithful = _faithful_user()
        # The broker's own tree (the container's /mosquitto). In faithful mode it lives outside
        # pytest's 0700 temp dirs, which the dropped-privilege broker could not enter.
        self.dir = Path(tempfile.mkdtemp(prefix="custody-mosquitto-")) if self.faithful else site.root / "mosquitto"
        self.dir.mkdir(exist_ok=True)
        self.ports = _distinct_free_ports()
        (self.dir / "config").mkdir()
        (self.dir / "data").mkdir()
        shutil.copy(HEALTH_ACL, self.dir / "config" / "health.acl")
        self._run_as = None if self.faithful else pwd.getpwuid(os.geteuid()).pw_name
        self._config_text = config_text if config_text is not None else SHIPPED_CONF.read_text()
        self.config_path = self.dir / "config" / "mosquitto.conf"
        self.config_path.write_text(self._render())
        if self.faithful:
            os.chmod(self.dir, 0o755)  # noqa: S103  (as /mosquitto is: the broker user must enter it)
            # The image's entrypoint hands /mosquitto to the broker user before run.sh starts.
            subprocess.run(["chown", "-R", "mosquitto:mosquitto", str(self.dir)], check=True)
        self.log_path = site.root / "run-sh.log"
        self.reload_interval = reload_interval
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start run.sh and wait until all three listeners accept connections.

        A port picked free may be taken by someone else before the broker binds it; then the
        broker exits with "Address already in use" and is started again on new ports.
        """
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once()
                return
            except ServiceStartError:
                if attempt == START_ATTEMPTS - 1 or "Address already in use" not in self.log():
                    raise
                self.ports = _distinct_free_ports()
                self.config_path.write_text(self._render())

    def _start_once(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CUSTODY_BROKER_AUTH_SRC": str(self.site.auth_dir),
            "CUSTODY_BROKER_TLS_SRC": str(self.site.root / "tls"),
            "MOSQUITTO_DIR": str(self.dir),
            "MOSQUITTO_CONF": str(self.config_path),
            "MOSQUITTO_BIN": str(find_mosquitto()),
            "MOSQUITTO_USER": "mosquitto" if self.faithful else pwd.getpwuid(os.geteuid()).pw_name,
            "RELOAD_INTERVAL": str(self.reload_interval),
        }
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                ["dash", str(RUN_SH)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        ports = list(self.ports.values())
        wait_until(lambda: all(port_accepts(LOOPBACK, p) for p in ports), timeout=WAIT,
                   what=f"run.sh broker on {ports}", proc=self._proc, log=self.log_path)

    def stop(self) -> None:
        """SIGTERM run.sh, as ``docker stop`` does; it must take the broker down with it."""
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None
        if self.faithful:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _render(self) -> str:
        return render_shipped_config(self._config_text, self.dir, self.ports, run_as=self._run_as)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The run.sh process."""
        assert self._proc is not None
        return self._proc

    def log(self) -> str:
        """Everything run.sh and the broker printed."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, *, after: int = 0) -> None:
        """Wait until the log, from offset ``after``, matches ``pattern``."""
        wait_until(lambda: re.search(pattern, self.log()[after:]) is not None, timeout=WAIT,
                   what=f"log line {pattern!r}", proc=self._proc, log=self.log_path)


class Client:
    """A paho-mqtt 2 client over TLS to one listener; queues of messages, connects and acks."""

    def __init__(self, port: int, *, ca_file: Path | None, username: str | None = None, password: str | None = None,
                 client_id: str = "", protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
                 certfile: Path | None = None, keyfile: Path | None = None, host: str = LOOPBACK) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.port, self.host = port, host
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file), certfile=str(certfile) if certfile else None,
                                keyfile=str(keyfile) if keyfile else None)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.put(rc)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _mid, rcs, _p: self.subacks.put(list(rcs))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.put(rc)

    def connect(self) -> ReasonCode:
        """Connect (TLS errors raise here) and return the CONNACK's reason code."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self.connacks.get(timeout=WAIT)

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe and return the SUBACK's reason codes."""
        self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged (QoS 1) or the packet left (QoS 0)."""
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout=WAIT)

    def collect_until(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Every message received up to and including ``payload`` on ``topic`` (the positive control).

        The broker keeps one publisher's messages to one subscriber in order, so once the control
        message (sent last) is here, anything sent before it that was going to arrive has arrived.
        """
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"control message {payload!r} on {topic} never came; got {got}")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            got.append((msg.topic, bytes(msg.payload)))
            if (msg.topic, msg.payload) == (topic, payload):
                return got

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
