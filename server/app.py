"""``create_app(config) -> web.Application`` and running it on a socket.

State lives on typed ``web.AppKey``s, never in module globals; everything opened at start-up
(database pool, store clients, background tasks) is closed by the same cleanup context, also when
a start-up step fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from custody.clock import Clock, SystemClock
from custody.tasks import cancel_and_wait
from server.api.problem import problem_middleware
from server.api.routes import add_routes
from server.auth import Authenticator
from server.config import ServerConfig
from server.datadir import DataDir, write_private
from server.db.database import Database, database_url
from server.decoder import Decoder
from server.keyring import ServerKeyring
from server.live.service import LiveService
from server.log.service import LogService
from server.mqtt.plane import MqttPlane
from server.services import Services
from server.services.access import AccessService
from server.services.accounts import AccountsService
from server.services.audit import AuditService
from server.services.broker_accounts import BrokerFiles
from server.services.cases import CasesService
from server.services.commands import CommandsService
from server.services.devices import DevicesService
from server.services.expiry import ExpiryJob, HoldsService, log_removals
from server.services.export import ExportService
from server.services.findings import FindingsService
from server.services.fleet import FleetService
from server.services.ingest import DecodeJob, IngestService
from server.services.officers import OfficersService
from server.services.policy import PolicyService
from server.services.replication import ReplicationService, second_store, target_name
from server.services.review import ReviewService
from server.services.scrub import Scrubber
from server.services.stats import StatsService
from server.services.units import UnitsService
from server.storage.base import FootageStore
from server.storage.local import LocalStore
from server.web.pages import add_web_routes

log = logging.getLogger(__name__)

SERVICES = web.AppKey("services", Services)
TASKS = web.AppKey("tasks", list[asyncio.Task[None]])
DECODE_QUEUE = web.AppKey("decode_queue", asyncio.Queue[DecodeJob])
MQTT = web.AppKey("mqtt", MqttPlane)
#: The second-copy duty, when this process copies (replication.to and replication.copy_in_server).
REPLICATION = web.AppKey("replication", ReplicationService)

#: Seconds between background duties.
NONCE_PRUNE_S = 60.0
KEY_REFRESH_S = 30.0
#: How often the broker files are checked against the device registry (rewritten only when changed).
BROKER_FILES_S = 5.0
#: A verified chunk still not decoded this long after its receipt was queued in a process that died
#: (several processes share the database) or whose decode did not run: the sweep queues it again.
DECODE_ORPHAN_S = 60.0


def make_store(config: ServerConfig, datadir: DataDir, clock: Clock) -> FootageStore:
    """The configured footage store (no I/O yet)."""
    if config.storage.backend == "s3":
        from server.storage.s3 import S3Store

        return S3Store(config.storage.s3, clock)
    secret = (config.auth.upload_secret.reveal().encode() if config.auth.upload_secret
              else datadir.upload_secret_bytes())
    return LocalStore(config.storage.local_path or datadir.footage, base_url=config.http.public_url or "",
                      upload_secret=secret)


def create_app(config: ServerConfig, clock: Clock | None = None) -> web.Application:
    """The aiohttp application; connections and tasks are opened on start-up and closed on cleanup."""
    clock = clock or SystemClock()
    datadir = DataDir(config.data_dir)
    datadir.ensure()
    db = Database.connect(
        database_url(config.database.url, datadir.sqlite_path,
                     config.database.password.reveal() if config.database.password else None),
        pool_size=config.database.pool_size, echo=config.database.echo)
    store = make_store(config, datadir, clock)
    keyring = ServerKeyring(db, datadir.keys, clock)
    decode_queue: asyncio.Queue[DecodeJob] = asyncio.Queue()
    # Workers start on the first decode; the first keyframes and the scrubber share them.
    decoder = Decoder(config.ingest.decode_workers, config.ingest.decode_niceness, config.ingest.decode_timeout_s)
    window_ms = config.auth.request_window_s * 1000
    policy = PolicyService(db, clock)
    cases = CasesService(db, clock, policy)
    audit = AuditService(db, clock, cases, config.audit)
    log_service = LogService(db, clock, keyring, config.log)
    access = AccessService(db, clock, log_service)
    fleet = FleetService(db, clock, config.mqtt.clock_skew_tolerance_ms)
    commands = CommandsService(db, clock, keyring)
    services = Services(
        config=config, clock=clock, datadir=datadir, db=db, store=store, keyring=keyring,
        authenticator=Authenticator(db, clock, window_ms),
        accounts=AccountsService(db, clock, config.auth.token_ttl_days),
        officers=OfficersService(db, clock),
        devices=DevicesService(db, clock, keyring, config.mqtt, window_ms, config.auth.enrollment_token_ttl_s),
        ingest=IngestService(db, clock, keyring, store, config.ingest, decode_queue, decoder),
        findings=FindingsService(db),
        policy=policy, cases=cases, audit=audit, review=ReviewService(db, clock, cases, audit),
        fleet=fleet,
        commands=commands,
        log=log_service,
        access=access,
        scrubber=Scrubber(db, clock, store, config.scrub, access, decoder),
        broker_files=BrokerFiles(db, config.mqtt),
        exports=ExportService(db, clock, keyring, store, log_service, access, config.log, cases=cases, audit=audit),
        live=LiveService(db, clock, config.live, commands, access),
        units=UnitsService(db, clock),
        holds=HoldsService(db, clock, log_service),
        expiry=ExpiryJob(db, clock, store, config.retention),
        stats=StatsService(db, clock),
    )
    # Bodies are limited per route (server.api.routes.read_body); this is only aiohttp's outer bound.
    app = web.Application(middlewares=[problem_middleware],
                          client_max_size=max(config.ingest.max_chunk_bytes, config.http.max_json_bytes) + 1024)
    app[SERVICES] = services
    app[TASKS] = []
    app[DECODE_QUEUE] = decode_queue
    app[MQTT] = MqttPlane(services)
    # The rollback guard's file first (server/log_guard.py), then the world.
    services.log.add_publisher(_published_file_writer(datadir))
    if config.replication.to:
        audit.second_copy = (target_name(config.replication.to), config.replication.delay_s * 1000)
        if config.replication.copy_in_server:
            app[REPLICATION] = ReplicationService(db, clock, store, second_store(config, clock), config.replication.to,
                                                  config.replication.batch)
            services.expiry.copies.append(app[REPLICATION].target)
    # Every new checkpoint goes out on the retained custody/v1/log/checkpoint topic (when a broker is configured).
    services.log.add_publisher(app[MQTT].publish_checkpoint)
    add_routes(app, services)
    add_web_routes(app, services)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    """Start up, serve, clean up: one cleanup context, so that a start-up step that refuses (a
    rolled-back log, a database that cannot migrate) still closes what the steps before it opened.
    With on_startup and on_cleanup, aiohttp runs on_cleanup only after a completed start-up: a
    refused start left the database pool and its writer connection to the garbage collector."""
    try:
        await _startup(app)
    except BaseException:
        with contextlib.suppress(Exception):  # logged by _cleanup; the start-up's error is the one to raise
            await _cleanup(app)
        raise
    yield
    await _cleanup(app)


async def _startup(app: web.Application) -> None:
    s = app[SERVICES]
    await s.db.migrate()
    await s.keyring.load()
    await s.policy.bootstrap()
    await s.store.start()
    # Transparency log and access log (issue 7): before anything can accept an entry or read footage.
    await s.log.start()
    published = s.datadir.published_checkpoint
    guard = await s.log.check_published(published.read_text(encoding="utf-8") if published.exists() else None)
    log.info("log guard: %s", guard)
    s.ingest.log = s.log
    s.cases.link_event_hooks.append(s.log.on_link_event)
    s.expiry.removal_hooks.append(log_removals(s.log))
    s.ingest.read_grant = await s.access.duty_grant("ingest")
    await s.scrubber.start()
    issued = await s.accounts.bootstrap_admin()
    if issued is not None:
        try:
            write_private(s.datadir.admin_token, issued.token + "\n")
            log.warning("created user 'admin'; its token is in %s (mode 0600)", s.datadir.admin_token)
        except FileExistsError:
            log.error("%s exists from an earlier database; the new admin token was NOT written", s.datadir.admin_token)
    tasks = app[TASKS]
    tasks.append(asyncio.create_task(_every(s.clock, NONCE_PRUNE_S, s.authenticator.prune_nonces), name="nonces"))
    tasks.append(asyncio.create_task(_every(s.clock, KEY_REFRESH_S, s.keyring.refresh), name="keys"))
    replication = app.get(REPLICATION)
    if replication is not None:
        replication.read_grant = await s.access.duty_grant("replication")
        await replication.start()
        tasks.append(asyncio.create_task(_every(s.clock, s.config.replication.interval_s, replication.round),
                                         name="replication"))
    tasks.append(asyncio.create_task(_every(s.clock, s.config.log.checkpoint_interval_s, s.log.checkpoint_round),
                                     name="checkpoints"))
    if s.config.scrub.enabled:
        # Paced in real time, whatever clock the rest runs on: the rate protects real disks and CPUs,
        # and a simulation's scaled clock must not make it re-read and decode footage 60 times as fast.
        tasks.append(asyncio.create_task(_every(SystemClock(), s.config.scrub.interval_s, s.scrubber.round),
                                         name="scrub"))
    if s.config.mqtt.broker_files_dir is not None:
        # An external Mosquitto knows devices only from these files: written at start, then
        # whenever an enrollment or a revocation changes them.
        await s.broker_files.write_if_changed()
        tasks.append(asyncio.create_task(_every(s.clock, BROKER_FILES_S, s.broker_files.write_if_changed),
                                         name="broker-files"))
    if s.config.retention.expiry_interval_s:
        tasks.append(asyncio.create_task(_every(s.clock, s.config.retention.expiry_interval_s, s.expiry.run),
                                         name="expiry"))
    queue = app[DECODE_QUEUE]
    for device_id, seq in await s.ingest.pending_decodes():
        queue.put_nowait(DecodeJob(device_id, seq))
    for i in range(s.config.ingest.decode_workers):
        tasks.append(asyncio.create_task(_decode_worker(s, queue), name=f"decode-{i}"))
    if s.config.ingest.decode_after_receipt:
        tasks.append(asyncio.create_task(_every(s.clock, DECODE_ORPHAN_S, lambda: _decode_sweep(s, queue)),
                                         name="decode-sweep"))
    await app[MQTT].start()


def _published_file_writer(datadir: DataDir) -> Callable[[bytes], Awaitable[None]]:
    async def write(note: bytes) -> None:
        await asyncio.to_thread(datadir.write_published_checkpoint, note.decode("utf-8"))

    return write


async def _cleanup(app: web.Application) -> None:
    """Close everything the app opened, each step even when one before it failed (the database
    last): a step that raised left the database pool and its writer connection open. The first
    failure is raised once every step has run."""
    s = app[SERVICES]
    replication = app.get(REPLICATION)
    background: list[asyncio.Task[None]] = app[TASKS]
    steps: list[Callable[[], Awaitable[Any]]] = [app[MQTT].stop, lambda: cancel_and_wait(background)]
    if replication is not None:
        steps.append(replication.close)
    steps += [s.live.close, s.ingest.decoder.close, s.store.close, s.db.close]
    failure: BaseException | None = None
    for step in steps:
        try:
            await step()
        except Exception as exc:
            log.exception("closing the server: a step failed")
            failure = failure or exc
    if failure is not None:
        raise failure


async def _every(clock: Clock, seconds: float, duty: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await clock.sleep(seconds)
        try:
            await duty()
        except Exception:  # a periodic duty must survive one failure (database restarting, ...)
            log.exception("periodic duty failed")


#: Most first-keyframe decodes one worker records in one transaction.
DECODE_BATCH = 32


async def _decode_worker(s: Services, queue: asyncio.Queue[DecodeJob]) -> None:
    while True:
        # Whatever queued up while the last batch ran goes in this one: one read and one write
        # transaction for the lot instead of two per chunk.
        batch = [await queue.get()]
        while len(batch) < DECODE_BATCH and not queue.empty():
            batch.append(queue.get_nowait())
        try:
            await s.ingest.decode_many(batch)
        except Exception:  # recorded as not decoded; the scrubber retries later
            log.exception("first-keyframe decode of %d chunks (first %s/%s) failed to run", len(batch),
                          batch[0].device_id, batch[0].seq)
        finally:
            for _ in batch:
                queue.task_done()


async def _decode_sweep(s: Services, queue: asyncio.Queue[DecodeJob]) -> int:
    """Queue the decodes orphaned by another process (or a failed run); return how many."""
    if not queue.empty():
        # Its own backlog first: what is queued here may be older than the cutoff and would be
        # queued twice. Any process with nothing queued does the sweep.
        return 0
    cutoff = s.clock.now_ms() - int(DECODE_ORPHAN_S * 1000)
    orphans = await s.ingest.pending_decodes(limit=1000, verified_before_ms=cutoff)
    for device_id, seq in orphans:
        queue.put_nowait(DecodeJob(device_id, seq))
    if orphans:
        log.info("queued %d first-keyframe decodes left undone (by a process that stopped?)", len(orphans))
    return len(orphans)


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """A TLS context when a certificate is configured."""
    if config.http.tls_cert is None or config.http.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.http.tls_cert, config.http.tls_key)
    return ctx


@dataclass(slots=True)
class RunningServer:
    """A started server: its URL, its services, and how to stop it."""

    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def services(self) -> Services:
        """The services of the running app."""
        return self.app[SERVICES]

    @property
    def mqtt(self) -> MqttPlane:
        """The MQTT side of the running app (broker, link, counters)."""
        return self.app[MQTT]

    async def stop(self) -> None:
        """Stop listening and run the cleanup."""
        self.services.datadir.clear_server_info(os.getpid())
        await self.runner.cleanup()


async def start_server(config: ServerConfig, clock: Clock | None = None) -> RunningServer:
    """Create the app, bind it, and record its URL (port 0 picks a free port)."""
    app = create_app(config, clock)
    runner = web.AppRunner(app, access_log=logging.getLogger("custody.access") if config.http.access_log else None)
    try:
        await runner.setup()
    except BaseException:
        # A start-up step refused: _lifetime closed what the steps before it opened; this closes
        # any other cleanup context that did start, before the error goes up.
        with contextlib.suppress(Exception):
            await app.cleanup()
        raise
    tls = ssl_context(config)
    site = web.TCPSite(runner, config.http.host, config.http.port, ssl_context=tls)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1]) if runner.addresses else config.http.port
    url = config.http.public_url or f"{'https' if tls else 'http'}://{config.http.host}:{port}"
    services = app[SERVICES]
    services.devices.api_url = url.rstrip("/")
    if isinstance(services.store, LocalStore):
        services.store.set_base_url(url)
    services.datadir.write_server_info({"url": url, "pid": os.getpid(),
                                        "server_key_fingerprint": services.keyring.current.public.fingerprint})
    return RunningServer(url, app, runner)
