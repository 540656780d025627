"""Who may publish and subscribe what on the broker: the embedded broker's topic ACL.

The same rules as the Mosquitto ACL file (``server/broker_files.mosquitto_acl``, and
docs/MQTT.md): a device (MQTT user name = its device id) publishes only its own ``status``,
``entry``, ``ack`` and ``availability`` topics and reads only its own ``cmd`` and ``receipt``
topics and the checkpoint topic; the server user reads and writes everything under
``custody/v1/``; nobody else may do anything.

Subscriptions are checked as filters: a device may subscribe only to exactly the topics it may
read (no wildcards), because amqtt decides at subscribe time; delivery is checked again per topic.
The broker is only transport (every message is signed end to end); these rules keep a stolen or
misbehaving device from flooding, reading or squatting on other devices' topics.
"""

from __future__ import annotations

from protocol.errors import RemoteProtocolError
from protocol.topics import CHECKPOINT_TOPIC, PREFIX, DeviceTopic, parse_topic


def _device_topic(topic: str) -> tuple[str, DeviceTopic] | None:
    try:
        parsed = parse_topic(topic)
    except RemoteProtocolError:
        return None
    if parsed.device_id is None or parsed.kind is None:
        return None
    return parsed.device_id, parsed.kind


def _server_scope(topic: str) -> bool:
    return topic == f"{PREFIX}/#" or topic.startswith(f"{PREFIX}/")


def may_publish(username: str | None, topic: str, *, server_user: str) -> bool:
    """Whether ``username`` may publish on ``topic``."""
    if username is None:
        return False
    if username == server_user:
        return _server_scope(topic)
    own = _device_topic(topic)
    return own is not None and own[0] == username and own[1].from_device


def may_read(username: str | None, topic: str, *, server_user: str) -> bool:
    """Whether ``username`` may receive a message published on ``topic``."""
    if username is None:
        return False
    if username == server_user:
        return _server_scope(topic)
    if topic == CHECKPOINT_TOPIC:
        return True
    own = _device_topic(topic)
    return own is not None and own[0] == username and not own[1].from_device


def may_subscribe(username: str | None, topic_filter: str, *, server_user: str) -> bool:
    """Whether ``username`` may subscribe to ``topic_filter`` (devices: exact topics only)."""
    if username is None:
        return False
    if username == server_user:
        return _server_scope(topic_filter)
    if "+" in topic_filter or "#" in topic_filter or topic_filter.startswith("$"):
        return False
    return may_read(username, topic_filter, server_user=server_user)
