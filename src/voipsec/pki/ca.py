"""voipsec's built-in certificate authority (ECDSA P-256), with ``cryptography``.

``voipsec init`` creates the root and a server certificate; the device-certificate
issue builds on :func:`issue_certificate`. Private keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..config import EXPIRY_WARNING_DAYS
from .lifecycle import MAX_VALIDITY_DAYS, check_validity_days

#: Root lifetime: ten years, like most private PKIs for phones.
CA_DAYS = 3650

#: Leaf lifetime: 825 days, the CA/Browser Forum's old maximum, kept for phones
#: that cannot renew often (the default of ``voipsec ca issue --days``).
LEAF_DAYS = MAX_VALIDITY_DAYS


log = logging.getLogger("voipsec.pki")


@dataclass(frozen=True, slots=True)
class CaPaths:
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> CaPaths:
        return cls(cert=data_dir / "ca" / "ca.crt", key=data_dir / "ca" / "ca.key")


@dataclass(frozen=True, slots=True)
class ServerPaths:
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> ServerPaths:
        return cls(cert=data_dir / "tls" / "server.crt", key=data_dir / "tls" / "server.key")


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file created 0600 (never world-readable, not even briefly).

    Through a new temporary name (O_EXCL | O_NOFOLLOW: never a file or symlink someone
    planted in a shared ``--out`` directory) renamed over ``path``: the result is a file
    of ours, whoever owned what was there before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(paths: CaPaths, common_name: str) -> None:
    """A new self-signed root for ``common_name``; refuses to overwrite one."""
    if paths.cert.exists() or paths.key.exists():
        raise FileExistsError(f"a CA already exists at {paths.cert.parent}")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    write_private(paths.key, _key_pem(key))
    paths.cert.parent.mkdir(parents=True, exist_ok=True)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_ca(paths: CaPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("CA key is not an EC key")
    return cert, key


def issue_certificate(
    ca: CaPaths,
    *,
    common_name: str,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    server: bool,
    days: int = LEAF_DAYS,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA: (certificate PEM, private key PEM).

    Valid from five minutes before ``now`` (clocks differ) for ``days`` days
    (:data:`~voipsec.pki.lifecycle.MIN_VALIDITY_DAYS`..``MAX_VALIDITY_DAYS``, else
    ValueError). ``now`` defaults to the clock; tests pass a past one to make a
    certificate that has already expired without waiting for it.
    """
    check_validity_days(days)
    ca_cert, ca_key = load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    now = now or _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def create_server_certificate(
    ca: CaPaths, server: ServerPaths, *, names: tuple[str, ...], addresses: tuple[str, ...]
) -> None:
    """The SIP/TLS server certificate, SANs for the domain, aliases and listen addresses."""
    cert, key = issue_certificate(
        ca,
        common_name=names[0] if names else addresses[0],
        dns_names=names,
        ip_addresses=addresses,
        server=True,
    )
    write_private(server.key, key)
    server.cert.parent.mkdir(parents=True, exist_ok=True)
    server.cert.write_bytes(cert)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceBundle:
    """Files written for one device by ``voipsec ca issue``."""

    cert: Path
    key: Path
    p12: Path
    ca: Path
    serial: int
    not_after: datetime.datetime


def issue_device(
    ca: CaPaths,
    *,
    name: str,
    aor: str,
    out_dir: Path,
    p12_password: str,
    days: int = LEAF_DAYS,
    now: datetime.datetime | None = None,
) -> DeviceBundle:
    """A client certificate whose SAN is the user's SIP URI, plus a PKCS#12 bundle.

    Writes NAME.crt, NAME.key (0600), NAME.p12 (0600, password-protected) and ca.crt.
    Every call makes a new key and a new serial: a renewal is an issue for the same
    name and AOR (``voipsec ca renew``), never a re-signing of the old key.
    """
    from cryptography.hazmat.primitives.serialization import pkcs12

    cert_pem, key_pem = issue_certificate(
        ca, common_name=name, uris=(f"sip:{aor}",), server=False, days=days, now=now
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("device key is not an EC key")
    ca_cert, _ = load_ca(ca)
    p12 = pkcs12.serialize_key_and_certificates(
        name.encode(),
        key,
        cert,
        [ca_cert],
        serialization.BestAvailableEncryption(p12_password.encode()),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = DeviceBundle(
        cert=out_dir / f"{name}.crt",
        key=out_dir / f"{name}.key",
        p12=out_dir / f"{name}.p12",
        ca=out_dir / "ca.crt",
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )
    bundle.cert.write_bytes(cert_pem)
    write_private(bundle.key, key_pem)
    write_private(bundle.p12, p12)
    bundle.ca.write_bytes(ca.cert.read_bytes())
    return bundle


def write_crl(ca: CaPaths, crl_path: Path, revoked: list[tuple[int, datetime.datetime]]) -> None:
    """Sign a CRL listing ``(serial, revoked_at)``; valid for a week, rewritten on change."""
    ca_cert, ca_key = load_ca(ca)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=7))
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    crl_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = crl_path.with_suffix(".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    tmp.replace(crl_path)


def read_crl_serials(crl_path: Path, ca: CaPaths) -> frozenset[int]:
    """Serials revoked by a CRL that our CA signed; empty when there is no CRL."""
    try:
        data = crl_path.read_bytes()
    except FileNotFoundError:
        return frozenset()
    crl = x509.load_pem_x509_crl(data)
    ca_cert, _ = load_ca(ca)
    if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise ValueError(f"{crl_path}: CRL not signed by voipsec's CA")
    return frozenset(r.serial_number for r in crl)


def warn_if_expiring(cert_path: Path, now: float, warning_days: int = EXPIRY_WARNING_DAYS) -> float:
    """Log a warning when the certificate expires within ``warning_days``; days left."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    days = (cert.not_valid_after_utc.timestamp() - now) / 86400
    if days < warning_days:
        log.warning(
            "server certificate %s expires in %.0f days (%s): renew it and send SIGHUP",
            cert_path,
            days,
            cert.not_valid_after_utc.isoformat(),
        )
    return days
