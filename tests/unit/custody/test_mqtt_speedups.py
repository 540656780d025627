"""paho's Properties, patched (custody.mqtt_speedups), behave as paho's own on what goes over the wire."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from custody import mqtt_speedups

#: paho ships no annotations for it.
Properties: Any = PahoProperties


def original_methods() -> dict[str, Callable[..., Any]]:
    """The methods the patch replaces, as the class has them now."""
    return {name: Properties.__dict__[name] for name in ("__init__", "clear", "isEmpty")}


def filled(packet_type: int) -> Any:
    """Properties with a single, a repeated and a binary property set."""
    p = Properties(packet_type)
    p.MessageExpiryInterval = 30
    p.ContentType = "application/json"
    p.CorrelationData = b"\x01\x02"
    p.UserProperty = ("a", "1")
    p.UserProperty = ("b", "2")
    return p


@pytest.fixture
def both() -> Iterator[tuple[dict[str, Callable[..., Any]], dict[str, Callable[..., Any]]]]:
    """(paho's own methods, the patched ones); the patch is left as it was found."""
    was_installed = mqtt_speedups._installed
    mqtt_speedups.uninstall()
    before = original_methods()
    tables = copy.deepcopy((Properties(PacketTypes.PUBLISH).names, Properties(PacketTypes.PUBLISH).properties))
    assert mqtt_speedups.install()
    after = original_methods()
    assert after != before
    yield before, after
    mqtt_speedups.uninstall()
    # Nothing in paho wrote to the shared tables meanwhile.
    assert (Properties(PacketTypes.PUBLISH).names, Properties(PacketTypes.PUBLISH).properties) == tables
    if was_installed:
        mqtt_speedups.install()


def use(methods: dict[str, Callable[..., Any]]) -> None:
    for name, method in methods.items():
        setattr(Properties, name, method)


def test_patched_properties_pack_and_unpack_as_pahos_own(
        both: tuple[dict[str, Callable[..., Any]], dict[str, Callable[..., Any]]]) -> None:
    before, after = both
    seen: list[tuple[bytes, dict[str, Any], bool, bool]] = []
    for methods in (before, after):
        use(methods)
        packed = filled(PacketTypes.PUBLISH).pack()
        back = Properties(PacketTypes.PUBLISH)
        back.unpack(packed)
        empty = Properties(PacketTypes.PUBLISH)
        empty.unpack(b"\x00")
        cleared = filled(PacketTypes.PUBLISH)
        cleared.clear()
        seen.append((packed, back.json(), empty.isEmpty() and cleared.isEmpty() and cleared.pack() == b"\x00",
                     back.isEmpty()))
    assert seen[0] == seen[1]
    assert seen[1][2] is True and seen[1][3] is False
    assert seen[1][1]["UserProperty"] == [("a", "1"), ("b", "2")]


def test_patched_properties_still_refuse_what_paho_refuses(
        both: tuple[dict[str, Callable[..., Any]], dict[str, Callable[..., Any]]]) -> None:
    use(both[1])
    p = Properties(PacketTypes.PUBACK)
    with pytest.raises(MQTTException):
        p.NoSuchProperty = 1
    with pytest.raises(MQTTException):
        p.TopicAlias = 3  # a PUBLISH property, not a PUBACK one
    with pytest.raises(MQTTException):
        Properties(PacketTypes.PUBLISH).unpack(bytes([4, 0x01, 1, 0x01, 1]))  # Payload Format Indicator twice


def test_install_is_idempotent_and_keeps_the_patch(
        both: tuple[dict[str, Callable[..., Any]], dict[str, Callable[..., Any]]]) -> None:
    assert mqtt_speedups.install()
    assert original_methods() == both[1]
    assert original_methods()["__init__"] is not both[0]["__init__"]
