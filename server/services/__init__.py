"""The server's services: the logic between HTTP (or MQTT) handlers and the database and stores.

Handlers stay thin: they decode a request, call one service method, encode the answer. Services
take a :class:`custody.clock.Clock`, a :class:`server.db.database.Database` and stores; they
raise :mod:`server.errors` for anything a client caused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from custody.clock import Clock
from server.auth import Authenticator
from server.config import ServerConfig
from server.datadir import DataDir
from server.db.database import Database
from server.keyring import ServerKeyring
from server.log.service import LogService
from server.services.access import AccessService
from server.services.accounts import AccountsService
from server.services.audit import AuditService
from server.services.broker_accounts import BrokerFiles
from server.services.cases import CasesService
from server.services.commands import CommandsService
from server.services.devices import DevicesService
from server.services.expiry import ExpiryJob, HoldsService
from server.services.export import ExportService
from server.services.findings import FindingsService
from server.services.fleet import FleetService
from server.services.ingest import IngestService
from server.services.officers import OfficersService
from server.services.policy import PolicyService
from server.services.review import ReviewService
from server.services.scrub import Scrubber
from server.services.stats import StatsService
from server.services.units import UnitsService
from server.storage.base import FootageStore

if TYPE_CHECKING:
    from server.live.service import LiveService


@dataclass(slots=True)
class Services:
    """Every service of one server process (what handlers reach through ``app[SERVICES]``)."""

    config: ServerConfig
    clock: Clock
    datadir: DataDir
    db: Database
    store: FootageStore
    keyring: ServerKeyring
    authenticator: Authenticator
    accounts: AccountsService
    officers: OfficersService
    devices: DevicesService
    ingest: IngestService
    findings: FindingsService
    policy: PolicyService
    cases: CasesService
    audit: AuditService
    review: ReviewService
    fleet: FleetService
    commands: CommandsService
    # -- transparency log, access log, scrubber, export (issue 7)
    log: LogService
    access: AccessService
    scrubber: Scrubber
    exports: ExportService
    #: Live view (server/live/).
    live: LiveService
    units: UnitsService
    holds: HoldsService
    expiry: ExpiryJob
    stats: StatsService
    #: Mosquitto's password file and ACL (GET /api/v1/broker-files, mqtt.broker_files_dir).
    broker_files: BrokerFiles
