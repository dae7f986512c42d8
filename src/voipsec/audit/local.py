"""Local checks of an installation: configuration and files (issue 19 item 2).

The shell: it reads what :mod:`.localchecks` decides on — the modes of the keys, the
database, the config and the data directory (``lstat``: a symbolic link is seen as
one), the server's and the CA's certificates, and from the database the users' HA1
digests, the CA's records and the device inventory judged by the compliance report
(endpoints/report.py, as ``voipsec devices report``). Modes are read before the
database is opened: opening it through the store sets voipsec.db to 0600, so a later
read would hide a loose mode. The audit changes nothing else. A file that cannot be
read makes its check an error (counted against the score), never a pass.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ..config import CONFIG_NAME, DEMO_FILE, Config
from ..endpoints.loader import load_advisories
from ..endpoints.report import compliance_report
from ..nat.keystore import SECRET_NAME
from ..pki.ca import CaPaths, ServerPaths
from ..records import StoreError
from ..rulefile import RuleFileError
from ..storage import DB_NAME, Store
from .localchecks import SPECS, CertFact, FileFact, LocalFacts, local_checks
from .localpasswords import StoredUser, parse_password_list
from .model import CheckResult, with_data_dir
from .options import read_bounded

__all__ = [
    "COMMON_LIST_FILE",
    "MAX_CERTIFICATE_BYTES",
    "MAX_DEVICE_KEY_FILES",
    "SPECS",
    "gather_facts",
    "local_results",
]

#: The shipped list of common passwords (its source is in its header).
COMMON_LIST_FILE = "common-passwords.txt"
#: Device key files (DIR/devices/*/*.key, *.p12) looked at: ``ca issue`` writes two per
#: device; a site has hundreds. Past this the rest is not stat'ed (sorted by name).
MAX_DEVICE_KEY_FILES = 10_000
#: Bytes read of a certificate or a key file: a PEM certificate or EC/RSA key is one
#: to a few KiB; anything larger is not voipsec's (a link to /dev/zero, say).
MAX_CERTIFICATE_BYTES = 64 * 1024


def _file_fact(
    data_dir: Path, name: str, *, directory: bool = False, public: bool = False
) -> FileFact:
    path = data_dir / name
    try:
        info = os.lstat(path)
    except OSError:
        return FileFact(name=name, path=str(path), mode=None, directory=directory)
    kind = info.st_mode
    if stat.S_ISLNK(kind):
        try:
            kind = os.stat(path).st_mode
        except OSError:
            kind = stat.S_IFREG  # a dangling link: the link itself is the finding
    return FileFact(
        name=name,
        path=str(path),
        mode=stat.S_IMODE(info.st_mode),
        directory=directory,
        symlink=stat.S_ISLNK(info.st_mode),
        uid=info.st_uid,
        nlink=info.st_nlink,
        public=public,
        special=_special_kind(kind),
    )


def _special_kind(mode: int) -> str | None:
    """What a file that is neither regular nor a directory is (None for those)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _parents(data_dir: Path) -> list[FileFact]:
    """The directories above ``data_dir`` up to ``/`` (resolved: the real ones)."""
    facts: list[FileFact] = []
    try:
        real = data_dir.resolve()
    except (OSError, RuntimeError):
        return facts
    for parent in real.parents:
        try:
            mode: int | None = stat.S_IMODE(os.stat(parent).st_mode)
        except OSError:
            mode = None
        facts.append(FileFact(name=str(parent), path=str(parent), mode=mode, parent=True))
    return facts


def _files(data_dir: Path) -> tuple[FileFact, ...]:
    facts = [_file_fact(data_dir, "", directory=True)]
    facts[0] = replace(facts[0], path=str(data_dir), symlink=False)
    facts += [
        _file_fact(data_dir, d, directory=True, public=True)
        for d in (
            CaPaths.in_dir(Path()).key.parent.name,
            ServerPaths.in_dir(Path()).key.parent.name,
            "devices",
        )
    ]
    facts += [
        _file_fact(data_dir, str(CaPaths.in_dir(Path()).cert), public=True),
        _file_fact(data_dir, str(ServerPaths.in_dir(Path()).cert), public=True),
    ]
    names = [
        str(CaPaths.in_dir(Path()).key),
        str(ServerPaths.in_dir(Path()).key),
        DB_NAME,
        f"{DB_NAME}-wal",
        f"{DB_NAME}-shm",
        CONFIG_NAME,
        DEMO_FILE,
        SECRET_NAME,
    ]
    devices = data_dir / "devices"
    if devices.is_dir() and not devices.is_symlink():
        found = sorted(
            p.relative_to(data_dir).as_posix()
            for pattern in ("*/*.key", "*/*.p12")
            for p in devices.glob(pattern)
        )
        names += found[:MAX_DEVICE_KEY_FILES]
    facts += [_file_fact(data_dir, n) for n in names]
    facts += _parents(data_dir)
    return tuple(facts)


def _load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(read_bounded(path, MAX_CERTIFICATE_BYTES))


def _certificate(kind: Literal["server", "ca"], path: Path) -> CertFact:
    try:
        cert = _load_certificate(path)
    except FileNotFoundError:
        return CertFact(kind=kind, path=str(path), not_after=None, error=f"{path} not found")
    except OSError as err:
        return CertFact(kind=kind, path=str(path), not_after=None, error=str(err))
    except ValueError as err:
        return CertFact(kind=kind, path=str(path), not_after=None, error=f"{path}: {err}")
    return CertFact(
        kind=kind,
        path=str(path),
        not_after=cert.not_valid_after_utc.timestamp(),
        not_before=cert.not_valid_before_utc.timestamp(),
    )


def _foreign(data_dir: Path) -> str:
    """Why tls/server.crt is not this installation's, or "" (also when a file cannot be
    read: that is the certificate's or the key's own finding)."""
    server = ServerPaths.in_dir(data_dir)
    ca = CaPaths.in_dir(data_dir)
    try:
        cert = _load_certificate(server.cert)
        ca_cert = _load_certificate(ca.cert)
        key = serialization.load_pem_private_key(
            read_bounded(server.key, MAX_CERTIFICATE_BYTES), password=None
        )
    except (OSError, ValueError, TypeError):
        return ""
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        return f"does not match {server.key.relative_to(data_dir)}"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return f"is not signed by {ca.cert.relative_to(data_dir)}"
    return ""


def _common_passwords() -> tuple[str, ...]:
    text = files("voipsec.audit").joinpath("data", COMMON_LIST_FILE).read_text(encoding="utf-8")
    return parse_password_list(text)


def gather_facts(data_dir: Path, config: Config, now: float) -> LocalFacts:
    """Everything the local checks judge, read from ``data_dir`` (modes first)."""
    file_facts = _files(data_dir)
    server = _certificate("server", ServerPaths.in_dir(data_dir).cert)
    if server.not_after is not None:
        server = replace(server, foreign=_foreign(data_dir))
    certificates = (server, _certificate("ca", CaPaths.in_dir(data_dir).cert))
    smtp_ca = config.alerts.smtp_ca
    try:
        owner: int | None = os.stat(data_dir).st_uid
    except OSError:
        owner = None
    base = LocalFacts(
        data_dir=str(data_dir),
        owner=owner,
        files=file_facts,
        certificates=certificates,
        common_passwords=_common_passwords(),
        smtp_ca_present=(data_dir / smtp_ca).is_file() if smtp_ca else None,
    )
    db = data_dir / DB_NAME
    if not db.is_file():
        return replace(base, store_error=f"{db} not found (run `voipsec init`)")
    try:
        store = Store(db, cdr_url=config.cdr.url)
    except (StoreError, sqlite3.Error) as err:
        return replace(base, store_error=str(err))
    try:
        digests = store.user_digests(config.sip.domain)
        classes = store.user_classes()
        issued = tuple(store.certificates())
        records = store.devices(None)
    except (StoreError, sqlite3.Error) as err:
        return replace(base, store_error=str(err))
    finally:
        store.close()
    users = tuple(
        StoredUser(
            name=name,
            sha256=digests.get((name, "SHA-256"), ""),
            md5=digests.get((name, "MD5"), ""),
            cos=classes.get(name, ""),
        )
        for name in sorted({n for n, _ in digests})
    )
    try:
        advisories = load_advisories(data_dir)
    except RuleFileError as err:
        return replace(base, issued=issued, users=users, devices_error=str(err))
    devices = compliance_report(
        records,
        advisories=advisories,
        now=now,
        warning_days=config.pki.expiry_warning_days,
        minimum_firmware=config.endpoints.minimum_firmware,
        certificates=issued,
    )
    return replace(base, issued=issued, users=users, devices=tuple(devices))


def local_results(data_dir: Path, config: Config, now: float) -> list[CheckResult]:
    """Every local check's result for the installation in ``data_dir``."""
    results = local_checks(config, gather_facts(data_dir, config, now), now)
    return with_data_dir(results, str(data_dir))
