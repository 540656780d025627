"""What a message on each device topic means: entries to ingest, statuses to the fleet, acks to commands.

Every message is checked by the service it goes to, exactly as over HTTP: the broker is only
transport. A refused message (malformed, forged, of an unknown device, naming another device than
its topic, a conflict) is logged with its reason and counted by reason; nothing stored changes
because of it, and the next message is handled as usual.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from protocol.errors import RemoteProtocolError
from protocol.topics import DeviceTopic, device_topic, parse_topic
from server.errors import ServerError
from server.services.commands import CommandsService
from server.services.fleet import FleetService
from server.services.ingest import IngestService

log = logging.getLogger(__name__)

#: Publish a receipt to a device without waiting: (device id, signed receipt bytes).
ReceiptSender = Callable[[str, bytes], None]


class DeviceMessages:
    """Routes each received message to its service and keeps the counts."""

    def __init__(self, ingest: IngestService, fleet: FleetService, commands: CommandsService,
                 send_receipt: ReceiptSender) -> None:
        self.ingest = ingest
        self.fleet = fleet
        self.commands = commands
        self.send_receipt = send_receipt
        #: Accepted messages by topic kind.
        self.accepted: Counter[str] = Counter()
        #: Refused messages by ``kind:reason``.
        self.refused: Counter[str] = Counter()
        #: Messages whose handling failed on our side (database down, ...), by topic kind.
        self.errors: Counter[str] = Counter()
        #: Entry copies recognised as repeats of an entry this process had just stored.
        self.repeats = 0

    def stats(self) -> dict[str, Any]:
        """The counters."""
        return {"accepted": dict(self.accepted), "refused": dict(self.refused), "errors": dict(self.errors),
                "refused_total": sum(self.refused.values()), "entry_repeats": self.repeats}

    def _refuse(self, kind: str, topic: str, reason: str, message: str) -> None:
        self.refused[f"{kind}:{reason}"] += 1
        log.warning("refused MQTT message on %s: %s (%s)", topic, reason, message)

    async def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Handle one message; never raises for a bad message."""
        try:
            parsed = parse_topic(topic)
        except RemoteProtocolError as exc:
            self._refuse("topic", topic, exc.code, exc.message)
            return
        kind, device_id = parsed.kind, parsed.device_id
        if kind is None or device_id is None or not kind.from_device:
            self._refuse("topic", topic, "unexpected_topic", "the server does not take messages on this topic")
            return
        try:
            if kind == DeviceTopic.ENTRY:
                await self._entry(device_id, payload)
            elif kind == DeviceTopic.STATUS:
                await self.fleet.record_status(device_id, payload)
            elif kind == DeviceTopic.ACK:
                await self.commands.record_ack(device_id, payload)
            else:
                if not payload:  # a cleared retained message: nothing to say
                    return
                online = await self.fleet.record_availability(device_id, payload, retained=retained)
                if online and not retained:
                    # A broker without persistence lost what was queued for the device while it was away.
                    await self.commands.resend_pending(device_id)
        except (ServerError, RemoteProtocolError) as exc:
            self._refuse(kind.value, topic, exc.code or type(exc).__name__, str(exc))
            return
        except Exception:
            self.errors[kind.value] += 1
            log.exception("MQTT message on %s could not be handled", topic)
            return
        self.accepted[kind.value] += 1

    async def _entry(self, device_id: str, payload: bytes) -> None:
        if self.ingest.recent_repeat(device_id, payload, RECEIPT_RESEND_AFTER_MS):
            self.repeats += 1
            return  # the copy of an entry this process stored moments ago: nothing to do
        # device_id: the entry must be the topic's device's own, as over HTTP the signer's.
        result = await self.ingest.announce(payload, source="mqtt", device_id=device_id)
        if not result.created and result.receipt is not None and (
                result.verified_ms is None
                or self.ingest.clock.now_ms() - result.verified_ms >= RECEIPT_RESEND_AFTER_MS):
            # The device announced again something receipted a while ago: it has probably not seen
            # the receipt (a new receipt was sent when it was made, by whichever path made it).
            # A copy arriving sooner is the entry's own MQTT copy, overtaken by its bytes over HTTP.
            self.send_receipt(device_id, result.receipt)


#: An entry's MQTT copy arriving within this of its receipt is late, not a device asking again.
RECEIPT_RESEND_AFTER_MS = 10_000


def receipt_topic(device_id: str) -> str:
    """Where a device's receipts go."""
    return device_topic(device_id, DeviceTopic.RECEIPT)
