"""``custody server``, ``custody validate-config`` and ``custody admin ...``.

Nothing heavy is imported at registration: a Raspberry Pi with only the agent extra can still
build the parser. Admin commands go through the HTTP API (server/client.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Sub) -> None:
    """Add the server's subcommands."""
    p = sub.add_parser("server", help="run the central service (HTTP API)",
                       description="Run the Custody server. With no options it runs on embedded defaults: "
                                   "SQLite and a local footage store under ./custody-data.")
    p.add_argument("--config", type=Path, help="YAML or TOML config file")
    p.add_argument("--data-dir", type=Path, help="data directory (overrides data_dir)")
    p.add_argument("--host", help="listen address (overrides http.host)")
    p.add_argument("--port", type=int, help="listen port (overrides http.port; 0 picks a free one)")
    p.set_defaults(handler=run_server)

    v = sub.add_parser("validate-config", help="check a server config file; problems are listed with their line")
    v.add_argument("file", type=Path)
    v.add_argument("--show", action="store_true", help="print the effective configuration when it is valid")
    v.set_defaults(handler=validate_config)

    a = sub.add_parser("admin", help="administer a running server through its API",
                       description="Every command goes through the HTTP API. Say which server with --server URL "
                                   "--token T, CUSTODY_SERVER/CUSTODY_TOKEN, or --data-dir DIR (the local server's "
                                   "URL and admin token).")
    api_options(a)
    asub = a.add_subparsers(dest="admin_command", metavar="COMMAND")
    asub.required = True

    def cmd(name: str, help_: str, fn: Any, parent: Sub = asub) -> argparse.ArgumentParser:
        return api_command(parent, name, help_, fn)

    cmd("whoami", "who the token belongs to", lambda c, a: c.call("GET", "/api/v1/me"))

    user = asub.add_parser("user", help="people's accounts").add_subparsers(dest="sub", metavar="COMMAND")
    user.required = True
    c = cmd("add", "create a user and print its token (shown once)", _user_add, user)
    c.add_argument("name")
    c.add_argument("--role", required=True, choices=["admin", "device_admin", "officer", "case_handler", "supervisor",
                                                     "legal_reviewer", "auditor"])
    c.add_argument("--ttl-days", type=int, help="token validity in days (0: no expiry)")
    cmd("list", "list users", lambda cl, a: cl.call("GET", "/api/v1/users"), user)
    c = cmd("disable", "disable a user (all tokens stop working)", lambda cl, a: cl.call(
        "POST", f"/api/v1/users/{a.name}/disable"), user)
    c.add_argument("name")
    c = cmd("token", "another token for a user (shown once)", lambda cl, a: cl.call(
        "POST", f"/api/v1/users/{a.name}/tokens", {"label": a.label, **({"ttl_days": a.ttl_days}
                                                                         if a.ttl_days is not None else {})}), user)
    c.add_argument("name")
    c.add_argument("--label")
    c.add_argument("--ttl-days", type=int)

    token = asub.add_parser("token", help="API tokens").add_subparsers(dest="sub", metavar="COMMAND")
    token.required = True
    c = cmd("revoke", "revoke a token by id", lambda cl, a: cl.call("POST", f"/api/v1/tokens/{a.id}/revoke"), token)
    c.add_argument("id")

    et = asub.add_parser("enroll-token", help="one-time device enrollment tokens").add_subparsers(
        dest="sub", metavar="COMMAND")
    et.required = True
    c = cmd("create", "create a one-time enrollment token", _enroll_token, et)
    c.add_argument("--ttl", type=int, help="validity in seconds")
    c.add_argument("--note")
    cmd("list", "list enrollment tokens", lambda cl, a: cl.call("GET", "/api/v1/enrollment-tokens"), et)

    off = asub.add_parser("officer", help="officers (行政执法人员清单)").add_subparsers(dest="sub", metavar="COMMAND")
    off.required = True
    c = cmd("add", "add an officer", _officer_add, off)
    c.add_argument("id")
    c.add_argument("--name", required=True)
    c.add_argument("--unit", required=True)
    c.add_argument("--cert", required=True, help="enforcement certificate number")
    c.add_argument("--cert-expires", required=True, help="certificate expiry date, YYYY-MM-DD (UTC)")
    cmd("list", "list officers", lambda cl, a: cl.call("GET", "/api/v1/officers"), off)

    dev = asub.add_parser("device", help="devices").add_subparsers(dest="sub", metavar="COMMAND")
    dev.required = True
    c = cmd("list", "list devices", lambda cl, a: cl.call("GET", "/api/v1/devices" + (
        f"?state={a.state}" if a.state else "")), dev)
    c.add_argument("--state", choices=["active", "suspended", "lost", "revoked"])
    c = cmd("show", "one device", lambda cl, a: cl.call("GET", f"/api/v1/devices/{a.id}"), dev)
    c.add_argument("id")
    c = cmd("state", "change a device's state (records the sequence cutoff)", lambda cl, a: cl.call(
        "POST", f"/api/v1/devices/{a.id}/state", {"state": a.state, "reason": a.reason}), dev)
    c.add_argument("id")
    c.add_argument("state", choices=["active", "suspended", "lost", "revoked"])
    c.add_argument("--reason")
    c = cmd("assign", "assign a device to an officer", lambda cl, a: cl.call(
        "POST", f"/api/v1/devices/{a.id}/assignments", {"officer_id": a.officer}), dev)
    c.add_argument("id")
    c.add_argument("officer")
    c = cmd("unassign", "end a device's assignment", lambda cl, a: cl.call(
        "POST", f"/api/v1/devices/{a.id}/unassign"), dev)
    c.add_argument("id")

    c = cmd("findings", "list findings", _findings)
    c.add_argument("--device")
    c.add_argument("--code")
    c.add_argument("--open", action="store_true")

    c = cmd("broker-acl", "write Mosquitto's password and ACL files from the device registry", _broker_acl)
    c.add_argument("--out", type=Path, required=True, help="directory of the broker's passwd and acl files")
    c.add_argument("--group", help="the broker's group: files mode 0640 with that group (default 0600)")

    tls = asub.add_parser("tls", help="a site's TLS certificates (local files; the CA key stays offline)",
                          description="Create a site CA and server and device certificates (ECDSA P-256). "
                                      "Local files, not the API: keep SITE/ca/ca.key offline.").add_subparsers(
        dest="sub", metavar="COMMAND")
    tls.required = True
    c = tls.add_parser("init", help="create the site CA in SITE/ca (refuses to replace one)")
    c.add_argument("--site", type=Path, required=True, help="the site's TLS directory")
    c.add_argument("--name", required=True, help="site name (the CA's organization)")
    c.set_defaults(handler=_tls_init)
    c = tls.add_parser("server", help="a server certificate (broker or API) in SITE/NAME/")
    c.add_argument("--site", type=Path, required=True)
    c.add_argument("--name", required=True, help="the first DNS name; the files go to SITE/NAME/")
    c.add_argument("--dns", action="append", default=[], help="another DNS name clients dial (repeatable)")
    c.add_argument("--ip", action="append", default=[], help="an IP address clients dial (repeatable)")
    c.set_defaults(handler=_tls_server)
    c = tls.add_parser("device", help="a device's client certificate in SITE/devices/DEVICE_ID/")
    c.add_argument("--site", type=Path, required=True)
    c.add_argument("--device", required=True, help="device id (the certificate's CN)")
    c.set_defaults(handler=_tls_device)
    c = tls.add_parser("site", help="everything deploy/compose.yml mounts (CA; api, broker, s3)")
    c.add_argument("--site", type=Path, required=True)
    c.add_argument("--public-host", required=True)
    c.add_argument("--s3-host", required=True)
    c.add_argument("--ip", action="append", default=[])
    c.add_argument("--renew", action="store_true", help="issue the service certificates again (same CA)")
    c.set_defaults(handler=_tls_site)

    c = asub.add_parser("backup", help="back up database, keys and secrets into a new directory (local files)",
                        description="Copy the database (sqlite3 backup API, or pg_dump), the private server keys "
                                    "and secrets into DIR. Acts on the data directory, not through the API: the "
                                    "private keys never leave the host through the API. Safe while the server runs.")
    c.add_argument("dir", type=Path, help="new or empty backup directory")
    c.add_argument("--config", type=Path, help="the server's config file (default: embedded defaults)")
    c.add_argument("--json", action="store_true", dest="as_json", default=argparse.SUPPRESS, help="print JSON")
    c.set_defaults(handler=_local(_backup))
    c = asub.add_parser("restore", help="restore a backup into a fresh data directory (server stopped)",
                        description="Restore database, keys and secrets from DIR into the configured data directory "
                                    "(and database). At its next start the server refuses to run if its log is "
                                    "behind or inconsistent with the last checkpoint it published.")
    c.add_argument("dir", type=Path, help="backup directory")
    c.add_argument("--config", type=Path, help="the server's config file (default: embedded defaults)")
    c.add_argument("--published-checkpoint", type=Path,
                   help="the last checkpoint the old server published (its data dir's published-checkpoint file, a "
                        "witness's copy, or the retained MQTT checkpoint), when restoring onto a new data dir")
    c.add_argument("--json", action="store_true", dest="as_json", default=argparse.SUPPRESS, help="print JSON")
    c.set_defaults(handler=_local(_restore))

    c = asub.add_parser("replicate", help="copy verified footage to a second store and check each copy",
                        description="Copy every verified chunk to a second store (a directory or s3://BUCKET), "
                                    "read each copy back and check its sha256 and size against the entry, and record "
                                    "it; runs until interrupted (--once: one pass). A server-side duty run as its own "
                                    "process on the server's configuration: it reads the database and the footage "
                                    "store directly, like the server's integrity duties; see docs/OPERATOR.md.")
    c.add_argument("--to", help="second store (default: replication.to of the config)")
    c.add_argument("--config", type=Path, help="the server's config file (default: embedded defaults)")
    c.add_argument("--once", action="store_true", help="copy what is pending now, then exit")
    c.add_argument("--json", action="store_true", dest="as_json", default=argparse.SUPPRESS, help="print JSON")
    c.set_defaults(handler=_local(_replicate))

    sk = asub.add_parser("server-key", help="server signing keys").add_subparsers(dest="sub", metavar="COMMAND")
    sk.required = True
    cmd("list", "current and earlier server keys", lambda cl, a: cl.call("GET", "/api/v1/server-keys"), sk)
    cmd("rotate", "make a new server key (earlier ones stay valid for verification)",
        lambda cl, a: cl.call("POST", "/api/v1/server-keys/rotate"), sk)


def api_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of a command group acting through the API: which server, and ``--json``."""
    from server.client import add_server_options

    add_server_options(parser)
    parser.add_argument("--json", action="store_true", dest="as_json", help="print JSON")


def api_command(parent: Sub, name: str, help_: str, fn: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name``: it calls ``fn(client, args)`` through the API and prints what that returns.

    ``--json`` is taken after the subcommand's name too; it does not reset one given before it.
    """
    c = parent.add_parser(name, help=help_)
    c.add_argument("--json", action="store_true", dest="as_json", default=argparse.SUPPRESS, help="print JSON")
    c.set_defaults(handler=_admin(fn))
    return c


# -- handlers -------------------------------------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    """``custody server``."""
    from server.config import load_config
    from server.runner import serve

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = str(args.data_dir)
    if args.host is not None:
        overrides["http.host"] = args.host
    if args.port is not None:
        overrides["http.port"] = args.port
    config = load_config(args.config, overrides=overrides)
    run_loop(serve(config), config.http.event_loop)
    return 0


def run_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run ``main`` on the configured event loop (``http.event_loop``)."""
    import asyncio

    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise SystemExit("custody: http.event_loop is uvloop, but uvloop is not installed "
                                 "(pip install uvloop, or set http.event_loop: asyncio)") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def validate_config(args: argparse.Namespace) -> int:
    """``custody validate-config FILE``: every problem, one per line, with FILE:LINE."""
    from server.config import check_config

    config, problems = check_config(args.file)
    for problem in problems:
        print(problem, file=sys.stderr)
    if config is None:
        print(f"{args.file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 1
    print(f"{args.file}: valid")
    if args.show:
        print(config)
    return 0


def _admin(fn: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from server.client import client_from_args

        result = fn(client_from_args(args), args)
        _print(result, getattr(args, "as_json", False))
        return 0

    return handler


def _broker_acl(client: Any, args: argparse.Namespace) -> Any:
    from server.broker_files import write_broker_files

    files = client.call("GET", "/api/v1/broker-files")
    group: int | str | None = int(args.group) if args.group and args.group.isdigit() else args.group
    paths = write_broker_files(args.out, password_file=files["password_file"], acl=files["acl"], group=group)
    for warning in files["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    result = {"password_file": str(paths.password_file), "acl_file": str(paths.acl_file),
              "devices": files["devices"], "server_user": files["server_user"]}
    if args.as_json:
        return result
    print(f"wrote {paths.password_file} ({files['devices']} devices) and {paths.acl_file}; reload the broker "
          "(SIGHUP)", file=sys.stderr)
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _site_ca(site: Path) -> Any:
    from custody.tls import CertifiedKey, TlsError

    try:
        return CertifiedKey((site / "ca" / "ca.crt").read_bytes(), (site / "ca" / "ca.key").read_bytes())
    except FileNotFoundError:
        raise TlsError(f"no CA in {site / 'ca'}: run 'custody admin tls init --site {site}' first") from None


def _tls_init(args: argparse.Namespace) -> int:
    from custody.tls import TlsError, create_site_ca, write_certified_key

    if (args.site / "ca" / "ca.key").exists():
        raise TlsError(f"{args.site / 'ca'} already holds a CA: every device trusts it, so it is never replaced")
    files = write_certified_key(args.site / "ca", "ca", create_site_ca(args.name, now=_now()))
    print(f"{files.cert}\n{files.key}  (keep it offline)")
    return 0


def _tls_server(args: argparse.Namespace) -> int:
    from custody.tls import issue_server_certificate, write_certificate, write_certified_key

    ca = _site_ca(args.site)
    certified = issue_server_certificate(ca, dns_names=[args.name, *args.dns], ip_addresses=args.ip, now=_now())
    directory = args.site / args.name
    files = write_certified_key(directory, "server", certified)
    print(f"{write_certificate(directory, 'ca', ca.cert_pem)}\n{files.cert}\n{files.key}")
    return 0


def _tls_device(args: argparse.Namespace) -> int:
    from custody.tls import issue_device_certificate, write_certificate, write_certified_key

    ca = _site_ca(args.site)
    directory = args.site / "devices" / args.device
    files = write_certified_key(directory, "device", issue_device_certificate(ca, args.device, now=_now()))
    print(f"{write_certificate(directory, 'ca', ca.cert_pem)}\n{files.cert}\n{files.key}")
    return 0


def _tls_site(args: argparse.Namespace) -> int:
    from custody.tls import SiteNames, write_site_tls

    names = SiteNames(args.public_host, args.s3_host, tuple(args.ip))
    for path in write_site_tls(args.site, names, now=_now(), renew=args.renew, server_gid=None):
        print(path)
    return 0


def _local(fn: Any) -> Any:
    """A command acting on the data directory's files (backup, restore), not through the API."""

    def handler(args: argparse.Namespace) -> int:
        from server.config import load_config

        overrides = {"data_dir": args.data_dir} if args.data_dir is not None else {}
        config = load_config(args.config, overrides=overrides)
        _print(fn(config, args), getattr(args, "as_json", False))
        return 0

    return handler


def _backup(config: Any, args: argparse.Namespace) -> Any:
    from server.backup import backup

    report = backup(config, args.dir)
    if args.as_json:
        return report.to_json()
    print(f"backed up {report.database} database, {len(report.files)} files, log size {report.log_size} "
          f"into {report.path}", file=sys.stderr)
    return None


def _restore(config: Any, args: argparse.Namespace) -> Any:
    from server.backup import restore

    report = restore(config, args.dir, args.published_checkpoint)
    if args.as_json:
        return report.to_json()
    print(f"restored {report.database} database (log size {report.log_size}) into {report.path}; start the server: "
          "it checks the log against the last published checkpoint", file=sys.stderr)
    return None


def _replicate(config: Any, args: argparse.Namespace) -> Any:
    import asyncio

    from server.services.replication import run_replicator

    to = args.to or config.replication.to
    if not to:
        from server.errors import ConfigError

        raise ConfigError("say where the second copy goes: --to DIR|s3://BUCKET, or replication.to in the config")
    total = asyncio.run(run_replicator(config, to, once=args.once))
    return total.to_json() if args.as_json else None


def _print(result: Any, as_json: bool) -> None:
    if result is None:
        return
    if as_json or not isinstance(result, dict):
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    # A list answer ({"users": [...]}) prints one line per item; anything else as key: value lines.
    if len(result) == 1 and isinstance(next(iter(result.values())), list):
        for item in next(iter(result.values())):
            print("  ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else item)
        return
    for key, value in result.items():
        print(f"{key}: {json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value}")


def _user_add(client: Any, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.ttl_days is not None:
        body["ttl_days"] = args.ttl_days
    result = client.call("POST", "/api/v1/users", body)
    if args.as_json:
        return result
    token = result["token"]
    print(f"created user {args.name} ({args.role}); token id {token['id']}", file=sys.stderr)
    print("the token is shown only this once:", file=sys.stderr)
    print(token["token"])
    return None


def _enroll_token(client: Any, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {}
    if args.ttl is not None:
        body["ttl_s"] = args.ttl
    if args.note is not None:
        body["note"] = args.note
    result = client.call("POST", "/api/v1/enrollment-tokens", body)
    if args.as_json:
        return result
    expires = dt.datetime.fromtimestamp(result["expires_ms"] / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    print(f"one-time enrollment token {result['id']}, valid until {expires}, pins server key "
          f"{result['server_fingerprint'][:16]}…", file=sys.stderr)
    print(result["token"])
    return None


def _officer_add(client: Any, args: argparse.Namespace) -> Any:
    from server.errors import BadRequest

    try:
        day = dt.date.fromisoformat(args.cert_expires)
    except ValueError:
        raise BadRequest(f"--cert-expires {args.cert_expires!r} is not YYYY-MM-DD") from None
    # Valid through the whole expiry day, UTC.
    expires = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000) + 86_400_000
    return client.call("POST", "/api/v1/officers", {"id": args.id, "name": args.name, "unit": args.unit,
                                                    "cert_number": args.cert, "cert_expires_ms": expires})


def _findings(client: Any, args: argparse.Namespace) -> Any:
    from urllib.parse import urlencode

    q = {k: v for k, v in {"device_id": args.device, "code": args.code,
                           "open": "true" if args.open else None}.items() if v}
    return client.call("GET", "/api/v1/findings" + (f"?{urlencode(q)}" if q else ""))
