"""The site TLS helper: what the certificates say, and that Python's ssl accepts exactly the right ones.

Handshakes here run in memory (ssl.MemoryBIO), no sockets: the same OpenSSL checks a real client
makes, at unit-test speed. A real Mosquitto with these certificates is in
tests/integration/deploy/test_broker_tls.py.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import runpy
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custody.tls import (
    CertifiedKey,
    SiteNames,
    TlsError,
    certify_device_key,
    create_site_ca,
    issue_device_certificate,
    issue_server_certificate,
    write_certificate,
    write_certified_key,
    write_site_tls,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DEVICE = "abcdefghijklmnopqrstuvwx"


@pytest.fixture(scope="module")
def ca() -> CertifiedKey:
    return create_site_ca("Example City Bureau", now=NOW)


@pytest.fixture(scope="module")
def server(ca: CertifiedKey) -> CertifiedKey:
    return issue_server_certificate(ca, dns_names=["broker.example.org", "mosquitto"], ip_addresses=["127.0.0.1"],
                                    now=NOW)


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


def test_site_ca_is_a_p256_ca_that_signs_leaves_only(ca: CertifiedKey) -> None:
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature  # type: ignore[attr-defined]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example City Bureau Custody site CA"
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=3650)


def test_server_certificate_names_every_host_and_is_for_servers_only(ca: CertifiedKey, server: CertifiedKey) -> None:
    cert = server.certificate
    cert.verify_directly_issued_by(ca.certificate)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example.org", "mosquitto"]  # type: ignore[attr-defined]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]  # type: ignore[attr-defined]
    assert _ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert _ext(cert, x509.BasicConstraints).value == x509.BasicConstraints(ca=False, path_length=None)
    key = serialization.load_pem_private_key(server.key_pem, password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def test_device_certificate_has_the_device_id_as_cn_and_is_for_clients_only(ca: CertifiedKey) -> None:
    device = issue_device_certificate(ca, DEVICE, now=NOW, days=365)
    cert = device.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE
    assert _ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=365)


def test_a_key_the_device_keeps_can_be_certified(ca: CertifiedKey) -> None:
    device_key = ec.generate_private_key(ec.SECP256R1())
    pem = device_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert = x509.load_pem_x509_certificate(certify_device_key(ca, DEVICE, pem, now=NOW))
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == pem


def test_refusals(ca: CertifiedKey, server: CertifiedKey) -> None:
    with pytest.raises(TlsError, match="is not a device id"):
        issue_device_certificate(ca, "not-a-device", now=NOW)
    with pytest.raises(TlsError, match="at least one DNS name or IP address"):
        issue_server_certificate(ca, now=NOW)
    with pytest.raises(TlsError, match=r"'300\.1\.1\.1' is not an IP address"):
        issue_server_certificate(ca, ip_addresses=["300.1.1.1"], now=NOW)
    with pytest.raises(TlsError, match="is not a DNS name"):
        issue_server_certificate(ca, dns_names=["bad name"], now=NOW)
    with pytest.raises(TlsError, match="would outlive its CA"):
        issue_server_certificate(ca, dns_names=["x"], now=NOW, days=4000)
    with pytest.raises(TlsError, match="aware datetime"):
        create_site_ca("x", now=dt.datetime(2025, 1, 1))  # naive on purpose
    # A leaf is not a CA, and a key that is not the CA's is refused.
    with pytest.raises(TlsError, match="is not a CA"):
        issue_device_certificate(server, DEVICE, now=NOW)
    with pytest.raises(TlsError, match="does not belong to the CA certificate"):
        issue_device_certificate(CertifiedKey(ca.cert_pem, server.key_pem), DEVICE, now=NOW)
    ed_pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(TlsError, match="must be ECDSA P-256"):
        certify_device_key(ca, DEVICE, ed_pem, now=NOW)


# -- In-memory handshakes ------------------------------------------------------------------------


def _ctx_files(tmp: Path, certified: CertifiedKey, name: str) -> tuple[str, str]:
    files = write_certified_key(tmp, name, certified)
    return str(files.cert), str(files.key)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> None:
    """Run a TLS handshake between two contexts through memory buffers; raise what either side raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", srv)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client certificate after the client has finished;
            # one round trip of application data makes the verdict reach both sides.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert srv.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


def _server_ctx(tmp: Path, server: CertifiedKey, client_ca: CertifiedKey | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*_ctx_files(tmp, server, "server"))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert_pem.decode())
    return ctx


def _client_ctx(tmp: Path, ca: CertifiedKey, client: CertifiedKey | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    # What Python 3.13 turns on by default: certificates must follow RFC 5280 to the letter.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if client is not None:
        ctx.load_cert_chain(*_ctx_files(tmp, client, "client"))
    return ctx


def _now_ca() -> CertifiedKey:
    # Handshakes check validity against the real clock, so these certificates are issued now.
    return create_site_ca("Handshake site", now=dt.datetime.now(dt.UTC))


def test_a_strict_client_trusting_the_site_ca_accepts_the_server_by_name_and_address(tmp_path: Path) -> None:
    ca = _now_ca()
    now = dt.datetime.now(dt.UTC)
    server = issue_server_certificate(ca, dns_names=["mosquitto"], ip_addresses=["127.0.0.1"], now=now)
    _handshake(_server_ctx(tmp_path, server), _client_ctx(tmp_path, ca), "mosquitto")
    _handshake(_server_ctx(tmp_path, server), _client_ctx(tmp_path, ca), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|IP address mismatch"):
        _handshake(_server_ctx(tmp_path, server), _client_ctx(tmp_path, ca), "other.example.org")


def test_a_client_trusting_another_ca_refuses_the_server(tmp_path: Path) -> None:
    ca, other = _now_ca(), _now_ca()
    server = issue_server_certificate(ca, dns_names=["mosquitto"], now=dt.datetime.now(dt.UTC))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        _handshake(_server_ctx(tmp_path, server), _client_ctx(tmp_path, other), "mosquitto")


def test_a_server_requiring_client_certificates_takes_the_sites_and_refuses_others(tmp_path: Path) -> None:
    ca, other = _now_ca(), _now_ca()
    now = dt.datetime.now(dt.UTC)
    server = issue_server_certificate(ca, dns_names=["mosquitto"], now=now)
    good = issue_device_certificate(ca, DEVICE, now=now)
    foreign = issue_device_certificate(other, DEVICE, now=now)
    _handshake(_server_ctx(tmp_path, server, client_ca=ca), _client_ctx(tmp_path, ca, good), "mosquitto")
    with pytest.raises(ssl.SSLError, match=r"certificate verify failed|unknown ca"):
        _handshake(_server_ctx(tmp_path, server, client_ca=ca), _client_ctx(tmp_path, ca, foreign), "mosquitto")


def test_a_client_certificate_cannot_serve_as_a_server_certificate(tmp_path: Path) -> None:
    ca = _now_ca()
    device = issue_device_certificate(ca, DEVICE, now=dt.datetime.now(dt.UTC))
    # Its extended key usage says clientAuth only, and it names no host.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_ctx(tmp_path, device), _client_ctx(tmp_path, ca), DEVICE)


# -- Files -----------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_0600_and_certificates_0644(tmp_path: Path, server: CertifiedKey, ca: CertifiedKey) -> None:
    files = write_certified_key(tmp_path / "tls", "broker", server)
    assert (files.cert.name, files.key.name) == ("broker.crt", "broker.key")
    assert (_mode(files.key), _mode(files.cert)) == (0o600, 0o644)
    assert files.key.read_bytes() == server.key_pem
    ca_path = write_certificate(tmp_path / "tls", "ca", ca.cert_pem)
    assert ca_path.name == "ca.crt" and _mode(ca_path) == 0o644
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["broker.crt", "broker.key", "ca.crt"]


def test_a_key_for_a_service_group_is_0640(tmp_path: Path, server: CertifiedKey) -> None:
    files = write_certified_key(tmp_path, "broker", server, key_group=os.getgid())
    assert _mode(files.key) == 0o640 and files.key.stat().st_gid == os.getgid()


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b"])
def test_file_names_must_be_plain(tmp_path: Path, server: CertifiedKey, name: str) -> None:
    with pytest.raises(TlsError, match="is not a plain file name"):
        write_certified_key(tmp_path, name, server)


# -- A compose site ---------------------------------------------------------------------------------


def _sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def test_site_tls_lays_out_what_compose_mounts(tmp_path: Path) -> None:
    site = tmp_path / "site"
    names = SiteNames("custody.example.org", "s3.custody.example.org", ("203.0.113.7",))
    write_site_tls(site, names, now=NOW, server_gid=os.getgid())
    found = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert found == ["api/api.crt", "api/api.key", "api/ca.crt", "broker/broker.crt", "broker/broker.key",
                     "broker/ca.crt", "ca/ca.crt", "ca/ca.key", "s3/ca.crt", "s3/s3.crt", "s3/s3.key"]
    assert _sans(site / "api/api.crt") == (["custody.example.org", "server", "localhost"], ["127.0.0.1", "203.0.113.7"])
    assert _sans(site / "broker/broker.crt")[0] == ["custody.example.org", "mosquitto", "localhost"]
    assert _sans(site / "s3/s3.crt")[0] == ["s3.custody.example.org", "minio", "localhost"]
    assert stat.S_IMODE((site / "api/api.key").stat().st_mode) == 0o640  # for the server container's group
    assert stat.S_IMODE((site / "broker/broker.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((site / "ca/ca.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((site / "ca/ca.crt").read_bytes())
    for service in ("api", "broker", "s3"):
        assert (site / service / "ca.crt").read_bytes() == (site / "ca/ca.crt").read_bytes()
        x509.load_pem_x509_certificate((site / service / f"{service}.crt").read_bytes()).verify_directly_issued_by(ca)


def test_site_tls_keeps_the_ca_and_reissues_only_when_asked(tmp_path: Path) -> None:
    names = SiteNames("custody.example.org", "s3.custody.example.org")
    write_site_tls(tmp_path, names, now=NOW, server_gid=None)
    ca_before = (tmp_path / "ca/ca.crt").read_bytes()
    api_before = (tmp_path / "api/api.crt").read_bytes()
    again = write_site_tls(tmp_path, names, now=NOW, server_gid=None)
    assert {p.name for p in again} == {"ca.crt"}  # only the CA copies are refreshed
    assert (tmp_path / "api/api.crt").read_bytes() == api_before
    write_site_tls(tmp_path, names, now=NOW, renew=True, server_gid=None)
    assert (tmp_path / "ca/ca.crt").read_bytes() == ca_before
    assert (tmp_path / "api/api.crt").read_bytes() != api_before


def test_the_site_script_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = runpy.run_path(str(Path(__file__).resolve().parents[3] / "deploy" / "site_tls.py"))
    assert script["main"](["--site", str(tmp_path), "--public-host", "h.example", "--s3-host", "s3.h.example"]) == 0
    assert str(tmp_path / "api" / "api.key") in capsys.readouterr().out.splitlines()
