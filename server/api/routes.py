"""The route table and its thin handlers: decode, call one service, encode.

Each :class:`Route` declares who may call it (``access``), its path and query parameters and
its body. :func:`wrap` turns a route into an aiohttp handler that authenticates (401), checks the
role (403), validates parameters and body (400, 413), and only then calls the handler. The
OpenAPI document is built from the same table (server/api/openapi.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from protocol.canonical import b64d
from protocol.errors import EncodingError
from protocol.httpsig import H_ENTRY
from protocol.messages import CommandKind
from server.api import cases_api as cz
from server.api import evidence
from server.api import governance_api as gov
from server.api.body import Body, F
from server.auth import USER_ROLES, Principal, Role, has_device_auth
from server.errors import BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from server.live import api as live_api
from server.services import Services
from server.services.ingest import check_upload_key
from server.storage.local import LocalStore
from server.web.session import cookie_principal

# -- access ----------------------------------------------------------------------------------

PUBLIC = "public"  # no credentials at all
ENROLL = "enroll"  # the one-time enrollment token inside the signed request body
UPLOAD = "upload"  # the capability (HMAC) the server put in the upload URL
COSIGNATURE = "cosignature"  # a witness's cosignature in the body, checked against its registered key
ENTRY = "entry"  # the device's signed chunk manifest in the Custody-Entry header, naming the body's hash
#: Routes whose body is chunk bytes (the chunk size limit, not the JSON one).
BYTE_ROUTES = (UPLOAD, ENTRY)

R = Role
ALL = frozenset(Role)
ADMINS = frozenset({R.ADMIN})
DEVICE_ADMINS = frozenset({R.ADMIN, R.DEVICE_ADMIN})
ACCOUNT_READERS = frozenset({R.ADMIN, R.AUDITOR})
OFFICER_READERS = frozenset(USER_ROLES)
FLEET_READERS = frozenset({R.ADMIN, R.DEVICE_ADMIN, R.SUPERVISOR, R.AUDITOR})
EVIDENCE_READERS = frozenset({R.ADMIN, R.DEVICE_ADMIN, R.SUPERVISOR, R.AUDITOR, R.CASE_HANDLER, R.LEGAL_REVIEWER})
TOKEN_READERS = frozenset({R.ADMIN, R.DEVICE_ADMIN, R.AUDITOR})
DEVICES = frozenset({R.DEVICE})
CASE_READERS = frozenset({R.ADMIN, R.OFFICER, R.CASE_HANDLER, R.SUPERVISOR, R.LEGAL_REVIEWER, R.AUDITOR})
CASE_WRITERS = frozenset({R.ADMIN, R.CASE_HANDLER})  # a case handler: only the cases they handle
AUDIT_READERS = frozenset({R.ADMIN, R.CASE_HANDLER, R.SUPERVISOR, R.LEGAL_REVIEWER, R.AUDITOR})
LEGAL_REVIEWERS = frozenset({R.LEGAL_REVIEWER})
#: Legal holds keep footage beyond its class: set and lifted by those answerable for evidence.
HOLDERS = frozenset({R.ADMIN, R.SUPERVISOR, R.LEGAL_REVIEWER})  # not admin: the sign-off is the reviewer's own act
#: Commands: the service narrows officers to their own device and kinds, supervisors to live view.
COMMANDERS = frozenset({R.ADMIN, R.DEVICE_ADMIN, R.OFFICER, R.SUPERVISOR})
COMMAND_READERS = FLEET_READERS | {R.OFFICER}
#: Who may view, download and export footage (every read is in the access log).
FOOTAGE_READERS = frozenset({R.ADMIN, R.CASE_HANDLER, R.SUPERVISOR, R.LEGAL_REVIEWER, R.AUDITOR})
#: Who may query the access log (全过程记录信息调阅监督).
ACCESS_LOG_READERS = frozenset({R.ADMIN, R.SUPERVISOR, R.AUDITOR})
#: Live view (实时调阅) is supervision: supervisors, and admins.
LIVE_VIEWERS = frozenset({R.ADMIN, R.SUPERVISOR})

Access = str | frozenset[Role]

# -- parameters --------------------------------------------------------------------------------

DEVICE_ID = F("string", "device id (24 base32 characters, derived from the device's first key)",
              pattern=r"[a-z2-7]{24}", max_len=24)
SEQ = F("integer", "device-wide sequence number", lo=0, hi=2**53 - 1)
USER_NAME = F("string", "user name", pattern=r"[a-z][a-z0-9_.-]{0,63}", max_len=64)
OFFICER_ID = F("string", "officer id", pattern=r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", max_len=64)
TOKEN_ID = F("string", "API token id", pattern=r"[0-9a-f]{16}", max_len=16)
OBJECT_KEY = F("string", "object key DEVICE/SEQ/SHA256 (or conflicts/DEVICE/SEQ/SHA256)",
               pattern=r"(conflicts/)?[a-z2-7]{24}/[0-9]{12}/[0-9a-f]{64}", max_len=300)
RECORDING_ID = F("string", "recording id", pattern=r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", max_len=64)
SESSION_ID = F("string", "live session id", pattern=r"lv-[0-9a-f]{20}", max_len=23)
VIEWER_ID = F("string", "live viewer id", pattern=r"vw-[0-9a-f]{16}", max_len=19)
PATH_PARAMS: dict[str, F] = {"device_id": DEVICE_ID, "seq": SEQ, "name": USER_NAME, "officer_id": OFFICER_ID,
                             "token_id": TOKEN_ID, "key": OBJECT_KEY, "recording_id": RECORDING_ID,
                             **cz.PATH_PARAMS, "session_id": SESSION_ID, "viewer_id": VIEWER_ID,
                             **gov.PATH_PARAMS}

TIME_LO, TIME_HI = 946_684_800_000, 4_102_444_799_999  # 2000-01-01 to 2100-01-01, like protocol/schema.py

# -- bodies ------------------------------------------------------------------------------------

ENVELOPE = "envelope"  # a signed envelope's exact bytes (canonical JSON), parsed by the service

USER_ADD = Body("UserAdd", {
    "name": USER_NAME,
    "role": F("string", "role", enum=tuple(r.value for r in USER_ROLES)),
    "ttl_days": F("integer", "validity of the first token in days (0: no expiry; default from config)",
                  required=False, lo=0, hi=3650),
})
TOKEN_ADD = Body("TokenAdd", {
    "label": F("string", "what the token is for", required=False, nullable=True),
    "ttl_days": F("integer", "validity in days (0: no expiry; default from config)", required=False, lo=0, hi=3650),
})
OFFICER_ADD = Body("OfficerAdd", {
    "id": OFFICER_ID,
    "name": F("string", "full name", max_len=200),
    "unit": F("string", "enforcement unit", max_len=200),
    "cert_number": F("string", "enforcement certificate number (执法证号)", max_len=64),
    "cert_expires_ms": F("integer", "certificate expiry, ms since the epoch", lo=TIME_LO, hi=TIME_HI),
})
OFFICER_PATCH = Body("OfficerPatch", {
    "name": F("string", "full name", required=False, max_len=200),
    "unit": F("string", "enforcement unit", required=False, max_len=200),
    "cert_number": F("string", "enforcement certificate number", required=False, max_len=64),
    "cert_expires_ms": F("integer", "certificate expiry, ms since the epoch", required=False, lo=TIME_LO, hi=TIME_HI),
})
ENROLL_TOKEN_ADD = Body("EnrollmentTokenAdd", {
    "ttl_s": F("integer", "validity in seconds (default from config)", required=False, lo=60, hi=30 * 86400),
    "note": F("string", "note for the admin (e.g. the device's label)", required=False, nullable=True),
})
STATE_SET = Body("DeviceStateSet", {
    "state": F("string", "new state", enum=("active", "suspended", "lost", "revoked")),
    "reason": F("string", "why", required=False, nullable=True, max_len=500),
})
ASSIGN = Body("Assignment", {
    "officer_id": OFFICER_ID,
    "from_ms": F("integer", "start of the assignment (default now)", required=False, lo=TIME_LO, hi=TIME_HI),
})
EMPTY = Body("Empty", {})
COMMAND_ADD = Body("CommandAdd", {
    "kind": F("string", "command kind", enum=tuple(sorted(CommandKind.ALL))),
    "params": F("object", "parameters of the kind (select_step: case_step; assign_officer: officer_id)",
                required=False),
    "ttl_s": F("integer", "validity in seconds (default 300)", required=False, lo=1, hi=86400),
})
NOTE = "note"  # a C2SP signed note (text), parsed by the service
WITNESS_ADD = Body("WitnessAdd", {
    "vkey": F("string", "the witness's cosignature/v1 verifier key (name+hash+key)", max_len=300),
})
FORK_REPORT = Body("ForkReport", {
    "first": F("string", "a checkpoint note signed by this log, base64", max_len=32768),
    "second": F("string", "another checkpoint note signed by this log, inconsistent with the first, base64",
                max_len=32768),
    "reporter": F("string", "who reports (a witness name)", required=False, nullable=True, max_len=100),
})
EXPORT = Body("Export", {
    "reason": F("string", "why the footage is exported (recorded in the access log)", max_len=500),
    "recordings": F("string", "recordings, comma-separated DEVICE/RECORDING", required=False, nullable=True,
                    max_len=100_000),
    "device_id": F("string", "or: a device whose sequence range to export", required=False, nullable=True,
                   pattern=r"[a-z2-7]{24}", max_len=24),
    "from_seq": F("integer", "first sequence number of the range", required=False, nullable=True, lo=0,
                  hi=2**53 - 1),
    "to_seq": F("integer", "last sequence number of the range", required=False, nullable=True, lo=0, hi=2**53 - 1),
    "case_id": F("integer", "a case: its linked recordings, links and audit report", required=False,
                 nullable=True, lo=1, hi=2**31 - 1),
})
SDP = F("string", "SDP text", max_len=65_536, multiline=True)
SDP_OFFER = Body("SdpOffer", {"type": F("string", "always offer", enum=("offer",)), "sdp": SDP})
VIEWER_OFFER = Body("ViewerOffer", {
    "type": F("string", "always offer", enum=("offer",)), "sdp": SDP,
    "reason": F("string", "why this view (recorded in the access log)", max_len=500),
})


# -- the route type ----------------------------------------------------------------------------


@dataclass(slots=True)
class Ctx:
    """Everything a handler gets: the request, the services, who is asking, and checked inputs."""

    request: web.Request
    services: Services
    principal: Principal | None
    params: dict[str, Any]
    body: dict[str, Any]
    raw: bytes

    @property
    def actor(self) -> str:
        """Who is acting, for records."""
        return self.principal.actor if self.principal else "anonymous"


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint."""

    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    body: Body | str | None = None
    query: dict[str, F] = field(default_factory=dict)
    ok_status: int = 200
    response: str = "application/json"
    #: True when the route serves footage bytes: it must log an access event first (a test reads each).
    footage: bool = False

    @property
    def path_params(self) -> list[str]:
        """Names of the ``{...}`` parameters in the path."""
        return [p.split(":")[0] for p in re.findall(r"{([^}]+)}", self.path)]

    @property
    def openapi_path(self) -> str:
        """Path in OpenAPI form (no regex parts)."""
        return re.sub(r"{([^}:]+)(:[^}]+)?}", r"{\1}", self.path)


def ok(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
                        content_type="application/json", charset="utf-8")


def envelope_response(raw: bytes, status: int = 200) -> web.Response:
    """A signed envelope, exactly its bytes."""
    return web.Response(status=status, body=raw, content_type="application/json")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading them where the length is declared.

    A body that ends early (the connection closed mid-body) is 400 ``incomplete_body``, not an
    internal error: the device retries, nothing was stored.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}",
                              code="payload_too_large", limit=limit)
    try:
        # Whatever has arrived, piece by piece as the transport delivered it: fixed 64 KiB reads
        # sliced (copied) those pieces first, about 0.15 ms more CPU for a 620 kB chunk.
        chunks, total = [], 0
        while chunk := await request.content.readany():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", code="payload_too_large",
                                      limit=limit)
            chunks.append(chunk)
        return b"".join(chunks)  # one piece: that very object, not a copy
    except ConnectionResetError:  # aiohttp: "Connection lost" mid-body
        raise BadRequest(f"the connection ended before the body did ({declared} bytes declared)",
                         code="incomplete_body") from None


async def authenticate(request: web.Request, services: Services, raw: bytes) -> Principal:
    """Bearer token or signed device request; 401 without either."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'", code="bad_token")
        return await services.authenticator.bearer(token.strip())
    if has_device_auth(request.headers):
        return await services.authenticator.device(dict(request.headers), request.method, request.raw_path, raw)
    # The dashboard's pages call the same API with their session cookie (and CSRF header).
    principal = await cookie_principal(request, services)
    if principal is not None:
        return principal
    raise Unauthorized("this endpoint needs an API token or a signed device request", code="missing_credentials")


def wrap(route: Route, services: Services) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for ``route``: authenticate, authorize, validate, then call."""
    cfg = services.config

    async def handler(request: web.Request) -> web.StreamResponse:
        limit = cfg.ingest.max_chunk_bytes if route.access in BYTE_ROUTES else cfg.http.max_json_bytes
        raw = await read_body(request, limit) if request.method in ("POST", "PUT", "PATCH") else b""
        principal: Principal | None = None
        if isinstance(route.access, frozenset):
            principal = await authenticate(request, services, raw)
            if principal.role not in route.access:
                raise Forbidden(f"role {principal.role.value} may not {route.method} {route.openapi_path}",
                                code="forbidden_role")
        params: dict[str, Any] = {}
        for name in route.path_params:
            try:
                params[name] = PATH_PARAMS[name].parse_query(name, request.match_info[name])
            except BadRequest as exc:
                raise BadRequest(f"invalid {name} in path: {exc.message}", code="bad_id") from None
        for name, spec in route.query.items():
            if name in request.query:
                params[name] = spec.parse_query(name, request.query[name])
            elif spec.required:
                raise BadRequest(f"missing query parameter {name}", code="missing_field", field=name)
        unknown = sorted(set(request.query) - set(route.query))
        if unknown and route.access != UPLOAD:
            raise BadRequest(f"unknown query parameter {', '.join(unknown)}", code="unknown_field")
        body = route.body.parse(raw) if isinstance(route.body, Body) else {}
        if route.body is None and raw.strip():
            raise BadRequest("this endpoint takes no body", code="unexpected_body")
        if principal is not None and principal.kind == "user":
            await guard_scope(services, principal, route, params, body)
        return await route.handler(Ctx(request, services, principal, params, body, raw))

    return handler


#: Path, query and body fields naming a resource that belongs to a unit (server/services/units.py).
SCOPED_FIELDS = {"device_id": "device", "case_id": "case", "officer_id": "officer", "name": "user"}


async def guard_scope(services: Services, principal: Principal, route: Route, params: dict[str, Any],
                      body: dict[str, Any]) -> None:
    """Refuse (and record) any request naming a resource outside the caller's units.

    One guard for every route, keyed on the names of its fields, so that a new route cannot forget
    it; lists are filtered by their handlers.
    """
    action = f"{route.method} {route.openapi_path}"
    for source in (params, body):
        for name, kind in SCOPED_FIELDS.items():
            if name == "name" and source is body:
                continue  # in bodies "name" is a display name (officer, unit) or a new user's name
            value = source.get(name)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                await services.units.check(principal, kind, value, action)


async def scoped(ctx: Ctx, kind: str, items: list[dict[str, Any]], key: str = "id") -> list[dict[str, Any]]:
    """``items`` without those outside the caller's units."""
    ids = await ctx.services.units.scoped_ids(kind, await ctx.services.units.scope(ctx.principal))
    return items if ids is None else [i for i in items if i.get(key) in ids]


# -- handlers ----------------------------------------------------------------------------------


async def healthz(ctx: Ctx) -> web.StreamResponse:
    """Liveness."""
    return ok({"status": "ok", "store": ctx.services.store.kind,
               "database": "sqlite" if ctx.services.db.is_sqlite else "postgresql"})


async def openapi_doc(ctx: Ctx) -> web.StreamResponse:
    """The OpenAPI document."""
    from server.api.openapi import build_openapi

    return ok(build_openapi(ROUTES, public_url=ctx.services.devices.api_url))


async def enroll(ctx: Ctx) -> web.StreamResponse:
    """Enroll a device with a one-time token."""
    answer = await ctx.services.devices.enroll(ctx.raw)
    await ctx.services.units.place_enrolled()  # a device joins the unit of whoever made its token
    return envelope_response(answer, 201)


async def me(ctx: Ctx) -> web.StreamResponse:
    """Who am I."""
    p = ctx.principal
    assert p is not None
    return ok({"kind": p.kind, "name": p.name, "role": p.role.value, "token_id": p.token_id})


async def users_list(ctx: Ctx) -> web.StreamResponse:
    """List users."""
    return ok({"users": await scoped(ctx, "user", await ctx.services.accounts.list_users(), "name")})


async def users_add(ctx: Ctx) -> web.StreamResponse:
    """Create a user and its first token."""
    user, issued = await ctx.services.accounts.create_user(ctx.body["name"], ctx.body["role"], ctx.actor,
                                                           ctx.body.get("ttl_days"))
    return ok({"user": user, "token": issued.to_json()}, 201)


async def users_get(ctx: Ctx) -> web.StreamResponse:
    """One user."""
    return ok(await ctx.services.accounts.get_user(ctx.params["name"]))


async def users_disable(ctx: Ctx) -> web.StreamResponse:
    """Disable a user."""
    return ok(await ctx.services.accounts.disable_user(ctx.params["name"]))


async def tokens_list(ctx: Ctx) -> web.StreamResponse:
    """A user's tokens."""
    return ok({"tokens": await ctx.services.accounts.list_tokens(ctx.params["name"])})


async def tokens_add(ctx: Ctx) -> web.StreamResponse:
    """Another token for a user."""
    issued = await ctx.services.accounts.create_token(ctx.params["name"], ctx.body.get("label"),
                                                      ctx.body.get("ttl_days"))
    return ok(issued.to_json(), 201)


async def tokens_revoke(ctx: Ctx) -> web.StreamResponse:
    """Revoke a token."""
    return ok(await ctx.services.accounts.revoke_token(ctx.params["token_id"]))


async def officers_list(ctx: Ctx) -> web.StreamResponse:
    """List officers."""
    return ok({"officers": await scoped(ctx, "officer", await ctx.services.officers.list_officers())})


async def officers_add(ctx: Ctx) -> web.StreamResponse:
    """Add an officer."""
    b = ctx.body
    officer = await ctx.services.officers.create(b["id"], b["name"], b["unit"], b["cert_number"],
                                                 b["cert_expires_ms"])
    scope = await ctx.services.units.scope(ctx.principal)
    if scope.root is not None:  # added by someone working in a unit: the officer joins that unit
        await ctx.services.units.place("officer", b["id"], scope.root)
    return ok(officer, 201)


async def officers_get(ctx: Ctx) -> web.StreamResponse:
    """One officer."""
    return ok(await ctx.services.officers.get(ctx.params["officer_id"]))


async def officers_patch(ctx: Ctx) -> web.StreamResponse:
    """Update an officer."""
    if not ctx.body:
        raise BadRequest("nothing to change", code="missing_field")
    return ok(await ctx.services.officers.update(ctx.params["officer_id"], ctx.body))


async def enroll_tokens_add(ctx: Ctx) -> web.StreamResponse:
    """Create a one-time enrollment token."""
    created = await ctx.services.devices.create_enrollment_token(ctx.actor, ctx.body.get("ttl_s"),
                                                                 ctx.body.get("note"))
    return ok(created.to_json(), 201)


async def enroll_tokens_list(ctx: Ctx) -> web.StreamResponse:
    """List enrollment tokens."""
    return ok({"tokens": await ctx.services.devices.list_enrollment_tokens()})


async def devices_list(ctx: Ctx) -> web.StreamResponse:
    """List devices."""
    listed = await ctx.services.devices.list_devices(ctx.params.get("state"))
    return ok({"devices": await scoped(ctx, "device", listed)})


async def devices_get(ctx: Ctx) -> web.StreamResponse:
    """One device with its current assignment and its fleet view."""
    device = await ctx.services.devices.get(ctx.params["device_id"])
    device["assignment"] = await ctx.services.officers.current(ctx.params["device_id"])
    device["fleet"] = await ctx.services.fleet.device(ctx.params["device_id"])
    return ok(device)


async def devices_certificate(ctx: Ctx) -> web.StreamResponse:
    """The device certificate envelope."""
    return envelope_response(await ctx.services.devices.certificate(ctx.params["device_id"]))


async def devices_set_state(ctx: Ctx) -> web.StreamResponse:
    """Change a device's state (records the sequence cutoff)."""
    return ok(await ctx.services.devices.set_state(ctx.params["device_id"], ctx.body["state"], ctx.actor,
                                                   ctx.body.get("reason")))


async def devices_states(ctx: Ctx) -> web.StreamResponse:
    """State history."""
    return ok({"states": await ctx.services.devices.state_history(ctx.params["device_id"])})


async def devices_keys(ctx: Ctx) -> web.StreamResponse:
    """Key history."""
    return ok({"keys": await ctx.services.devices.keys(ctx.params["device_id"])})


async def assignments_add(ctx: Ctx) -> web.StreamResponse:
    """Assign the device to an officer (and tell the device with an assign_officer command)."""
    assignment = await ctx.services.officers.assign(ctx.params["device_id"], ctx.body["officer_id"],
                                                    ctx.body.get("from_ms"), ctx.actor)
    assignment["command_id"] = await ctx.services.commands.push_assignment(
        ctx.params["device_id"], assignment["officer_id"], assignment["from_ms"], ctx.actor)
    return ok(assignment, 201)


async def assignments_list(ctx: Ctx) -> web.StreamResponse:
    """Assignment history."""
    await ctx.services.devices.get(ctx.params["device_id"])
    return ok({"assignments": await ctx.services.officers.history(ctx.params["device_id"])})


async def unassign(ctx: Ctx) -> web.StreamResponse:
    """End the current assignment (and tell the device)."""
    await ctx.services.devices.get(ctx.params["device_id"])
    ended = await ctx.services.officers.unassign(ctx.params["device_id"], ctx.actor)
    command_id = None
    if ended is not None:
        command_id = await ctx.services.commands.push_assignment(ctx.params["device_id"], None, ended["until_ms"],
                                                                 ctx.actor)
    return ok({"ended": ended, "command_id": command_id})


async def commands_add(ctx: Ctx) -> web.StreamResponse:
    """Send a signed command to a device."""
    assert ctx.principal is not None
    dev, kind = ctx.params["device_id"], ctx.body["kind"]
    await ctx.services.devices.get(dev)
    await ctx.services.commands.authorize(ctx.principal, dev, kind)
    return ok(await ctx.services.commands.issue(dev, kind, ctx.body.get("params"), ctx.body.get("ttl_s"),
                                                ctx.actor), 201)


async def commands_list(ctx: Ctx) -> web.StreamResponse:
    """A device's commands with their acknowledgements."""
    assert ctx.principal is not None
    await ctx.services.commands.may_read(ctx.principal, ctx.params["device_id"])
    return ok({"commands": await ctx.services.commands.list_commands(ctx.params["device_id"],
                                                                     ctx.params.get("limit", 100))})


async def fleet(ctx: Ctx) -> web.StreamResponse:
    """Every device's health, pending uploads and continuity."""
    units = ctx.services.units
    return ok(await ctx.services.fleet.fleet(await units.scoped_ids("device", await units.scope(ctx.principal))))


async def entries_list(ctx: Ctx) -> web.StreamResponse:
    """A device's entries."""
    await ctx.services.devices.get(ctx.params["device_id"])
    return ok({"entries": await ctx.services.ingest.list_entries(
        ctx.params["device_id"], ctx.params.get("from_seq", 0), ctx.params.get("limit", 100))})


async def entries_get(ctx: Ctx) -> web.StreamResponse:
    """One entry with its receipt and verification steps."""
    return ok((await ctx.services.ingest.entry(ctx.params["device_id"], ctx.params["seq"])).to_json())


async def findings_list(ctx: Ctx) -> web.StreamResponse:
    """Findings."""
    p, units = ctx.params, ctx.services.units
    return ok({"findings": await ctx.services.findings.list_findings(
        device_id=p.get("device_id"), code=p.get("code"), open_only=p.get("open", False),
        after_id=p.get("after_id", 0), limit=p.get("limit", 100),
        device_ids=await units.scoped_ids("device", await units.scope(ctx.principal)))})


async def server_keys(ctx: Ctx) -> web.StreamResponse:
    """The server's public keys, current first."""
    return ok({"keys": [k.to_dict() for k in ctx.services.keyring.history]})


async def server_keys_rotate(ctx: Ctx) -> web.StreamResponse:
    """Rotate the server key."""
    new = await ctx.services.keyring.rotate()
    return ok({"current": new.to_dict(), "keys": [k.to_dict() for k in ctx.services.keyring.history]})


async def broker_files(ctx: Ctx) -> web.StreamResponse:
    """Mosquitto's password file and ACL from the device registry (hashes only: no password leaves)."""
    return ok(await ctx.services.broker_files.texts())


def _device(ctx: Ctx) -> str:
    assert ctx.principal is not None
    assert ctx.principal.kind == "device"
    return ctx.principal.name


async def device_self(ctx: Ctx) -> web.StreamResponse:
    """The calling device's record, assignment and the server keys."""
    dev = _device(ctx)
    device = await ctx.services.devices.get(dev)
    device["assignment"] = await ctx.services.officers.current(dev)
    device["server_keys"] = [k.to_dict() for k in ctx.services.keyring.history]
    return ok(device)


async def device_announce(ctx: Ctx) -> web.StreamResponse:
    """Announce an entry (chunk manifest or recording event)."""
    result = await ctx.services.ingest.announce(ctx.raw, source="http", device_id=_device(ctx))
    return ok(result.to_json(), 201 if result.created else 200)


async def device_entry(ctx: Ctx) -> web.StreamResponse:
    """One of the device's entries (with a fresh upload target while not verified)."""
    return ok((await ctx.services.ingest.device_entry(_device(ctx), ctx.params["seq"])).to_json())


async def device_verify(ctx: Ctx) -> web.StreamResponse:
    """Verify an uploaded chunk and get its receipt."""
    return ok((await ctx.services.ingest.verify(_device(ctx), ctx.params["seq"])).to_json())


async def device_rotate(ctx: Ctx) -> web.StreamResponse:
    """Rotate the device key."""
    return ok(await ctx.services.devices.rotate_key(_device(ctx), ctx.raw))


async def upload(ctx: Ctx) -> web.StreamResponse:
    """Bytes PUT to a local upload URL."""
    store = ctx.services.store
    key = ctx.params["key"]
    check_upload_key(key)
    q = ctx.request.query
    if not isinstance(store, LocalStore):
        raise BadRequest("this server stores footage in S3: upload to the presigned URL", code="wrong_store")
    try:
        sha256, size, expires, sig = q["sha256"], int(q["size"]), int(q["expires"]), q["sig"]
    except (KeyError, ValueError):
        raise Unauthorized("upload URL is missing its authorization", code="bad_upload_signature") from None
    if not store.check_upload(key, sha256, size, expires, sig):
        raise Unauthorized("upload URL signature does not verify", code="bad_upload_signature")
    if expires < ctx.services.clock.now_ms():
        raise Unauthorized("upload URL has expired: ask for a new target", code="upload_url_expired")
    result = await ctx.services.ingest.store_upload(key, sha256, size, ctx.raw)
    return ok(result, 201 if result["stored"] else 200)


async def chunk_deliver(ctx: Ctx) -> web.StreamResponse:
    """A chunk's bytes with its signed manifest: announced, stored and verified in one request."""
    if not ctx.services.store.direct_upload:
        raise BadRequest("this server stores footage in S3: announce the entry for a presigned upload URL",
                         code="wrong_store")
    header = ctx.request.headers.get(H_ENTRY)
    if header is None:
        raise Unauthorized(f"the {H_ENTRY} header with the chunk's signed manifest is missing",
                           code="missing_entry")
    try:
        envelope = b64d(header, field=H_ENTRY)
    except EncodingError:
        raise BadRequest(f"the {H_ENTRY} header is not unpadded base64url", code="bad_entry_header") from None
    result = await ctx.services.ingest.deliver(ctx.params["device_id"], ctx.params["seq"], envelope, ctx.raw)
    return ok(result, 201 if result["stored"] else 200)


# -- the table -----------------------------------------------------------------------------------

ENTRY_QUERY = {"from_seq": F("integer", "first sequence number", required=False, lo=0, hi=2**53 - 1),
               "limit": F("integer", "page size", required=False, lo=1, hi=1000)}
FINDING_QUERY = {
    "device_id": F("string", "only this device", required=False, pattern=r"[a-z2-7]{24}", max_len=24),
    "code": F("string", "only this finding code", required=False, pattern=r"[a-z_.]{1,64}", max_len=64),
    "open": F("boolean", "only open findings", required=False),
    "after_id": F("integer", "page after this id", required=False, lo=0, hi=2**53 - 1),
    "limit": F("integer", "page size", required=False, lo=1, hi=1000),
}
LIMIT_QUERY = {"limit": F("integer", "page size", required=False, lo=1, hi=1000)}
SIZE = F("integer", "tree size", lo=1, hi=2**53 - 1)
LOG_INDEX = F("integer", "leaf index", lo=0, hi=2**53 - 1)
REASON = F("string", "why the footage is read (recorded in the access log)", required=False, max_len=500)
CHECKPOINT_QUERY = {"size": F("integer", "a stored checkpoint's tree size (default: the latest)", required=False,
                              lo=1, hi=2**53 - 1)}
INCLUSION_QUERY = {"size": SIZE, "index": F("integer", "leaf index", required=False, lo=0, hi=2**53 - 1),
                   "hash": F("string", "leaf hash, hex", required=False, pattern=r"[0-9a-f]{64}", max_len=64)}
CONSISTENCY_QUERY = {"from": SIZE, "to": SIZE}
LEAVES_QUERY = {"start": F("integer", "first leaf index", required=False, lo=0, hi=2**53 - 1),
                "end": F("integer", "end (exclusive), at most start + 1000", required=False, lo=0, hi=2**53 - 1)}
ACCESS_QUERY = {
    "actor": F("string", "only this reader (user:NAME)", required=False, max_len=100),
    "device_id": F("string", "only this device", required=False, pattern=r"[a-z2-7]{24}", max_len=24),
    "case_id": F("string", "only this case", required=False, max_len=64),
    "kind": F("string", "only this kind", required=False, enum=("view", "live_view", "download", "export",
                                                                 "integrity")),
    "from_ms": F("integer", "from this time (ms)", required=False, lo=0, hi=TIME_HI),
    "to_ms": F("integer", "before this time (ms)", required=False, lo=0, hi=TIME_HI),
    "after_id": F("integer", "page after this id", required=False, lo=0, hi=2**53 - 1),
    "limit": F("integer", "page size", required=False, lo=1, hi=1000),
}
CHUNK_QUERY = {"reason": REASON}
RECORDING_QUERY = {"reason": REASON, "disposition": F("string", "inline (a view) or attachment (a download)",
                                                      required=False, enum=("inline", "attachment"))}
LIVE_VIEW_QUERY = {"device_id": F("string", "only this device", required=False, pattern=r"[a-z2-7]{24}",
                                     max_len=24),
                   "limit": F("integer", "page size", required=False, lo=1, hi=1000)}
STATE_QUERY = {"state": F("string", "only devices in this state", required=False,
                          enum=("active", "suspended", "lost", "revoked"))}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, PUBLIC, "liveness", "meta"),
    Route("GET", "/api/openapi.json", openapi_doc, PUBLIC, "this OpenAPI document", "meta"),
    Route("POST", "/api/v1/enroll", enroll, ENROLL, "enroll a device (signed EnrollmentRequest with a one-time "
          "token); answers a signed EnrollmentAnswer", "enrollment", body=ENVELOPE, ok_status=201),
    Route("GET", "/api/v1/me", me, ALL, "the authenticated principal", "accounts"),
    Route("GET", "/api/v1/users", users_list, ACCOUNT_READERS, "list users", "accounts"),
    Route("POST", "/api/v1/users", users_add, ADMINS, "create a user; the token is shown once", "accounts",
          body=USER_ADD, ok_status=201),
    Route("GET", "/api/v1/users/{name}", users_get, ACCOUNT_READERS, "one user", "accounts"),
    Route("POST", "/api/v1/users/{name}/disable", users_disable, ADMINS, "disable a user and all their tokens",
          "accounts"),
    Route("GET", "/api/v1/users/{name}/tokens", tokens_list, ACCOUNT_READERS, "a user's tokens (no secrets)",
          "accounts"),
    Route("POST", "/api/v1/users/{name}/tokens", tokens_add, ADMINS, "another token for a user (shown once)",
          "accounts", body=TOKEN_ADD, ok_status=201),
    Route("POST", "/api/v1/tokens/{token_id}/revoke", tokens_revoke, ADMINS, "revoke a token", "accounts"),
    Route("GET", "/api/v1/officers", officers_list, OFFICER_READERS, "list officers", "officers"),
    Route("POST", "/api/v1/officers", officers_add, DEVICE_ADMINS, "add an officer", "officers", body=OFFICER_ADD,
          ok_status=201),
    Route("GET", "/api/v1/officers/{officer_id}", officers_get, OFFICER_READERS, "one officer", "officers"),
    Route("PATCH", "/api/v1/officers/{officer_id}", officers_patch, DEVICE_ADMINS, "update an officer",
          "officers", body=OFFICER_PATCH),
    Route("POST", "/api/v1/enrollment-tokens", enroll_tokens_add, DEVICE_ADMINS,
          "create a one-time enrollment token (shown once)", "enrollment", body=ENROLL_TOKEN_ADD, ok_status=201),
    Route("GET", "/api/v1/enrollment-tokens", enroll_tokens_list, TOKEN_READERS, "list enrollment tokens",
          "enrollment"),
    Route("GET", "/api/v1/devices", devices_list, FLEET_READERS, "list devices", "devices", query=STATE_QUERY),
    Route("GET", "/api/v1/devices/{device_id}", devices_get, FLEET_READERS, "one device", "devices"),
    Route("GET", "/api/v1/devices/{device_id}/certificate", devices_certificate, FLEET_READERS,
          "the device certificate (signed envelope)", "devices"),
    Route("POST", "/api/v1/devices/{device_id}/state", devices_set_state, DEVICE_ADMINS,
          "change state (active, suspended, lost, revoked), recording the sequence cutoff", "devices",
          body=STATE_SET),
    Route("GET", "/api/v1/devices/{device_id}/states", devices_states, FLEET_READERS, "state history", "devices"),
    Route("GET", "/api/v1/devices/{device_id}/keys", devices_keys, FLEET_READERS, "key history", "devices"),
    Route("POST", "/api/v1/devices/{device_id}/assignments", assignments_add, DEVICE_ADMINS,
          "assign to an officer (refused when the officer's certificate has expired)", "devices", body=ASSIGN,
          ok_status=201),
    Route("GET", "/api/v1/devices/{device_id}/assignments", assignments_list, FLEET_READERS,
          "assignment history", "devices"),
    Route("POST", "/api/v1/devices/{device_id}/unassign", unassign, DEVICE_ADMINS, "end the current assignment",
          "devices"),
    Route("POST", "/api/v1/devices/{device_id}/commands", commands_add, COMMANDERS,
          "send a signed command (officer: start/stop/select_step on the device assigned to them; supervisor: "
          "live_view_*)", "devices", body=COMMAND_ADD, ok_status=201),
    Route("GET", "/api/v1/devices/{device_id}/commands", commands_list, COMMAND_READERS,
          "a device's commands, newest first, with their acknowledgements", "devices", query=LIMIT_QUERY),
    Route("GET", "/api/v1/fleet", fleet, FLEET_READERS, "fleet view: online, last seen, pending uploads, "
          "clock skew, versions, battery, storage, recording", "devices"),
    Route("GET", "/api/v1/devices/{device_id}/entries", entries_list, EVIDENCE_READERS, "a device's entries",
          "entries", query=ENTRY_QUERY),
    Route("GET", "/api/v1/devices/{device_id}/entries/{seq}", entries_get, EVIDENCE_READERS,
          "one entry with its receipt and verification steps", "entries"),
    Route("GET", "/api/v1/broker-files", broker_files, ADMINS,
          "Mosquitto password file (hashes) and ACL built from the device registry", "devices"),
    Route("GET", "/api/v1/findings", findings_list, EVIDENCE_READERS, "findings", "findings", query=FINDING_QUERY),
    Route("GET", "/api/v1/server-keys", server_keys, ALL, "server public keys, current first", "keys"),
    Route("POST", "/api/v1/server-keys/rotate", server_keys_rotate, ADMINS,
          "make a new server key; earlier keys stay valid for verification", "keys"),
    Route("GET", "/api/v1/cases", cz.cases_list, CASE_READERS, "list cases", "cases", query=cz.CASE_QUERY),
    Route("POST", "/api/v1/cases", cz.cases_add, CASE_WRITERS, "open a case", "cases", body=cz.CASE_ADD,
          ok_status=201),
    Route("GET", "/api/v1/cases/{case_id}", cz.cases_get, CASE_READERS, "a case with its steps and links", "cases"),
    Route("PATCH", "/api/v1/cases/{case_id}", cz.cases_patch, CASE_WRITERS, "change a case (its handler or admin)",
          "cases", body=cz.CASE_PATCH),
    Route("POST", "/api/v1/cases/{case_id}/steps", cz.steps_add, CASE_WRITERS,
          "plan a step; the requirement list in force decides its recording requirement", "cases",
          body=cz.STEP_ADD, ok_status=201),
    Route("GET", "/api/v1/cases/{case_id}/steps/{step_id}", cz.steps_get, CASE_READERS,
          "a step with its links (removed ones too) and sign-offs", "cases"),
    Route("PATCH", "/api/v1/cases/{case_id}/steps/{step_id}", cz.steps_patch, CASE_WRITERS,
          "change a step; completing a major case's decision needs a legal sign-off", "cases", body=cz.STEP_PATCH),
    Route("GET", "/api/v1/cases/{case_id}/steps/{step_id}/suggestions", cz.steps_suggestions, AUDIT_READERS,
          "recordings of the step's officers overlapping its window, not linked to it", "links"),
    Route("POST", "/api/v1/cases/{case_id}/steps/{step_id}/links", cz.links_add, CASE_WRITERS,
          "link a recording, or a time range of it, to the step", "links", body=cz.LINK_ADD, ok_status=201),
    Route("POST", "/api/v1/cases/{case_id}/steps/{step_id}/links/{link_id}/unlink", cz.links_unlink, CASE_WRITERS,
          "end a link (kept on record with who, when and why)", "links", body=cz.UNLINK),
    Route("GET", "/api/v1/cases/{case_id}/events", cz.case_events, AUDIT_READERS,
          "the append-only link events of a case", "links"),
    Route("POST", "/api/v1/cases/{case_id}/steps/{step_id}/signoff", cz.signoff, LEGAL_REVIEWERS,
          "legal review sign-off of a major case's decision (refused while footage is incomplete, unless "
          "overridden with a reason)", "review", body=cz.SIGNOFF, ok_status=201),
    Route("GET", "/api/v1/audit", cz.audit, AUDIT_READERS,
          "audit of missing recordings (format json, text or csv; lang zh or en)", "audit", query=cz.AUDIT_QUERY),
    Route("GET", "/api/v1/policy", cz.policy_current, OFFICER_READERS,
          "the recording-requirement list in force (音像记录事项清单)", "policy"),
    Route("POST", "/api/v1/policy", cz.policy_load, ADMINS, "load a new version of the recording-requirement list",
          "policy", body=cz.POLICY_LOAD, ok_status=201),
    Route("GET", "/api/v1/policy/versions", cz.policy_versions, OFFICER_READERS,
          "every version of the requirement list loaded", "policy"),
    Route("GET", "/api/v1/policy/versions/{version}", cz.policy_version, OFFICER_READERS,
          "one version of the requirement list, as loaded", "policy"),
    Route("GET", "/api/v1/units", gov.units_list, OFFICER_READERS, "the units in the caller's scope", "units"),
    Route("POST", "/api/v1/units", gov.units_add, ADMINS, "add a unit (bureau > section > team)", "units",
          body=gov.UNIT_ADD, ok_status=201),
    Route("POST", "/api/v1/placements", gov.placements_add, ADMINS,
          "put an officer, device, user or case in a unit; grant a user a wider scope", "units", body=gov.PLACEMENT),
    Route("POST", "/api/v1/holds", gov.holds_add, HOLDERS, "put a legal hold on a case or a recording (with a "
          "reason); held footage never expires", "retention", body=gov.HOLD_ADD, ok_status=201),
    Route("POST", "/api/v1/holds/{hold_id}/lift", gov.holds_lift, HOLDERS, "lift a legal hold (kept on record)",
          "retention", body=gov.HOLD_LIFT),
    Route("GET", "/api/v1/holds", gov.holds_list, AUDIT_READERS, "legal holds, newest first", "retention",
          query=gov.HOLD_QUERY),
    Route("GET", "/api/v1/retention", gov.retention_plan, AUDIT_READERS,
          "each recording's retention class and end, and whether it expires now", "retention"),
    Route("POST", "/api/v1/retention/run", gov.retention_run, ADMINS,
          "run the expiry job now (it also runs every retention.expiry_interval_s)", "retention"),
    Route("GET", "/api/v1/stats", gov.stats, AUDIT_READERS,
          "monthly statistics per unit, officer or device (recordings, hours, steps requiring recording and the "
          "share covered, findings by code, upload delay percentiles, uptime); JSON (the rows, and each month's "
          "totals over them) or CSV (the rows)", "stats",
          query=gov.STATS_QUERY),
    Route("GET", "/api/v1/stats/public/{year}", gov.stats_public, ADMINS,
          "the yearly public summary: aggregates per unit and agency-wide, no personal data", "stats"),
    Route("GET", "/api/v1/scope", gov.scope_me, ALL, "the units the caller acts in (null: agency-wide)", "units"),
    Route("GET", "/api/v1/device/self", device_self, DEVICES, "the calling device, its assignment, server keys",
          "device"),
    Route("POST", "/api/v1/device/entries", device_announce, DEVICES,
          "announce a signed entry; a manifest gets its upload target, an event its receipt", "device",
          body=ENVELOPE, ok_status=201),
    Route("GET", "/api/v1/device/entries/{seq}", device_entry, DEVICES,
          "state of one of the device's entries (fresh upload target while unverified)", "device"),
    Route("POST", "/api/v1/device/entries/{seq}/verify", device_verify, DEVICES,
          "verify an uploaded chunk; answers its signed receipt", "device"),
    Route("POST", "/api/v1/device/key-rotation", device_rotate, DEVICES,
          "replace the device key (KeyRotation signed by the current key)", "device", body=ENVELOPE),
    Route("POST", "/api/v1/devices/{device_id}/live", live_api.request, LIVE_VIEWERS,
          "ask for a device's live view: sends it a signed live_view_start (or joins the running session)",
          "live", ok_status=201),
    Route("GET", "/api/v1/devices/{device_id}/live", live_api.sessions, LIVE_VIEWERS,
          "the device's live sessions on this server process", "live"),
    Route("POST", "/api/v1/devices/{device_id}/live/{session_id}/viewers", live_api.viewer_add, LIVE_VIEWERS,
          "join a live session with a WebRTC offer; answers after the view is in the access log", "live",
          body=VIEWER_OFFER, ok_status=201),
    Route("POST", "/api/v1/devices/{device_id}/live/{session_id}/viewers/{viewer_id}/leave", live_api.viewer_leave,
          LIVE_VIEWERS, "leave a live session (ends the view's record)", "live"),
    Route("POST", "/api/v1/devices/{device_id}/live/{session_id}/stop", live_api.stop, LIVE_VIEWERS,
          "end a live session for every viewer (sends live_view_stop)", "live"),
    Route("GET", "/api/v1/live-views", live_api.views, frozenset({R.ADMIN, R.SUPERVISOR, R.AUDITOR}),
          "live views with their start and end, newest first", "live", query=LIVE_VIEW_QUERY),
    Route("POST", "/api/v1/device/live/{session_id}/offer", live_api.device_offer, DEVICES,
          "the device's WebRTC offer for a live session it was commanded to start; answers the server's SDP",
          "device", body=SDP_OFFER),
    Route("PUT", "/api/v1/upload/{key:.+}", upload, UPLOAD,
          "local store: upload chunk bytes to the URL an upload target named", "device", body="bytes",
          ok_status=201, response="application/json"),
    Route("PUT", "/api/v1/chunks/{device_id}/{seq}", chunk_deliver, ENTRY,
          "local store: a chunk's bytes with its signed manifest (Custody-Entry header), announced, stored and "
          "verified in one request; answers the receipt", "device", body="bytes", ok_status=201,
          response="application/json"),
    # -- transparency log, witnesses, access log, footage, exports (issue 7)
    Route("GET", "/api/v1/log/checkpoint", evidence.log_checkpoint, PUBLIC,
          "the latest checkpoint (C2SP signed note) with its witnesses' cosignatures", "log",
          query=CHECKPOINT_QUERY, response="text/plain"),
    Route("GET", "/api/v1/log/key", evidence.log_key, PUBLIC, "the log's origin and verifier key", "log"),
    Route("GET", "/api/v1/log/proof/inclusion", evidence.log_inclusion, PUBLIC,
          "inclusion proof of a leaf (by index or leaf hash) in the tree of a size", "log", query=INCLUSION_QUERY),
    Route("GET", "/api/v1/log/proof/consistency", evidence.log_consistency, PUBLIC,
          "consistency proof between two tree sizes", "log", query=CONSISTENCY_QUERY),
    Route("GET", "/api/v1/log/leaves", evidence.log_leaves, PUBLIC, "leaves (hashes and ids, no personal data)",
          "log", query=LEAVES_QUERY),
    Route("POST", "/api/v1/log/cosignatures", evidence.log_cosign, COSIGNATURE,
          "a witness returns a checkpoint it cosigned (cosignature/v1 by a registered witness key)", "log",
          body=NOTE),
    Route("POST", "/api/v1/log/forks", evidence.log_fork, PUBLIC,
          "report two checkpoints signed by this log that are inconsistent (records log.fork when proven)", "log",
          body=FORK_REPORT),
    Route("GET", "/api/v1/log/witnesses", evidence.witnesses_list, EVIDENCE_READERS, "registered witnesses", "log"),
    Route("POST", "/api/v1/log/witnesses", evidence.witnesses_add, ADMINS, "register a witness by its verifier key",
          "log", body=WITNESS_ADD, ok_status=201),
    Route("GET", "/api/v1/access-log", evidence.access_log, ACCESS_LOG_READERS,
          "who read which footage, when and why (by user, device, case, time)", "access", query=ACCESS_QUERY),
    Route("GET", "/api/v1/devices/{device_id}/entries/{seq}/footage", evidence.chunk_footage, FOOTAGE_READERS,
          "download one chunk's original bytes (needs a reason; logged before the first byte)", "footage",
          query=CHUNK_QUERY, response="video/mp4", footage=True),
    Route("GET", "/api/v1/devices/{device_id}/recordings/{recording_id}/mp4", evidence.recording_footage,
          FOOTAGE_READERS, "a recording as one MP4, remuxed (needs a reason; logged before the first byte)",
          "footage", query=RECORDING_QUERY, response="video/mp4", footage=True),
    Route("POST", "/api/v1/exports", evidence.export_package, FOOTAGE_READERS,
          "build a case export package for offline verification (logged as an export access)", "footage",
          body=EXPORT, response="application/zip", footage=True),
)


def add_routes(app: web.Application, services: Services) -> None:
    """Register every route on ``app``."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, wrap(route, services))
