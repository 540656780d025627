"""MQTT topic names: built and parsed here and nowhere else.

``custody/v1/devices/{id}/status|entry|cmd|ack|receipt|availability`` and the retained
``custody/v1/log/checkpoint``, which devices may read but not write. Everything works on MQTT
3.1.1; the shared-subscription filters are for MQTT 5 brokers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.schema import _DEVICE_ID_RE

PREFIX = "custody/v1"
CHECKPOINT_TOPIC = f"{PREFIX}/log/checkpoint"
#: Share group the server processes join on MQTT 5 brokers to split ingest between them.
SHARE_GROUP = "custody-ingest"


class DeviceTopic(StrEnum):
    """The per-device topics, and who publishes on each."""

    STATUS = "status"  # device -> server, signed DeviceStatus
    ENTRY = "entry"  # device -> server, signed chain entries (QoS 1)
    ACK = "ack"  # device -> server, signed CommandAck
    AVAILABILITY = "availability"  # device -> everyone, retained "online"/"offline" (last will)
    CMD = "cmd"  # server -> device, signed Command
    RECEIPT = "receipt"  # server -> device, signed Receipt

    @property
    def from_device(self) -> bool:
        """True for the topics a device publishes on."""
        return self in (DeviceTopic.STATUS, DeviceTopic.ENTRY, DeviceTopic.ACK, DeviceTopic.AVAILABILITY)


ONLINE = b"online"
OFFLINE = b"offline"


def device_topic(device_id: str, kind: DeviceTopic) -> str:
    """The topic for ``kind`` messages of ``device_id``."""
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise LocalProtocolError(f"{device_id!r} is not a device id")
    return f"{PREFIX}/devices/{device_id}/{kind.value}"


def device_filter(kind: DeviceTopic) -> str:
    """Subscription filter for ``kind`` messages of every device (what the server subscribes)."""
    return f"{PREFIX}/devices/+/{kind.value}"


def shared_filter(kind: DeviceTopic, group: str = SHARE_GROUP) -> str:
    """MQTT 5 shared-subscription filter: each message goes to one server of the group."""
    return f"$share/{group}/{device_filter(kind)}"


def device_acl_pattern() -> str:
    """Mosquitto ACL pattern (``%u`` = username = device id) for a device's own topics."""
    return f"{PREFIX}/devices/%u/#"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic taken apart: a device topic (``device_id`` and ``kind``) or the checkpoint topic."""

    device_id: str | None
    kind: DeviceTopic | None
    checkpoint: bool = False


def parse_topic(topic: str) -> ParsedTopic:
    """Take a received topic apart; raise :class:`RemoteProtocolError` for anything unknown."""
    if topic == CHECKPOINT_TOPIC:
        return ParsedTopic(None, None, checkpoint=True)
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[2] != "devices":
        raise RemoteProtocolError(f"unknown topic {topic!r}", code="unknown_topic")
    device_id, kind = parts[3], parts[4]
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise RemoteProtocolError(f"topic {topic!r} does not name a device", code="unknown_topic")
    try:
        return ParsedTopic(device_id, DeviceTopic(kind))
    except ValueError:
        raise RemoteProtocolError(f"unknown topic kind {kind!r}", code="unknown_topic") from None
