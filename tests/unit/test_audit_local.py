"""The local checks' shell: what it reads from a data directory (modes before the
database is opened, symbolic links, certificates, digests) and its bounds."""

from __future__ import annotations

import datetime
import os
import shutil
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from voipsec.audit import local
from voipsec.audit.local import gather_facts, local_results
from voipsec.audit.model import Outcome
from voipsec.cli import initialise
from voipsec.config import CONFIG_NAME, load
from voipsec.storage import DB_NAME, Store


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("local") / "d"
    initialise(data)
    return data


def test_local_gather_reads_modes_certificates_and_users(fresh: Path) -> None:
    config = load(fresh / CONFIG_NAME)
    facts = gather_facts(fresh, config, time.time())
    modes = {f.name: f.mode for f in facts.files if not f.parent}
    # voipsec.db-wal and -shm exist only while a connection is open (checked when there).
    assert set(modes) == {
        "",
        "ca",
        "tls",
        "devices",
        "ca/ca.crt",
        "tls/server.crt",
        "turn-secret",
        "ca/ca.key",
        "tls/server.key",
        DB_NAME,
        f"{DB_NAME}-wal",
        f"{DB_NAME}-shm",
        CONFIG_NAME,
        "demo-user.txt",
    }
    assert {n: m for n, m in modes.items() if m is not None} == {
        "": 0o700,
        "ca": 0o755,
        "tls": 0o755,
        "ca/ca.crt": 0o644,
        "tls/server.crt": 0o644,
        "ca/ca.key": 0o600,
        "tls/server.key": 0o600,
        DB_NAME: 0o600,
        CONFIG_NAME: 0o600,
        "demo-user.txt": 0o600,
    }
    assert facts.owner == os.getuid()
    assert [f.name for f in facts.files if f.parent][-1] == "/"
    assert [(c.kind, c.error) for c in facts.certificates] == [("server", ""), ("ca", "")]
    assert [u.name for u in facts.users] == ["demo"]
    assert len(facts.users[0].sha256) == 64
    assert len(facts.common_passwords) == 1001
    assert (facts.store_error, facts.devices_error, facts.devices) == ("", "", ())


def test_local_loose_database_mode_is_read_before_the_store_tightens_it(
    fresh: Path, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    shutil.copytree(fresh, data, symlinks=True)
    (data / DB_NAME).chmod(0o644)
    results = local_results(data, load(data / CONFIG_NAME), time.time())
    (perms,) = [r for r in results if r.spec.id == "S-file-permissions"]
    assert (perms.outcome, perms.observed) == (Outcome.FAILED, "voipsec.db is 0644")


def test_local_symlinked_key_and_missing_database(tmp_path: Path) -> None:
    data = tmp_path / "d"
    initialise(data)
    key = data / "tls" / "server.key"
    real = tmp_path / "server.key"
    key.rename(real)
    key.symlink_to(real)
    (data / DB_NAME).unlink()
    config = load(data / CONFIG_NAME)
    facts = gather_facts(data, config, time.time())
    (fact,) = [f for f in facts.files if f.name == "tls/server.key"]
    assert (fact.symlink, fact.mode) == (True, 0o777)
    assert facts.store_error == f"{data / DB_NAME} not found (run `voipsec init`)"
    outcomes = {r.spec.id: r.outcome for r in local_results(data, config, time.time())}
    assert outcomes["S-file-permissions"] is Outcome.FAILED
    assert outcomes["A-weak-password"] is Outcome.ERROR


def test_local_unreadable_certificate_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    initialise(data)
    (data / "tls" / "server.crt").write_text("not a certificate\n")
    config = load(data / CONFIG_NAME)
    (server, _) = gather_facts(data, config, time.time()).certificates
    assert server.not_after is None
    assert server.error.startswith(f"{data / 'tls' / 'server.crt'}: ")


def test_local_device_key_files_stop_at_the_bound(
    fresh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d"
    shutil.copytree(fresh, data, symlinks=True)
    for name in ("alice", "bob"):
        (data / "devices" / name).mkdir(parents=True)
        for suffix in (".key", ".p12"):
            (data / "devices" / name / f"{name}{suffix}").write_bytes(b"x")
    monkeypatch.setattr(local, "MAX_DEVICE_KEY_FILES", 3)
    facts = gather_facts(data, load(data / CONFIG_NAME), time.time())
    devices = [f.name for f in facts.files if f.name.startswith("devices/")]
    assert devices == ["devices/alice/alice.key", "devices/alice/alice.p12", "devices/bob/bob.key"]


def test_local_users_of_another_realm_are_not_checked(tmp_path: Path) -> None:
    data = tmp_path / "d"
    initialise(data)
    store = Store(data / DB_NAME)
    try:
        store.add_user("old", "123456", "old.example")  # digests of a former sip.domain
    finally:
        store.close()
    facts = gather_facts(data, load(data / CONFIG_NAME), time.time())
    assert [u.name for u in facts.users] == ["demo"]


def test_local_subdirectories_certificates_secret_links_and_parents(tmp_path: Path) -> None:
    data = tmp_path / "open" / "d"
    initialise(data)
    (data / "turn-secret").write_bytes(b"x" * 32)
    os.chmod(data / "turn-secret", 0o644)
    os.chmod(data / "ca", 0o777)  # noqa: S103 - the weakening under test
    os.chmod(data / "ca" / "ca.crt", 0o666)  # noqa: S103 - the weakening under test
    os.link(data / "ca" / "ca.key", tmp_path / "leaked.key")
    real = tmp_path / "tls-real"
    (data / "tls").rename(real)
    (data / "tls").symlink_to(real)
    os.chmod(tmp_path / "open", 0o777)  # noqa: S103 - the weakening under test
    config = load(data / CONFIG_NAME)
    (perms,) = [
        r for r in local_results(data, config, time.time()) if r.spec.id == "S-file-permissions"
    ]
    d = str(data)
    assert (perms.outcome, perms.observed) == (
        Outcome.FAILED,
        "ca is 0777, tls is a symbolic link, ca/ca.crt is 0666, ca/ca.key has 2 hard links "
        "(another keeps a copy: make a new key), "
        f"turn-secret is 0644, parent directory {tmp_path / 'open'} is 0777",
    )
    assert perms.fix == (
        f't="$(readlink -f {d}/tls)" && rm {d}/tls && cp -a "$t" {d}/tls && chmod 700 {d}/tls; '
        f"cp -p {d}/ca/ca.key {d}/ca/ca.key.new && mv {d}/ca/ca.key.new {d}/ca/ca.key; "
        f"chmod 600 {d}/turn-secret; chmod go-w {d}/ca {d}/ca/ca.crt; "
        f"chmod o-w {tmp_path / 'open'}"
    )


def _self_signed(path: Path, *, start_days: int, days: int) -> None:
    """A self-signed certificate of a key of its own (not the installation's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=start_days))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _expiry(data: Path) -> tuple[Outcome, str]:
    config = load(data / CONFIG_NAME)
    results = local_results(data, config, time.time())
    (found,) = [r for r in results if r.spec.id == "S-certificate-expiry"]
    return found.outcome, found.observed


def test_local_foreign_and_not_yet_valid_server_certificates(fresh: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(fresh, data)
    cert = data / "tls" / "server.crt"
    _self_signed(cert, start_days=-1, days=800)
    assert _expiry(data) == (Outcome.FAILED, "server certificate does not match tls/server.key")
    # The key matches (the installation's own key), but the CA did not sign it.
    key = serialization.load_pem_private_key((data / "tls" / "server.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    own = x509.load_pem_x509_certificate(cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    resigned = (
        x509.CertificateBuilder()
        .subject_name(own.subject)
        .issuer_name(own.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=800))
        .sign(key, hashes.SHA256())
    )
    cert.write_bytes(resigned.public_bytes(serialization.Encoding.PEM))
    assert _expiry(data) == (Outcome.FAILED, "server certificate is not signed by ca/ca.crt")
    shutil.copy(fresh / "tls" / "server.crt", cert)
    assert _expiry(data)[0] is Outcome.PASSED


def test_local_certificate_not_a_regular_file_is_an_error(fresh: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(fresh, data)
    cert = data / "tls" / "server.crt"
    cert.unlink()
    cert.symlink_to("/dev/zero")
    assert _expiry(data) == (
        Outcome.ERROR,
        f"server certificate: [Errno 40] Too many levels of symbolic links: '{cert}'",
    )
    cert.unlink()
    os.mkfifo(cert)
    assert _expiry(data) == (Outcome.ERROR, f"server certificate: {cert}: not a regular file")
    cert.unlink()
    cert.write_bytes(b"x" * (local.MAX_CERTIFICATE_BYTES + 1))
    assert _expiry(data) == (
        Outcome.ERROR,
        f"server certificate: {cert}: larger than {local.MAX_CERTIFICATE_BYTES} bytes",
    )


def test_local_device_links_and_fifos_are_not_regular_files(tmp_path: Path) -> None:
    """Review 3 #5: tls/server.crt a link to /dev/zero and turn-secret a FIFO fail as
    what they are (no cp -a of a device, no chmod of a FIFO)."""
    data = tmp_path / "d"
    initialise(data)
    (data / "tls" / "server.key").unlink()
    (data / "tls" / "server.key").symlink_to("/dev/zero")
    (data / "turn-secret").unlink(missing_ok=True)
    os.mkfifo(data / "turn-secret", 0o644)
    config = load(data / CONFIG_NAME)
    (perms,) = [
        r for r in local_results(data, config, time.time()) if r.spec.id == "S-file-permissions"
    ]
    d = str(data)
    assert (perms.outcome, perms.observed, perms.fix) == (
        Outcome.FAILED,
        "tls/server.key is a symbolic link to a character device, "
        "turn-secret is a FIFO, not a regular file",
        f"rm {d}/tls/server.key and put the real tls/server.key there (from a backup); "
        f"rm {d}/turn-secret and put the real turn-secret there (from a backup)",
    )
