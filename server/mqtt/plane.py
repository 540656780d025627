"""The MQTT control plane of one server process: broker (embedded or not), link, handlers, wiring.

``mqtt.url`` decides: unset or ``embedded`` starts amqtt in-process (server/mqtt/embedded.py) and
connects to it over MQTT 3.1.1 with plain subscriptions; ``mqtt://`` / ``mqtts://`` connects to
Mosquitto or EMQX (MQTT 5 and shared subscriptions when the broker has them); ``off`` runs without
MQTT (devices get no broker in their enrollment answer and deliver over HTTP only).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import ssl
from typing import Any

from protocol.topics import CHECKPOINT_TOPIC, DeviceTopic, device_topic
from server.config import MqttConfig
from server.mqtt.embedded import EmbeddedBroker
from server.mqtt.handlers import DeviceMessages, receipt_topic
from server.mqtt.link import BrokerEndpoint, ServerLink
from server.services import Services
from server.services.broker_accounts import BrokerAccounts

log = logging.getLogger(__name__)


def is_embedded(config: MqttConfig) -> bool:
    """Whether this configuration runs the embedded broker."""
    return config.url in (None, "embedded")


def is_off(config: MqttConfig) -> bool:
    """Whether MQTT is switched off."""
    return config.url == "off"


class MqttPlane:
    """Starts and stops everything MQTT for one server process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config.mqtt
        self.broker: EmbeddedBroker | None = None
        self.link: ServerLink | None = None
        self.messages: DeviceMessages | None = None

    async def start(self) -> None:
        """Start the embedded broker if configured, connect (in the background), and wire the services."""
        cfg, s = self.config, self.services
        if is_off(cfg):
            log.warning("MQTT is off (mqtt.url = off): devices deliver over HTTP only, no commands, no live fleet")
            return
        if is_embedded(cfg):
            self.broker = EmbeddedBroker(cfg.embedded_host, cfg.embedded_port, cfg.username,
                                         BrokerAccounts(s.db).check)
            await self.broker.start()
            endpoint = BrokerEndpoint.from_url(self.broker.url, cfg.username, self.broker.server_password)
            protocol, device_url = "3.1.1", cfg.device_url or self.broker.url
        else:
            assert cfg.url is not None
            endpoint = BrokerEndpoint.from_url(cfg.url, cfg.username,
                                               cfg.password.reveal() if cfg.password is not None else None)
            protocol, device_url = cfg.protocol, cfg.device_url or cfg.url
        tls = None
        if endpoint.tls and cfg.tls_ca is not None:
            tls = ssl.create_default_context(cafile=str(cfg.tls_ca))
        # A random suffix: a broker drops the older of two connections with one client id, so two
        # links must never share one, even in one process (tests run two servers in one) or in two
        # containers with the same host name and pid. The address of this object (id % 10,000, as
        # before) took only 625 values and collided: the two links then took over from each other.
        client_id = f"{cfg.client_id or 'custody-server-' + socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.messages = DeviceMessages(s.ingest, s.fleet, s.commands, self.send_receipt)
        self.link = ServerLink(endpoint, client_id=client_id, handler=self.messages.handle, protocol=protocol,
                               shared_subscriptions=cfg.shared_subscriptions, workers=cfg.workers,
                               keepalive=cfg.keepalive_s, tls_context=tls)
        self.link.on_connect.append(self._resend)
        s.devices.mqtt_url = device_url
        s.ingest.receipt_listeners.append(self.send_receipt)
        s.commands.publisher = self._publish_command
        s.fleet.mqtt_stats = self.stats
        self.link.start()

    async def stop(self) -> None:
        """Disconnect, then stop the embedded broker."""
        s = self.services
        s.commands.publisher = None
        if self.send_receipt in s.ingest.receipt_listeners:
            s.ingest.receipt_listeners.remove(self.send_receipt)
        if self.link is not None:
            await self.link.stop()
        if self.broker is not None:
            await self.broker.stop()

    def send_receipt(self, device_id: str, receipt: bytes) -> None:
        """Queue a receipt for the device's receipt topic (QoS 1)."""
        if self.link is not None:
            self.link.publish_later(receipt_topic(device_id), receipt, qos=1)

    async def _publish_command(self, device_id: str, envelope: bytes) -> bool:
        assert self.link is not None
        return await self.link.publish(device_topic(device_id, DeviceTopic.CMD), envelope, qos=1)

    async def publish_checkpoint(self, checkpoint: bytes) -> bool:
        """Publish the latest signed tree head, retained, for devices to read (the transparency log's hook)."""
        if self.link is None:
            return False
        return await self.link.publish(CHECKPOINT_TOPIC, checkpoint, qos=1, retain=True)

    async def _resend(self) -> None:
        sent = await self.services.commands.resend_pending()
        if sent:
            log.info("re-sent %d unacknowledged commands after (re)connecting to the broker", sent)

    def stats(self) -> dict[str, Any]:
        """Link and handler counters, for the fleet view."""
        if self.link is None or self.messages is None:
            return {"enabled": False}
        st = self.link.stats
        return {
            "enabled": True, "embedded": self.broker is not None, "connected": self.link.connected.is_set(),
            "protocol": st.protocol, "shared_subscriptions": st.shared, "subscriptions": st.subscriptions,
            "device_url": self.services.devices.mqtt_url, "connects": st.connects,
            "connect_failures": st.connect_failures, "received": st.received, "published": st.published,
            "publish_failures": st.publish_failures, "outbox": self.link.outbox_size,
            "outbox_dropped": st.outbox_dropped, **self.messages.stats(),
        }
