"""MQTT topics are built and parsed in protocol/topics.py only; these pin their exact text."""

from __future__ import annotations

import pytest

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.topics import (
    CHECKPOINT_TOPIC,
    DeviceTopic,
    ParsedTopic,
    device_acl_pattern,
    device_filter,
    device_topic,
    parse_topic,
    shared_filter,
)
from tests.unit.protocol import samples as S

DEV = S.DEVICE_ID


@pytest.mark.parametrize("kind", list(DeviceTopic))
def test_device_topics_round_trip(kind: DeviceTopic) -> None:
    topic = device_topic(DEV, kind)
    assert topic == f"custody/v1/devices/{DEV}/{kind.value}"
    assert parse_topic(topic) == ParsedTopic(DEV, kind)


def test_the_topic_names_are_the_wire_contract() -> None:
    assert {k.value for k in DeviceTopic} == {"status", "entry", "cmd", "ack", "receipt", "availability"}
    assert {k for k in DeviceTopic if k.from_device} == {
        DeviceTopic.STATUS, DeviceTopic.ENTRY, DeviceTopic.ACK, DeviceTopic.AVAILABILITY,
    }
    assert CHECKPOINT_TOPIC == "custody/v1/log/checkpoint"
    assert parse_topic(CHECKPOINT_TOPIC) == ParsedTopic(None, None, checkpoint=True)


def test_filters() -> None:
    assert device_filter(DeviceTopic.ENTRY) == "custody/v1/devices/+/entry"
    assert shared_filter(DeviceTopic.STATUS) == "$share/custody-ingest/custody/v1/devices/+/status"
    assert shared_filter(DeviceTopic.ACK, "g2") == "$share/g2/custody/v1/devices/+/ack"
    assert device_acl_pattern() == "custody/v1/devices/%u/#"


@pytest.mark.parametrize("bad", ["", "Abc", "1" * 24, DEV[:-1], DEV + "a", "../../etc", f"{DEV}/x", "+", "#"])
def test_building_a_topic_for_a_non_device_id_is_our_error(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match="is not a device id"):
        device_topic(bad, DeviceTopic.STATUS)


@pytest.mark.parametrize(
    ("topic", "match"),
    [
        ("", "unknown topic"),
        ("custody/v1/devices", "unknown topic"),
        (f"custody/v2/devices/{DEV}/status", "unknown topic"),
        (f"other/v1/devices/{DEV}/status", "unknown topic"),
        (f"custody/v1/device/{DEV}/status", "unknown topic"),
        (f"custody/v1/devices/{DEV}/status/extra", "unknown topic"),
        (f"/custody/v1/devices/{DEV}/status", "unknown topic"),
        (f"custody/v1/devices/{DEV.upper()}/status", "does not name a device"),
        ("custody/v1/devices/+/status", "does not name a device"),
        ("custody/v1/devices/../status", "does not name a device"),
        (f"custody/v1/devices/{DEV}/Status", "unknown topic kind 'Status'"),
        (f"custody/v1/devices/{DEV}/", "unknown topic kind ''"),
        (f"custody/v1/devices/{DEV}/#", "unknown topic kind '#'"),
        ("custody/v1/log/checkpoint/", "unknown topic"),
        ("custody/v1/log/other", "unknown topic"),
    ],
)
def test_bad_topics_are_the_peers_error(topic: str, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as err:
        parse_topic(topic)
    assert err.value.code == "unknown_topic"
