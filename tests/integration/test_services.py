"""The service fixtures really work, and the S3 endpoint really enforces what Custody relies on.

If one of the S3 tests fails, the S3 endpoint can no longer stand in for production Object Lock
storage: fix the endpoint or its configuration, never the assertion.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import queue
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.services.localstack_boot import BLOCKED_MARKER
from tests.services.mosquitto import MosquittoBroker, MosquittoFactory
from tests.services.postgres import PostgresDatabase, PostgresServer
from tests.services.s3 import LocalStackS3

pytestmark = pytest.mark.integration

WAIT = 10.0  # seconds to wait for any single network event on loopback


# -- Mosquitto ---------------------------------------------------------------------------------


class MqttClient:
    """A paho-mqtt 2 client (MQTT v5) with a queue of received messages and connect results."""

    def __init__(self, broker: MosquittoBroker, client_id: str, **credentials: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connects: queue.Queue[ReasonCode] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if credentials:
            self.client.username_pw_set(credentials["username"], credentials["password"])
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connects.put(rc)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        # Fault tests restart the broker; keep paho's reconnect backoff short (whole seconds only).
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect_async(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def connected(self) -> ReasonCode:
        """The result of the next CONNACK."""
        return self.connects.get(timeout=WAIT)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_clients() -> Iterator[list[MqttClient]]:
    """Collects the clients a test makes and closes them afterwards."""
    clients: list[MqttClient] = []
    yield clients
    for client in clients:
        client.close()


def test_mosquitto_publish_subscribe(mosquitto: MosquittoBroker, mqtt_clients: list[MqttClient]) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    sub = MqttClient(mosquitto, "sub")
    pub = MqttClient(mosquitto, "pub")
    mqtt_clients += [sub, pub]
    assert not sub.connected().is_failure
    assert not pub.connected().is_failure
    granted = sub.client.subscribe("custody/v1/devices/+/entry", qos=1)
    assert granted[0] == mqtt.MQTT_ERR_SUCCESS
    time.sleep(0.1)  # let the SUBACK land before publishing; QoS 1 is not retroactive

    info = pub.client.publish("custody/v1/devices/d1/entry", b"manifest-bytes", qos=1)
    info.wait_for_publish(timeout=WAIT)

    msg = sub.messages.get(timeout=WAIT)
    assert (msg.topic, msg.payload, msg.qos) == ("custody/v1/devices/d1/entry", b"manifest-bytes", 1)


def test_mosquitto_restart_keeps_url_and_forgets_state(
    mosquitto: MosquittoBroker, mqtt_clients: list[MqttClient]
) -> None:
    client = MqttClient(mosquitto, "device")
    mqtt_clients.append(client)
    assert not client.connected().is_failure
    client.client.publish("custody/v1/log/checkpoint", b"head-1", qos=1, retain=True).wait_for_publish(WAIT)

    mosquitto.stop()
    assert not mosquitto.running
    mosquitto.start()

    # The same client finds the broker again at the same URL by itself.
    assert not client.connected().is_failure
    # Persistence is off, so the retained message is gone: a restart is a real loss of broker state.
    client.client.subscribe("custody/v1/log/checkpoint", qos=1)
    with pytest.raises(queue.Empty):
        client.messages.get(timeout=0.5)


def test_mosquitto_factory_custom_config(
    mosquitto_factory: MosquittoFactory, mqtt_clients: list[MqttClient], tmp_path: Path
) -> None:
    password_file = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(password_file), "device-1", "s3cret"],
        check=True,
        capture_output=True,
    )
    acl_file = tmp_path / "acl"
    acl_file.write_text("user device-1\ntopic readwrite custody/v1/devices/device-1/#\n")
    broker = mosquitto_factory(f"password_file {password_file}\nacl_file {acl_file}\n", allow_anonymous=False)

    anonymous = MqttClient(broker, "anon")
    wrong = MqttClient(broker, "wrong", username="device-1", password="nope")
    good = MqttClient(broker, "good", username="device-1", password="s3cret")
    mqtt_clients += [anonymous, wrong, good]
    assert anonymous.connected().is_failure
    assert wrong.connected().is_failure
    assert not good.connected().is_failure

    # The ACL lets device-1 use its own topics only: a message to another device's topic is dropped.
    good.client.subscribe("custody/v1/devices/#", qos=1)
    time.sleep(0.1)
    good.client.publish("custody/v1/devices/device-2/cmd", b"forbidden", qos=1).wait_for_publish(WAIT)
    good.client.publish("custody/v1/devices/device-1/status", b"allowed", qos=1).wait_for_publish(WAIT)
    msg = good.messages.get(timeout=WAIT)
    assert (msg.topic, msg.payload) == ("custody/v1/devices/device-1/status", b"allowed")
    with pytest.raises(queue.Empty):
        good.messages.get(timeout=0.3)


# -- PostgreSQL --------------------------------------------------------------------------------


async def test_postgres_sqlalchemy_roundtrip(postgres_db: PostgresDatabase) -> None:
    engine = create_async_engine(postgres_db.async_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE chunk (seq bigint PRIMARY KEY, sha256 bytea NOT NULL)"))
            await conn.execute(
                text("INSERT INTO chunk VALUES (:seq, :sha)"),
                [{"seq": i, "sha": bytes([i]) * 32} for i in range(3)],
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT seq, sha256 FROM chunk ORDER BY seq"))).all()
    finally:
        await engine.dispose()
    assert [(r.seq, r.sha256) for r in rows] == [(i, bytes([i]) * 32) for i in range(3)]


async def test_postgres_databases_are_isolated(postgres: PostgresServer, postgres_db: PostgresDatabase) -> None:
    # The fixture's database is empty, and another database made the same way cannot see into it.
    other_url = postgres.create_database(f"{postgres_db.name}_b")
    assert other_url.endswith(f"/{postgres_db.name}_b")
    conn = await asyncpg.connect(postgres_db.dsn)
    try:
        await conn.execute("CREATE TABLE mine (x int)")
        assert await conn.fetchval("SELECT current_database()") == postgres_db.name
    finally:
        await conn.close()
    other = await asyncpg.connect(postgres.dsn_for(f"{postgres_db.name}_b"))
    try:
        assert await other.fetchval("SELECT to_regclass('mine') IS NULL")
    finally:
        await other.close()
        postgres.drop_database(f"{postgres_db.name}_b")


# -- S3 (LocalStack) ---------------------------------------------------------------------------


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _http_put(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """PUT with urllib, as a device would with a presigned URL; returns (status, error code or '')."""
    # The URL comes from the fixture's own endpoint (http://127.0.0.1), so no file: or other scheme.
    req = urllib.request.Request(url, data=body, method="PUT", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as resp:  # noqa: S310
            return resp.status, ""
    except urllib.error.HTTPError as err:
        payload = err.read().decode(errors="replace")
        code = payload.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in payload else ""
        return err.code, code


@pytest.fixture
def locked_object(s3: LocalStackS3, s3_bucket: str) -> tuple[str, str, dt.datetime]:
    """An object under COMPLIANCE retention for a day, stored with its SHA-256: (key, version, until)."""
    body = b"chunk 0 of recording r1"
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    put = s3.client().put_object(
        Bucket=s3_bucket,
        Key="d1/0/chunk.mp4",
        Body=body,
        ChecksumSHA256=_sha256_b64(body),
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    assert put["ChecksumSHA256"] == _sha256_b64(body)
    return "d1/0/chunk.mp4", put["VersionId"], until


def test_s3_object_lock_bucket_stores_checksum_and_retention(
    s3: LocalStackS3, s3_bucket: str, locked_object: tuple[str, str, dt.datetime]
) -> None:
    key, version, until = locked_object
    client = s3.client()
    assert (
        client.get_object_lock_configuration(Bucket=s3_bucket)["ObjectLockConfiguration"]["ObjectLockEnabled"]
        == "Enabled"
    )
    got = client.get_object(Bucket=s3_bucket, Key=key, VersionId=version, ChecksumMode="ENABLED")
    assert got["Body"].read() == b"chunk 0 of recording r1"
    assert got["ChecksumSHA256"] == _sha256_b64(b"chunk 0 of recording r1")
    retention = client.get_object_retention(Bucket=s3_bucket, Key=key, VersionId=version)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] == until


def test_s3_refuses_deleting_a_locked_version(
    s3: LocalStackS3, s3_bucket: str, locked_object: tuple[str, str, dt.datetime]
) -> None:
    key, version, _ = locked_object
    with pytest.raises(ClientError) as err:
        s3.client().delete_object(Bucket=s3_bucket, Key=key, VersionId=version)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    # Even the governance bypass does not unlock COMPLIANCE mode.
    with pytest.raises(ClientError) as err:
        s3.client().delete_object(Bucket=s3_bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    versions = s3.client().list_object_versions(Bucket=s3_bucket, Prefix=key)["Versions"]
    assert [v["VersionId"] for v in versions] == [version]


def test_s3_refuses_shortening_compliance_retention(
    s3: LocalStackS3, s3_bucket: str, locked_object: tuple[str, str, dt.datetime]
) -> None:
    key, version, until = locked_object
    client = s3.client()
    with pytest.raises(ClientError) as err:
        client.put_object_retention(
            Bucket=s3_bucket,
            Key=key,
            VersionId=version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - dt.timedelta(hours=1)},
        )
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    # Extending stays allowed, so the refusal above is about shortening, not about any change.
    later = until + dt.timedelta(days=1)
    client.put_object_retention(
        Bucket=s3_bucket,
        Key=key,
        VersionId=version,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later},
    )
    retention = client.get_object_retention(Bucket=s3_bucket, Key=key, VersionId=version)["Retention"]
    assert retention["RetainUntilDate"] == later


def test_s3_refuses_a_wrong_sha256_checksum(s3: LocalStackS3, s3_bucket: str) -> None:
    with pytest.raises(ClientError) as err:
        s3.client().put_object(
            Bucket=s3_bucket, Key="d1/1/chunk.mp4", Body=b"real bytes", ChecksumSHA256=_sha256_b64(b"other")
        )
    assert err.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as err:
        s3.client().head_object(Bucket=s3_bucket, Key="d1/1/chunk.mp4")
    assert err.value.response["Error"]["Code"] == "404"


def test_s3_presigned_put_is_enforced(s3: LocalStackS3, s3_bucket: str) -> None:
    body = b"chunk bytes from the device"
    key = "d1/2/chunk.mp4"
    checksum = _sha256_b64(body)
    # The shape of Custody's upload target: the checksum header is signed, so the device must send it.
    url = s3.client().generate_presigned_url(
        "put_object",
        Params={"Bucket": s3_bucket, "Key": key, "ChecksumSHA256": checksum, "ContentType": "video/mp4"},
        ExpiresIn=300,
    )
    headers = {"Content-Type": "video/mp4", "x-amz-checksum-sha256": checksum}
    assert url.startswith(s3.endpoint_url)

    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1 :]
    assert _http_put(flipped, body, headers) == (403, "SignatureDoesNotMatch")
    assert _http_put(url.replace(f"/{key}?", "/d1/3/chunk.mp4?"), body, headers) == (
        403,
        "SignatureDoesNotMatch",
    )
    assert _http_put(url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000"), body, headers) == (
        403,
        "SignatureDoesNotMatch",
    )
    assert _http_put(url, body, {"Content-Type": "video/mp4"}) == (403, "SignatureDoesNotMatch")
    assert _http_put(url, b"substituted bytes", headers) == (400, "BadDigest")
    with pytest.raises(ClientError):
        s3.client().head_object(Bucket=s3_bucket, Key=key)

    assert _http_put(url, body, headers) == (200, "")
    got = s3.client().get_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got["ChecksumSHA256"] == checksum


def test_s3_presigned_put_expires(s3: LocalStackS3, s3_bucket: str) -> None:
    url = s3.client().generate_presigned_url(
        "put_object", Params={"Bucket": s3_bucket, "Key": "late", "ContentType": "video/mp4"}, ExpiresIn=1
    )
    time.sleep(2.1)
    status, code = _http_put(url, b"late bytes", {"Content-Type": "video/mp4"})
    assert (status, code) == (403, "AccessDenied")


def test_s3_endpoint_stays_on_loopback(s3: LocalStackS3) -> None:
    # Every listening socket on the endpoint's port is bound to 127.0.0.1 (0100007F), never 0.0.0.0.
    port_hex = f"{s3.port:04X}"
    listeners = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local.endswith(f":{port_hex}"):  # 0A = LISTEN
                listeners.append(local)
    assert listeners == [f"0100007F:{port_hex}"]
    # Attempts LocalStack made to reach beyond loopback were refused and logged by the boot guard;
    # a connection attempt (not just a name lookup) would mean a new phone-home path to switch off.
    blocked = [line for line in s3.log_path.read_text().splitlines() if BLOCKED_MARKER in line]
    assert not [line for line in blocked if " resolve " not in line], blocked
