"""The embedded broker's topic ACL (pure): devices reach only their own topics; the server everything."""

from __future__ import annotations

import pytest

from protocol.keys import SigningKey
from protocol.topics import CHECKPOINT_TOPIC, DeviceTopic, device_topic, shared_filter
from server.mqtt import acl

A = SigningKey.generate().public.device_id
B = SigningKey.generate().public.device_id
SERVER = "custody-server"


@pytest.mark.parametrize("kind", list(DeviceTopic))
def test_a_device_publishes_only_its_own_upward_topics(kind: DeviceTopic) -> None:
    assert acl.may_publish(A, device_topic(A, kind), server_user=SERVER) == kind.from_device
    assert not acl.may_publish(A, device_topic(B, kind), server_user=SERVER)


@pytest.mark.parametrize("kind", list(DeviceTopic))
def test_a_device_reads_only_its_own_downward_topics(kind: DeviceTopic) -> None:
    assert acl.may_subscribe(A, device_topic(A, kind), server_user=SERVER) == (not kind.from_device)
    assert acl.may_read(A, device_topic(A, kind), server_user=SERVER) == (not kind.from_device)
    assert not acl.may_subscribe(A, device_topic(B, kind), server_user=SERVER)
    assert not acl.may_read(A, device_topic(B, kind), server_user=SERVER)


def test_checkpoint_is_read_only_for_devices() -> None:
    assert acl.may_subscribe(A, CHECKPOINT_TOPIC, server_user=SERVER)
    assert not acl.may_publish(A, CHECKPOINT_TOPIC, server_user=SERVER)
    assert acl.may_publish(SERVER, CHECKPOINT_TOPIC, server_user=SERVER)


@pytest.mark.parametrize("topic_filter", ["#", "custody/#", "custody/v1/#", f"custody/v1/devices/{A}/#",
                                          "custody/v1/devices/+/cmd", "$SYS/#", f"custody/v1/devices/{A}/+"])
def test_devices_cannot_subscribe_with_wildcards(topic_filter: str) -> None:
    assert not acl.may_subscribe(A, topic_filter, server_user=SERVER)


def test_the_server_reaches_everything_under_the_prefix_and_nothing_else() -> None:
    assert acl.may_subscribe(SERVER, "custody/v1/devices/+/entry", server_user=SERVER)
    assert acl.may_publish(SERVER, device_topic(A, DeviceTopic.CMD), server_user=SERVER)
    assert not acl.may_publish(SERVER, "elsewhere/topic", server_user=SERVER)
    assert not acl.may_subscribe(SERVER, "#", server_user=SERVER)
    assert not acl.may_subscribe(SERVER, shared_filter(DeviceTopic.ENTRY), server_user=SERVER)  # 3.1.1 only


def test_nobody_and_strangers_get_nothing() -> None:
    for user in (None, "someone", "custody-server2"):
        assert not acl.may_publish(user, device_topic(A, DeviceTopic.ENTRY), server_user=SERVER)
        assert not acl.may_subscribe(user, device_topic(A, DeviceTopic.CMD), server_user=SERVER)


def test_the_same_rules_as_the_mosquitto_acl_file() -> None:
    """The embedded ACL grants a device exactly what server/broker_files.py's Mosquitto ACL grants."""
    from server.broker_files import mosquitto_acl

    text = mosquitto_acl(SERVER)
    writes = {line.split()[2] for line in text.splitlines() if line.startswith("pattern write ")}
    reads = {line.split()[2] for line in text.splitlines() if line.startswith("pattern read ")}
    for kind in DeviceTopic:
        pattern = device_topic(A, kind).replace(A, "%u")
        assert (pattern in writes) == acl.may_publish(A, device_topic(A, kind), server_user=SERVER), kind
        assert (pattern in reads) == acl.may_read(A, device_topic(A, kind), server_user=SERVER), kind
    assert CHECKPOINT_TOPIC in reads and acl.may_read(A, CHECKPOINT_TOPIC, server_user=SERVER)
    assert f"user {SERVER}" in text and "topic readwrite custody/v1/#" in text
