"""The embedded broker: amqtt in the server's own process, for the embedded default.

``custody server`` with no broker configured must work on a machine with nothing installed, so the
server runs amqtt on its event loop. In-process rather than a child process because (1) the
broker's authentication then asks the server's database directly, so a device can connect the
moment its enrollment commits, with no password file to rewrite and no reload to signal; (2) the
server's own broker password exists only in memory, new at every start; (3) there is no second
process to supervise, restart or leave behind. The price: broker work shares the server's event
loop (amqtt handles about 1.5k msg/s, enough for the single-machine default), and amqtt speaks
MQTT 3.1.1 only, with no shared subscriptions. Anything larger runs Mosquitto or EMQX.

Authentication: the server's user (``mqtt.username``) with its per-start password, and every
enrolled, non-revoked device with user name = client id = device id and the password issued in its
enrollment answer (checked against the stored hash). Authorization: :mod:`server.mqtt.acl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from server.mqtt import acl

log = logging.getLogger(__name__)

#: ``(username, password) -> bool`` for devices: the server's database decides.
DeviceCheck = Callable[[str, str | None], Awaitable[bool]]

#: Seconds an offline device's session (its subscriptions and queued QoS 1 messages) is kept.
SESSION_EXPIRY_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class _Policy:
    """What the plugins need: the server's credentials and the device check."""

    server_user: str
    server_password: str
    check_device: DeviceCheck


class CustodyAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt authentication: the server user, or a device with its own id as user name and client id."""

    @dataclass
    class Config:
        """Plugin configuration (amqtt builds it from the broker config dict)."""

        policy: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        """True only for the server's user or an enrolled device with its password."""
        policy: _Policy = self.config.policy
        user, password = session.username, session.password
        if not user:
            log.info("embedded broker: refused a connection without credentials")
            return False
        if user == policy.server_user:
            ok = password is not None and hmac.compare_digest(password.encode(), policy.server_password.encode())
        elif session.client_id != user:
            # A device may hold only the session named after itself: otherwise a device with valid
            # credentials could take over (disconnect) another device's session.
            log.info("embedded broker: refused %s connecting as client id %s", user, session.client_id)
            return False
        else:
            try:
                ok = await policy.check_device(user, password)
            except Exception:  # database unreachable: refuse, the device retries
                log.exception("embedded broker: checking the credentials of %s failed", user)
                ok = False
        if not ok:
            log.info("embedded broker: refused credentials of user %s", user)
        return ok


class CustodyTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic ACL: :mod:`server.mqtt.acl`."""

    @dataclass
    class Config:
        """Plugin configuration."""

        policy: Any = None

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        """Allow or refuse one publish, subscribe or delivery."""
        policy: _Policy = self.config.policy
        user = session.username if session is not None else None
        if topic is None:
            return False
        if action == Action.PUBLISH:
            allowed = acl.may_publish(user, topic, server_user=policy.server_user)
        elif action == Action.SUBSCRIBE:
            allowed = acl.may_subscribe(user, topic, server_user=policy.server_user)
        else:
            allowed = acl.may_read(user, topic, server_user=policy.server_user)
        if not allowed and action != Action.RECEIVE:
            log.warning("embedded broker: refused %s of %s to %s", action, topic, user)
        return allowed


class _SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    """amqtt's table of subscriptions (filter -> subscribers), iterated over a snapshot.

    amqtt 0.12 awaits (each subscriber's topic ACL, retained messages) while it iterates this
    table. A client subscribing or leaving meanwhile changed it under the iteration, which then
    failed with "dictionary changed size during iteration": the message being broadcast was lost
    for every subscriber not yet reached (receipts, commands; the demo's devices subscribe while
    others publish). Iterating a copy delivers to those subscribed when the message came.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return [(topic_filter, list(subscribers)) for topic_filter, subscribers in super().items()]


class EmbeddedBroker:
    """amqtt on ``host:port`` with Custody's authentication and ACL."""

    def __init__(self, host: str, port: int, server_user: str, check_device: DeviceCheck) -> None:
        self.host = host
        self.requested_port = port
        self.server_user = server_user
        #: The server's own password: random at each start, never written anywhere.
        self.server_password = secrets.token_urlsafe(24)
        self._policy = _Policy(server_user, self.server_password, check_device)
        self._broker: Broker | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT`` once started."""
        if self.port is None:
            raise RuntimeError("embedded broker not started")
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; the actual port is known afterwards (port 0 picks a free one)."""
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.requested_port}"}},
            "session_expiry_interval": SESSION_EXPIRY_S,
            # Only these plugins: no anonymous access, no $SYS topics.
            "plugins": {
                f"{__name__}.CustodyAuthPlugin": {"policy": self._policy},
                f"{__name__}.CustodyTopicPlugin": {"policy": self._policy},
            },
        }
        # amqtt logs every connection, and its state-machine library every transition, at INFO:
        # noise at fleet scale. Refusals are logged by the plugins above, at INFO and WARNING.
        for name in ("amqtt", "transitions"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        broker = Broker(config)
        broker._subscriptions = _SubscriptionTable()
        await broker.start()
        self._broker = broker
        server = broker._servers["default"]  # amqtt exposes the bound socket only here
        self.port = int(server.instance.sockets[0].getsockname()[1])
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s", self.url)

    async def stop(self) -> None:
        """Disconnect everyone and close the listener."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        with contextlib.suppress(Exception):  # a broker failing to stop must not block the server's shutdown
            await asyncio.wait_for(broker.shutdown(), 10)
