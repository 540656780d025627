"""OpenAPI matches the routes, errors are problem documents, TLS works, the CLI goes through the API."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from custody.clock import FakeClock
from server.app import RunningServer, start_server
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration


async def test_openapi_documents_exactly_the_routes(server: RunningServer, admin: Api) -> None:
    doc = (await admin.call("GET", "/api/openapi.json", token=None)).json
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for route in server.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if str(path or info.get("prefix", "")).startswith("/ui"):
            continue  # the dashboard's pages (server/web/), not API: docs/DASHBOARD.md lists them
        served.add((route.method, path.replace("{key:.+}", "{key}") if path else path))
    assert documented == served
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path
            assert "application/problem+json" in op["responses"]["401"]["content"]
    assert doc["components"]["schemas"]["UserAdd"]["additionalProperties"] is False


async def test_every_error_is_a_problem_document(server: RunningServer, admin: Api) -> None:
    for method, path in (("GET", "/nowhere"), ("DELETE", "/api/v1/users"), ("GET", "/api/v1/users/NOT-VALID")):
        reply = await admin.call(method, path)
        assert reply.status in (400, 404, 405)
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert {"type", "title", "status", "code", "detail"} <= set(reply.json)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_with_a_self_signed_certificate(tmp_path: Path, clock: FakeClock) -> None:
    cert, key = _self_signed(tmp_path)
    tls: dict[str, object] = {"http.tls_cert": str(cert), "http.tls_key": str(key)}
    srv = await start_server(server_config(tmp_path / "data", **tls), clock)  # type: ignore[arg-type]
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as s:
            async with s.get(srv.url + "/healthz", ssl=trusting) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(srv.url + "/healthz")  # the system store does not know this certificate
            api = Api(srv.url, s, srv.services.datadir.admin_token.read_text().strip())
            token = (await s.post(srv.url + "/api/v1/enrollment-tokens", json={}, ssl=trusting,
                                  headers={"Authorization": f"Bearer {api.token}"}))
            assert (await token.json())["api_url"].startswith("https://")
    finally:
        await srv.stop()


def _custody(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "custody", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


async def test_cli_server_and_admin_through_the_api(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "custody", "server", "--data-dir", str(data), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # A free port for the embedded broker too: 1883 may be held by anything else on the machine.
        env={**os.environ, "CUSTODY_MQTT_EMBEDDED_PORT": "0"})
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        deadline = time.monotonic() + 30
        while len(banner) < 3 and time.monotonic() < deadline:
            banner.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
        assert banner[0].startswith("custody server listening on http://127.0.0.1:")
        assert "fingerprint" in banner[1]
        url = banner[0].split()[-1]
        assert (data / "admin-token").stat().st_mode & 0o777 == 0o600
        assert json.loads((data / "server.json").read_text())["url"] == url
        assert next(iter((data / "keys").iterdir())).stat().st_mode & 0o777 == 0o600

        added = await asyncio.to_thread(_custody, "admin", "--data-dir", str(data), "user", "add", "alice",
                                        "--role", "device_admin")
        assert added.returncode == 0, added.stderr
        alice = added.stdout.strip()
        assert alice.startswith("cst_")
        assert "shown only this once" in added.stderr
        who = await asyncio.to_thread(_custody, "admin", "--json", "whoami",
                                      env={"CUSTODY_SERVER": url, "CUSTODY_TOKEN": alice})
        assert json.loads(who.stdout)["name"] == "alice", who.stderr
        token = await asyncio.to_thread(_custody, "admin", "--server", url, "--token", alice, "enroll-token",
                                        "create", "--json")
        assert json.loads(token.stdout)["token"].startswith("cet1."), token.stderr
        denied = await asyncio.to_thread(_custody, "admin", "--server", url, "--token", alice, "user", "list")
        assert denied.returncode == 1
        assert "forbidden_role" in denied.stderr
        assert "Traceback" not in denied.stderr
        bad = await asyncio.to_thread(_custody, "admin", "--server", url, "--token", "cst_nope", "whoami")
        assert bad.returncode == 1
        assert "bad_token" in bad.stderr
    finally:
        proc.terminate()
        await proc.wait()
    assert not (data / "server.json").exists()  # removed at clean shutdown


def test_validate_config_reports_lines(tmp_path: Path) -> None:
    bad = tmp_path / "custody.yaml"
    bad.write_text("http:\n  port: 70000\nstorage:\n  backend: tape\n  s3:\n    bukket: x\n")
    result = _custody("validate-config", str(bad))
    assert result.returncode == 1
    assert f"{bad}:2: http.port: 70000 is above the maximum 65535" in result.stderr
    assert f"{bad}:4: storage.backend" in result.stderr
    assert f"{bad}:6: storage.s3.bukket: unknown key (did you mean 'bucket'?)" in result.stderr
    good = tmp_path / "ok.toml"
    good.write_text('[http]\nport = 9000\n[storage]\nbackend = "local"\n')
    assert _custody("validate-config", str(good)).returncode == 0
