"""A site's own TLS certificates: a CA, server certificates for the broker and API, device certificates.

Pure functions return PEM bytes; :func:`write_certified_key` is the only one that writes files.
Every key is ECDSA P-256: Mosquitto (OpenSSL), Python's ``ssl`` (paho-mqtt, aiomqtt, aiohttp),
browsers and small embedded TLS stacks all accept it, which Ed25519 certificates cannot yet
claim. Certificates carry the extensions strict verifiers insist on (key identifiers, key usage,
extended key usage, subject alternative names), so a client that checks strictly (Python 3.13's
default ``VERIFY_X509_STRICT``) accepts them too.

These certificates only protect the transport. What a device or the server says is signed with
their Ed25519 keys (``protocol/``), whatever TLS certificate carried it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custody.atomic_write import write_file_atomic
from protocol.errors import CustodyError
from protocol.schema import Invalid, check_device_id

CA_DAYS = 3650
LEAF_DAYS = 825
# Certificates start a little in the past so a peer whose clock runs a few minutes behind ours
# does not reject a certificate issued a moment ago as "not yet valid".
BACKDATE = dt.timedelta(minutes=10)


class TlsError(CustodyError):
    """A certificate request that cannot be honoured (bad name, wrong CA material, bad key)."""

    code = "tls_error"


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A certificate and its private key, both PEM (the key unencrypted PKCS#8: guard the file)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _check_now(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise TlsError("now must be an aware datetime (UTC)")
    return now.astimezone(dt.UTC)


def create_site_ca(site_name: str, *, now: dt.datetime, days: int = CA_DAYS) -> CertifiedKey:
    """A new self-signed CA for one site; it may sign end-entity certificates only (path length 0)."""
    if not site_name.strip():
        raise TlsError("site name must not be empty")
    now = _check_now(now)
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, site_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{site_name} Custody site CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _load_ca(ca: CertifiedKey) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = ca.certificate
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("the CA key is not an ECDSA key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise TlsError("the CA key does not belong to the CA certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TlsError("the CA certificate is not a CA (basicConstraints CA:FALSE or missing)")
    return cert, key


def _leaf(
    ca: CertifiedKey,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None,
    now: dt.datetime,
    days: int,
) -> bytes:
    ca_cert, ca_key = _load_ca(ca)
    now = _check_now(now)
    not_after = now + dt.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        raise TlsError(f"certificate would outlive its CA (CA expires {ca_cert.not_valid_after_utc:%Y-%m-%d})")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # ECDHE key exchange: an ECDSA leaf key only ever signs the handshake.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def issue_server_certificate(
    ca: CertifiedKey,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    now: dt.datetime,
    days: int = LEAF_DAYS,
) -> CertifiedKey:
    """A TLS server certificate (broker or API) for every name and address clients will dial.

    Clients match the host they connect to against the subject alternative names only (the
    common name is ignored by modern verifiers), so list each DNS name and IP address in use:
    the public name, the compose service name (``mosquitto``), ``localhost`` for health checks.
    """
    if not dns_names and not ip_addresses:
        raise TlsError("a server certificate needs at least one DNS name or IP address")
    general: list[x509.GeneralName] = []
    for name in dns_names:
        if not name or any(c.isspace() for c in name) or "/" in name or ":" in name:
            raise TlsError(f"{name!r} is not a DNS name")
        general.append(x509.DNSName(name))
    for address in ip_addresses:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise TlsError(f"{address!r} is not an IP address") from None
    key = _new_key()
    first = dns_names[0] if dns_names else ip_addresses[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)])
    cert = _leaf(ca, subject, key.public_key(), ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(general),
                 now, days)
    return CertifiedKey(cert, _key_pem(key))


def _device_subject(device_id: str) -> x509.Name:
    try:
        check_device_id("device id", device_id)
    except Invalid as exc:
        raise TlsError(str(exc)) from None
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])


def issue_device_certificate(
    ca: CertifiedKey, device_id: str, *, now: dt.datetime, days: int = LEAF_DAYS
) -> CertifiedKey:
    """A TLS client certificate with CN = ``device_id`` and a new key made here.

    For brokers that require client certificates. The key is made on this machine, so it must be
    carried to the device; :func:`certify_device_key` is the way to keep the key on the device.
    """
    key = _new_key()
    cert = _leaf(ca, _device_subject(device_id), key.public_key(), ExtendedKeyUsageOID.CLIENT_AUTH, None, now, days)
    return CertifiedKey(cert, _key_pem(key))


def certify_device_key(
    ca: CertifiedKey, device_id: str, public_key_pem: bytes, *, now: dt.datetime, days: int = LEAF_DAYS
) -> bytes:
    """A TLS client certificate (PEM) with CN = ``device_id`` for a P-256 key the device keeps."""
    try:
        public_key = serialization.load_pem_public_key(public_key_pem)
    except ValueError:
        raise TlsError("the device's TLS public key is not a PEM public key") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise TlsError("the device's TLS key must be ECDSA P-256")
    return _leaf(ca, _device_subject(device_id), public_key, ExtendedKeyUsageOID.CLIENT_AUTH, None, now, days)


@dataclass(frozen=True, slots=True)
class WrittenFiles:
    """Paths :func:`write_certified_key` wrote."""

    cert: Path
    key: Path


def write_certified_key(
    directory: Path, name: str, certified: CertifiedKey, *, key_group: int | str | None = None
) -> WrittenFiles:
    """Write ``NAME.crt`` (mode 0644) and ``NAME.key`` (0600, or 0640 with ``key_group``) into ``directory``.

    Each file is replaced atomically and the key is never readable by others, even while being
    written. ``key_group`` is for a service that runs as another user of that group and reads its
    key itself (Mosquitto 2.0 reads its key file after dropping root).
    """
    if not name or "/" in name or name.startswith("."):
        raise TlsError(f"{name!r} is not a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    files = WrittenFiles(directory / f"{name}.crt", directory / f"{name}.key")
    write_file_atomic(files.key, certified.key_pem, mode=0o640 if key_group is not None else 0o600, group=key_group)
    write_file_atomic(files.cert, certified.cert_pem, mode=0o644)
    return files


def write_certificate(directory: Path, name: str, cert_pem: bytes) -> Path:
    """Write a certificate alone (the CA for clients, a device's certificate): ``NAME.crt``, mode 0644."""
    if not name or "/" in name or name.startswith("."):
        raise TlsError(f"{name!r} is not a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.crt"
    write_file_atomic(path, cert_pem, mode=0o644)
    return path


# -- A compose site's TLS files ---------------------------------------------------------------------

#: The uid/gid the server runs as in deploy/Dockerfile: its API key is made readable to that group.
SERVER_CONTAINER_GID = 10001


@dataclass(frozen=True, slots=True)
class SiteNames:
    """The names each service of a compose site is reached by (deploy/compose.yml)."""

    public_host: str
    s3_host: str
    public_ips: tuple[str, ...] = ()

    def api(self) -> tuple[list[str], list[str]]:
        """DNS names and IPs of the API: public name, compose name, loopback for its health check."""
        return [self.public_host, "server", "localhost"], ["127.0.0.1", *self.public_ips]

    def broker(self) -> tuple[list[str], list[str]]:
        """DNS names and IPs of the broker: devices dial the public name, the server ``mosquitto``."""
        return [self.public_host, "mosquitto", "localhost"], ["127.0.0.1", *self.public_ips]

    def s3(self) -> tuple[list[str], list[str]]:
        """DNS names and IPs of the S3 endpoint: presigned URLs name ``s3_host``, minio-init ``minio``."""
        return [self.s3_host, "minio", "localhost"], ["127.0.0.1", *self.public_ips]


def write_site_tls(site: Path, names: SiteNames, *, now: dt.datetime, renew: bool = False,
                   server_gid: int | None = SERVER_CONTAINER_GID) -> list[Path]:
    """Create the site's TLS files for deploy/compose.yml under ``site``; return the files written.

    Layout: ``ca/`` (the CA; its key is mounted nowhere), and ``api/``, ``broker/``, ``s3/``, each
    with ``ca.crt`` and that service's certificate and key. An existing CA is kept (every device
    trusts it); service certificates are made when missing, or all again with ``renew``. The API
    key is given to ``server_gid`` (mode 0640), since the server container does not run as root.
    """
    ca_dir = site / "ca"
    if (ca_dir / "ca.crt").exists() and (ca_dir / "ca.key").exists():
        ca = CertifiedKey((ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes())
        _load_ca(ca)
        written: list[Path] = []
    else:
        ca = create_site_ca(names.public_host, now=now)
        files = write_certified_key(ca_dir, "ca", ca)
        written = [files.cert, files.key]
    services = {"api": names.api(), "broker": names.broker(), "s3": names.s3()}
    for service, (dns, ips) in services.items():
        directory = site / service
        written.append(write_certificate(directory, "ca", ca.cert_pem))
        if not renew and (directory / f"{service}.crt").exists() and (directory / f"{service}.key").exists():
            continue
        certified = issue_server_certificate(ca, dns_names=dns, ip_addresses=ips, now=now)
        group = server_gid if service == "api" else None
        files = write_certified_key(directory, service, certified, key_group=group)
        written += [files.cert, files.key]
    return written
