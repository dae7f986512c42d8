"""The local checks' decisions: a configuration and what was read from disk, judged.

How this works: the shell (:mod:`.local`) reads what the checks need into a
:class:`LocalFacts` — file modes, certificate expiry dates, the users' stored digests,
the CA's records and the device inventory's postures — and :func:`local_checks` turns
the configuration, the facts and ``now`` into one :class:`CheckResult` per check, in
:data:`SPECS` order. Every failure carries its fix: an exact ``voipsec config set KEY
VALUE`` line (VALUE a TOML literal, shell-quoted), or a command (``chmod 600 PATH``).
Commands of voipsec take ``--dir DIR`` like every command; the fixes leave it out.
Observed text names users, files and settings, never a secret (a weak password is
named by its user; a webhook URL by its host).

The rules for each check, and why, are in docs/audit.md "Local checks".

Sans-IO: values in, results out.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ..config import (
    DEFAULT_ZONE,
    SANITY_CHECKS,
    Config,
    MediaSection,
    SipSection,
    ZoneSection,
    parse_listen,
    zone_cidrs,
)
from ..endpoints.report import DevicePosture
from ..nat.peerfilter import DENIED_IPV4, DENIED_IPV6
from ..pki.lifecycle import CertState, certificate_statuses, days_left, validity_state
from ..records import CertificateRecord
from .localpasswords import PasswordScan, StoredUser, scan_passwords
from .model import CheckResult, CheckSpec, errored, failed, passed
from .specs import (
    ALERTS,
    CERTIFICATE_EXPIRY,
    CLIENT_CERTIFICATES,
    DIGEST_MD5,
    DSCP,
    ENDPOINT_POLICY,
    FILE_PERMISSIONS,
    FRAUD,
    IDS,
    METRICS_EXPOSURE,
    PLAINTEXT_SIP,
    SRTP_REQUIRED,
    TLS_VERSION,
    TRUSTED_ZONE,
    TURN_PEER_FILTER,
    WEAK_PASSWORD,
)
from .turnpeers import internal_reasons

__all__ = [
    "LOCAL",
    "MAX_LISTED",
    "MAX_REQUESTS_PER_SECOND",
    "MAX_TRUSTED_PUBLIC_V4",
    "MAX_TRUSTED_PUBLIC_V6",
    "MIN_BAN_SECONDS",
    "MIN_METRICS_TOKEN_LENGTH",
    "MIN_V4_PREFIX",
    "MIN_V6_PREFIX",
    "SPECS",
    "CertFact",
    "FileFact",
    "LocalFacts",
    "config_fix",
    "local_checks",
    "toml_literal",
]

#: The target of every local result (SARIF locates it in voipsec.toml).
LOCAL = "local"
#: Items named in one observed text (devices, users, files); more are counted.
MAX_LISTED = 10
#: Shortest ban an untrusted zone may set: a scanner banned for less than a minute
#: resumes after a pause (the shipped zones ban for 300 s, pike-like).
MIN_BAN_SECONDS = 60
#: Fastest request rate per source an untrusted zone may allow before banning: no phone
#: sends 100 requests a second, a scanner (SIPVicious svwar) does.
MAX_REQUESTS_PER_SECOND = 100.0
#: Shortest metrics.token that passes: 32 characters (128 bits as hex, the fix's
#: ``openssl rand -hex 32`` gives 64), beyond guessing at any request rate.
MIN_METRICS_TOKEN_LENGTH = 32
#: Trusted zones may cover public addresses only in small blocks: all trusted zones
#: together at most one /24 of public IPv4 addresses and one /48 of IPv6 (one site:
#: RFC 6177), counted after merging overlaps; within that they pass with an observation.
MIN_V4_PREFIX = 24
MIN_V6_PREFIX = 48
MAX_TRUSTED_PUBLIC_V4 = 2 ** (32 - MIN_V4_PREFIX)
MAX_TRUSTED_PUBLIC_V6 = 2 ** (128 - MIN_V6_PREFIX)

SPECS: tuple[CheckSpec, ...] = (
    PLAINTEXT_SIP,
    TLS_VERSION,
    CERTIFICATE_EXPIRY,
    FILE_PERMISSIONS,
    CLIENT_CERTIFICATES,
    DIGEST_MD5,
    WEAK_PASSWORD,
    SRTP_REQUIRED,
    ENDPOINT_POLICY,
    IDS,
    FRAUD,
    ALERTS,
    METRICS_EXPOSURE,
    TURN_PEER_FILTER,
    TRUSTED_ZONE,
    DSCP,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFact:
    """One file (or the data directory) that must be its owner's only.

    ``name`` is relative to the data directory (``""`` for the directory itself),
    ``path`` as the fix names it; ``mode`` the permission bits (None: not there);
    ``symlink``: the name is a symbolic link (its target's mode says nothing of who can
    replace the link)."""

    name: str
    path: str
    mode: int | None
    directory: bool = False
    symlink: bool = False
    #: Its owner's uid (None: not read): it must be the data directory's owner.
    uid: int | None = None
    #: Hard links to it: a second one (outside DIR, say) keeps the key where its mode
    #: and owner are not checked.
    nlink: int = 1
    #: A certificate or a subdirectory: others may read it, no one else may write it.
    public: bool = False
    #: A directory above the data directory: whoever may write it may rename DIR away
    #: and put another in its place, unless its sticky bit is set.
    parent: bool = False
    #: Not a regular file (or directory): "a FIFO", "a character device", ...; for a
    #: symbolic link, what it points to when that is not one (review 3 #5: a link to
    #: /dev/zero copied with cp -a stays a device, and a FIFO has no mode worth fixing).
    special: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertFact:
    """The server's or the CA's certificate: ``kind`` ``server`` or ``ca``; ``not_after``
    its last valid second (None with ``error`` when it could not be read)."""

    kind: Literal["server", "ca"]
    path: str
    not_after: float | None
    error: str = ""
    #: Its first valid second (None: not read).
    not_before: float | None = None
    #: Why the server certificate is not this installation's: its key is not
    #: tls/server.key's, or the CA did not sign it ("" when it is).
    foreign: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalFacts:
    """What the shell read for the checks. ``store_error`` says why the database (users,
    the CA's records, the inventory) could not be read; ``devices_error`` the same of
    the inventory's report alone (the advisories did not load)."""

    data_dir: str
    files: tuple[FileFact, ...] = ()
    certificates: tuple[CertFact, ...] = ()
    issued: tuple[CertificateRecord, ...] = ()
    users: tuple[StoredUser, ...] = ()
    common_passwords: tuple[str, ...] = ()
    devices: tuple[DevicePosture, ...] = ()
    store_error: str = ""
    devices_error: str = ""
    #: Whether alerts.smtp_ca names an existing file (None: not set).
    smtp_ca_present: bool | None = None
    #: The data directory owner's uid (None: not read).
    owner: int | None = None


# -- fix lines ------------------------------------------------------------------------


def _key(name: str) -> str:
    return name if name and all(c.isalnum() or c in "_-" for c in name) else json.dumps(name)


def toml_literal(value: Any) -> str:
    """``value`` as a TOML literal on one line (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A TOML basic string: JSON's escapes (\" \\ \n \uXXXX) are TOML's too.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(str(k))} = {toml_literal(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def config_fix(key: str, value: Any) -> str:
    """The exact ``voipsec config set KEY VALUE`` line."""
    return f"voipsec config set {key} {shlex.quote(toml_literal(value))}"


def _zones_fix(zones: Sequence[ZoneSection]) -> str:
    return config_fix("zones", [z.model_dump(exclude_defaults=True) for z in zones])


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _joined(fixes: Sequence[str]) -> str:
    return "; ".join(dict.fromkeys(f for f in fixes if f))


# -- S: signaling -----------------------------------------------------------------------


def _exposed_zones(config: Config) -> list[ZoneSection]:
    """Zones that hold the internet: untrusted zones, the implicit "internet" one when
    none is named so (server.build_zone_map: addresses in no zone get it, with every
    transport), and trusted zones covering more public addresses than a trusted zone
    may (:func:`check_trusted_zone`; the zone named "internet" covers every address)."""
    zones = [
        z
        for z in config.zones
        if z.trust != "trusted" or any(_over_budget(_public_counts(zone_cidrs(z))))
    ]
    if not any(z.name == DEFAULT_ZONE for z in config.zones):
        zones.append(ZoneSection(name=DEFAULT_ZONE, cidrs=["0.0.0.0/0", "::/0"]))
    return zones


def check_plaintext_sip(config: Config) -> CheckResult:
    """UDP/TCP listeners fail when a zone that holds the internet accepts their transport
    (RFC 3261 §26.2.1: TLS for signaling); confined to trusted zones of private or
    small public blocks they pass, said so."""
    plain = [x for x in config.sip.listen if parse_listen(x).transport in ("udp", "tcp")]
    if not plain:
        return passed(PLAINTEXT_SIP, LOCAL, f"sip.listen: {', '.join(config.sip.listen)}")
    transports = {parse_listen(x).transport for x in plain}
    exposed = [z.name for z in _exposed_zones(config) if transports & set(z.transports)]
    if not exposed:
        trusted = [z.name for z in config.zones if z.trust == "trusted"]
        return passed(
            PLAINTEXT_SIP,
            LOCAL,
            f"{', '.join(plain)} accepted from trusted zones only ({', '.join(trusted)})",
        )
    keep = [x for x in config.sip.listen if x not in plain]
    if not keep:
        host = parse_listen(plain[0]).host
        keep = [f"tls:{f'[{host}]' if ':' in host else host}:5061"]
    return failed(
        PLAINTEXT_SIP,
        LOCAL,
        f"plaintext SIP on {', '.join(plain)}, accepted from zone {', '.join(exposed)}",
        config_fix("sip.listen", keep),
    )


def check_tls_version(config: Config) -> CheckResult:
    """tls.min_version: TLS 1.0/1.1 are deprecated (RFC 8996); the setting can only say
    1.2 or 1.3, so it passes with the value observed."""
    version = config.tls.min_version
    if version in ("1.2", "1.3"):
        return passed(TLS_VERSION, LOCAL, f"tls.min_version {version} (TLS {version} and newer)")
    return failed(  # pragma: no cover - the settings model allows only 1.2 and 1.3
        TLS_VERSION, LOCAL, f"tls.min_version {version}", config_fix("tls.min_version", "1.2")
    )


def _count(n: int, what: str) -> str:
    """``1 user``, ``2 users``."""
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _days(n: int) -> str:
    return _count(n, "day")


_CERT_LABELS = {"server": "server certificate", "ca": "CA certificate"}


def _cert_fix(cert: CertFact, data_dir: str) -> str:
    if cert.kind == "server":
        # voipsec init issues a new key and certificate from the CA when server.crt is
        # gone; voipsec serve loads them on SIGHUP (docs/audit.md).
        return f"rm {shlex.quote(cert.path)} && voipsec init --dir {shlex.quote(data_dir)}"
    return (
        "the CA cannot be renewed in place: voipsec init a new data directory, move the "
        "users to it and issue every device a certificate from its CA"
    )


def check_certificate_expiry(config: Config, facts: LocalFacts, now: float) -> CheckResult:
    """Server and CA certificates, and the CA's issued device certificates that are
    neither revoked nor renewed: expired, or within pki.expiry_warning_days, fails."""
    warn = config.pki.expiry_warning_days
    found: list[str] = []
    fixes: list[str] = []
    errors: list[str] = []
    ok: list[str] = []
    for cert in facts.certificates:
        label = _CERT_LABELS[cert.kind]
        if cert.not_after is None:
            errors.append(f"{label}: {cert.error}")
            continue
        if cert.foreign:
            found.append(f"{label} {cert.foreign}")
            fixes.append(_cert_fix(cert, facts.data_dir))
            continue
        if cert.not_before is not None and cert.not_before > now:
            found.append(f"{label} not valid for {_days(days_left(cert.not_before, now))} yet")
            fixes.append(_cert_fix(cert, facts.data_dir))
            continue
        state = validity_state(not_after=cert.not_after, now=now, warning_days=warn)
        left = days_left(cert.not_after, now)
        if state is CertState.OK:
            ok.append(f"{label} valid {_days(left)}")
            continue
        found.append(
            f"{label} expired"
            if state is CertState.EXPIRED
            else f"{label} expires in {_days(left)}"
        )
        fixes.append(_cert_fix(cert, facts.data_dir))
    statuses = certificate_statuses(facts.issued, now=now, warning_days=warn)
    current = [s for s in statuses if s.renewed_by is None]
    for s in current:
        if s.state in (CertState.EXPIRED, CertState.EXPIRING):
            found.append(f"device certificate {s.name} (serial {s.serial:x}) {s.label}")
            fixes.append(f"voipsec ca renew {shlex.quote(s.name)}")
    if facts.store_error:
        errors.append(f"device certificates: {facts.store_error}")
    if found:
        return failed(CERTIFICATE_EXPIRY, LOCAL, _listed(found), _joined(fixes))
    if errors:
        return errored(CERTIFICATE_EXPIRY, LOCAL, "; ".join(errors))
    valid = sum(s.state is CertState.OK for s in current)
    ok.append(f"{_count(valid, 'device certificate')} valid")
    return passed(CERTIFICATE_EXPIRY, LOCAL, ", ".join(ok))


def _special_fix(f: FileFact) -> str:
    """Put the real file in place of a device, FIFO or socket (or a link to one)."""
    return f"rm {shlex.quote(f.path)} and put the real {f.name} there (from a backup)"


def _relink_fix(f: FileFact) -> str:
    """A command that puts the file (or directory) a link points to in its place."""
    path = shlex.quote(f.path)
    mode = "700" if f.directory else "600"
    return f't="$(readlink -f {path})" && rm {path} && cp -a "$t" {path} && chmod {mode} {path}'


def check_file_permissions(facts: LocalFacts) -> CheckResult:
    """Keys, the database, the config, the TURN secret and the demo user's file: any
    group or other permission bit fails (chmod 600; the directory chmod 700), and so do
    a symbolic link, a second hard link and another owner than the data directory's;
    certificates and subdirectories must not be writable by group or others (chmod
    go-w); a directory above DIR writable by others without its sticky bit fails
    (chmod o-w). Files that are not there are not checked."""
    found: list[str] = []
    chmod_dir: list[str] = []
    chmod_file: list[str] = []
    chmod_public: list[str] = []
    parents: list[str] = []
    owners: list[str] = []
    relinks: list[str] = []
    present = 0
    for f in facts.files:
        if f.mode is None:
            continue
        path = shlex.quote(f.path)
        if f.parent:
            if f.mode & 0o002 and not f.mode & 0o1000:
                found.append(f"parent directory {f.path} is {f.mode & 0o777:04o}")
                parents.append(path)
            continue
        present += 1
        label = f.name or "the data directory"
        if f.symlink and f.special:
            found.append(f"{label} is a symbolic link to {f.special}")
            relinks.append(_special_fix(f))
            continue
        if f.symlink:
            found.append(f"{label} is a symbolic link")
            relinks.append(_relink_fix(f))
            continue
        if f.special:
            found.append(f"{label} is {f.special}, not a regular file")
            relinks.append(_special_fix(f))
            continue
        if facts.owner is not None and f.uid is not None and f.uid != facts.owner:
            found.append(f"{label} is owned by uid {f.uid}, not the data directory's owner")
            owners.append(path)
        if f.nlink > 1 and not f.directory:
            # The other link keeps the key where no mode protects it: copying this
            # one back in place does not take it back.
            leak = " (another keeps a copy: make a new key)" if f.name.endswith(".key") else ""
            found.append(f"{label} has {f.nlink} hard links{leak}")
            relinks.append(f"cp -p {path} {path}.new && mv {path}.new {path}")
        if f.mode & (0o022 if f.public else 0o077):
            found.append(f"{label} is {f.mode & 0o777:04o}")
            if f.public:
                chmod_public.append(path)
            else:
                (chmod_dir if f.directory else chmod_file).append(path)
    if not found:
        return passed(
            FILE_PERMISSIONS,
            LOCAL,
            f"{_count(present, 'file')} owner-only (data directory included)",
        )
    fixes = list(relinks)
    if owners:
        fixes.append(f"chown --reference={shlex.quote(facts.data_dir)} {' '.join(owners)}")
    if chmod_dir:
        fixes.append(f"chmod 700 {' '.join(chmod_dir)}")
    if chmod_file:
        fixes.append(f"chmod 600 {' '.join(chmod_file)}")
    if chmod_public:
        fixes.append(f"chmod go-w {' '.join(chmod_public)}")
    if parents:
        fixes.append(f"chmod o-w {' '.join(parents)}")
    return failed(FILE_PERMISSIONS, LOCAL, _listed(found), _joined(fixes))


# -- A: authentication ----------------------------------------------------------------------


def check_client_certificates(config: Config) -> CheckResult:
    """tls.client_cert "off" (or a TLS listener's ;client_cert=off) fails: presented
    device certificates would not be checked against the CA (RFC 5922)."""
    found: list[str] = []
    fixes: list[str] = []
    if config.tls.client_cert == "off":
        found.append('tls.client_cert "off"')
        fixes.append(config_fix("tls.client_cert", "optional"))
    off = [x for x in config.sip.listen if parse_listen(x).client_cert == "off"]
    if off:
        found.append(f"{', '.join(off)} asks no certificate")
        keep = [x.partition(";")[0] if x in off else x for x in config.sip.listen]
        fixes.append(config_fix("sip.listen", keep))
    if found:
        return failed(CLIENT_CERTIFICATES, LOCAL, "; ".join(found), _joined(fixes))
    return passed(
        CLIENT_CERTIFICATES, LOCAL, f"tls.client_cert {toml_literal(config.tls.client_cert)}"
    )


def check_digest_md5(config: Config) -> CheckResult:
    """MD5 among auth.algorithms fails (RFC 8760: SHA-256 for SIP; RFC 6151)."""
    algorithms = config.auth.algorithms
    observed = f"auth.algorithms {toml_literal(algorithms)}"
    if "MD5" in algorithms:
        return failed(DIGEST_MD5, LOCAL, observed, config_fix("auth.algorithms", ["SHA-256"]))
    return passed(DIGEST_MD5, LOCAL, observed)


def _user_fix(user: StoredUser) -> str:
    name = shlex.quote(user.name)
    cos = f" --class {shlex.quote(user.cos)}" if user.cos else ""
    return f"voipsec user remove {name} && voipsec user add {name}{cos}"


def check_weak_password(config: Config, facts: LocalFacts) -> CheckResult:
    """Users whose stored HA1 is that of a listed or name-derived password fail; the
    fix replaces the user with a random password (``user add`` prints it)."""
    if facts.store_error:
        return errored(WEAK_PASSWORD, LOCAL, f"users: {facts.store_error}")
    scan: PasswordScan = scan_passwords(facts.users, config.sip.domain, facts.common_passwords)
    if scan.weak:
        by_name = {u.name: u for u in facts.users}
        return failed(
            WEAK_PASSWORD,
            LOCAL,
            f"common or guessable password: user {_listed(list(scan.weak))}",
            _joined([_user_fix(by_name[n]) for n in scan.weak]),
        )
    candidates = f"{len(facts.common_passwords)} common passwords and name guesses"
    if scan.unchecked:
        return errored(
            WEAK_PASSWORD,
            LOCAL,
            f"{_count(scan.checked, 'user')} checked against {candidates}; {scan.unchecked} more "
            "not checked (MAX_PASSWORD_USERS)",
        )
    return passed(
        WEAK_PASSWORD, LOCAL, f"{_count(scan.checked, 'user')} checked against {candidates}"
    )


# -- M, E ----------------------------------------------------------------------------------


def check_srtp_required(config: Config) -> CheckResult:
    """media.srtp other than "required" fails (RFC 3711; NIST SP 800-58)."""
    observed = f"media.srtp {toml_literal(config.media.srtp)}"
    if config.media.srtp != "required":
        return failed(SRTP_REQUIRED, LOCAL, observed, config_fix("media.srtp", "required"))
    return passed(SRTP_REQUIRED, LOCAL, observed)


def _device_label(p: DevicePosture) -> str:
    what = " ".join(x for x in (p.vendor, p.model, p.version) if x) or "unknown device"
    notes = [a.id + (" (KEV)" if a.kev else "") for a in p.advisories]
    if p.status in ("restricted", "refused"):
        notes.append(f"status {p.status}")
    return f"device {p.id} ({p.user}, {what}): {', '.join(notes)}"


def check_endpoint_policy(config: Config, facts: LocalFacts) -> CheckResult:
    """endpoints.enabled false (no policy at REGISTER) fails; so do devices of the
    inventory whose firmware falls under an advisory, or that the policy restricted or
    refused, with the report's actions; an empty inventory passes."""
    if not config.endpoints.enabled:
        return failed(
            ENDPOINT_POLICY,
            LOCAL,
            "endpoints.enabled false: no device is judged at REGISTER",
            config_fix("endpoints.enabled", True),
        )
    if facts.store_error or facts.devices_error:
        return errored(
            ENDPOINT_POLICY, LOCAL, f"inventory: {facts.store_error or facts.devices_error}"
        )
    if not facts.devices:
        return passed(ENDPOINT_POLICY, LOCAL, "no device in the inventory")
    bad = [p for p in facts.devices if p.advisories or p.status in ("restricted", "refused")]
    if not bad:
        return passed(
            ENDPOINT_POLICY,
            LOCAL,
            f"{_count(len(facts.devices), 'device')}, none under an advisory",
        )
    fixes = [
        f"device {p.id}: {', '.join(p.actions) or f'voipsec devices show {p.id}'}"
        for p in bad[:MAX_LISTED]
    ]
    return failed(
        ENDPOINT_POLICY,
        LOCAL,
        _listed([_device_label(p) for p in bad]),
        _joined([*fixes, "voipsec devices report"]),
    )


# -- F, L ----------------------------------------------------------------------------------


def _zone_defaults() -> dict[str, Any]:
    fields = ZoneSection.model_fields
    return {k: fields[k].default for k in ("rate_requests", "rate_window", "rate_ban")}


def check_ids(config: Config) -> CheckResult:
    """ids.enabled off, a sanity check removed, or an untrusted zone whose ban is
    shorter than MIN_BAN_SECONDS or whose limit allows more than
    MAX_REQUESTS_PER_SECOND per source: failed."""
    found: list[str] = []
    fixes: list[str] = []
    if not config.ids.enabled:
        found.append("ids.enabled false")
        fixes.append(config_fix("ids.enabled", True))
    missing = [c for c in SANITY_CHECKS if c not in config.sanity.checks]
    if missing:
        found.append(f"sanity checks off: {', '.join(missing)}")
        fixes.append(config_fix("sanity.checks", list(SANITY_CHECKS)))
    weak = False
    for z in config.zones:
        if z.trust == "trusted":
            continue
        rate = z.rate_requests / z.rate_window
        if z.rate_ban < MIN_BAN_SECONDS:
            found.append(f"zone {z.name} bans for {z.rate_ban} s only")
            weak = True
        if rate > MAX_REQUESTS_PER_SECOND:
            found.append(f"zone {z.name} allows {rate:g} requests/s per source")
            weak = True
    if weak:
        fixes.append(_zones_fix(repaired_zones(config)))
    if found:
        return failed(IDS, LOCAL, "; ".join(found), _joined(fixes))
    return passed(IDS, LOCAL, "IDS on, every sanity check on, untrusted zones ban")


def check_fraud(config: Config) -> CheckResult:
    """fraud.enabled false fails."""
    if not config.fraud.enabled:
        return failed(FRAUD, LOCAL, "fraud.enabled false", config_fix("fraud.enabled", True))
    return passed(FRAUD, LOCAL, "fraud.enabled true")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_alerts(config: Config, facts: LocalFacts) -> CheckResult:
    """Alerts are always stored (``voipsec alerts list``), so no channel passes; a
    channel that leaves the host in clear (an http:// webhook, syslog over UDP to
    another host) or cannot work (alerts.smtp_ca not found) fails."""
    a = config.alerts
    found: list[str] = []
    fixes: list[str] = []
    channels = ["stored (voipsec alerts list)"]
    if a.webhook:
        url = urlsplit(a.webhook)
        host = url.hostname or ""
        channels.append(f"webhook {url.scheme}://{host}")
        if url.scheme == "http" and not _loopback(host):
            found.append(f"alerts.webhook is plain http to {host}")
            fixes.append(_WEBHOOK_FIX)
    if a.syslog:
        kind, _, rest = a.syslog.partition(":")
        channels.append(f"syslog {kind}")
        host = rest.rpartition(":")[0]
        if kind == "udp" and not _loopback(host):
            found.append(f"alerts.syslog sends in clear over UDP to {host}")
            fixes.append(config_fix("alerts.syslog", "unix:/dev/log"))
    if a.email_to:
        channels.append(f"e-mail to {_count(len(a.email_to), 'recipient')}")
        if facts.smtp_ca_present is False:
            found.append(f"alerts.smtp_ca {a.smtp_ca} not found: no e-mail can be sent")
            fixes.append(config_fix("alerts.smtp_ca", ""))
    if found:
        return failed(ALERTS, LOCAL, "; ".join(found), _joined(fixes))
    return passed(ALERTS, LOCAL, f"alerts {', '.join(channels)}")


#: The same webhook URL over https, without printing it (it may hold a token).
_WEBHOOK_FIX = (
    'voipsec config set alerts.webhook "\\"$(voipsec config get alerts.webhook'
    ' | sed s,^http:,https:,)\\""'
)
_METRICS_FIX = 'voipsec config set metrics.token "\\"$(openssl rand -hex 32)\\""'


def check_metrics_exposure(config: Config) -> CheckResult:
    """A metrics.token shorter than MIN_METRICS_TOKEN_LENGTH fails (the fix makes 64 hex
    digits); /metrics beyond loopback without a token fails (the metrics server asks no client
    certificate); so does allow_no_token without a token, wherever it listens."""
    m = config.metrics
    if not m.listen:
        return passed(METRICS_EXPOSURE, LOCAL, "metrics off")
    host = parse_listen(f"tls:{m.listen}").host
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if m.token and len(m.token) < MIN_METRICS_TOKEN_LENGTH:
        return failed(
            METRICS_EXPOSURE,
            LOCAL,
            f"metrics.token is {_count(len(m.token), 'character')}, fewer than "
            f"{MIN_METRICS_TOKEN_LENGTH}: guessable",
            _METRICS_FIX,
        )
    if m.token:
        return passed(METRICS_EXPOSURE, LOCAL, f"metrics on {m.listen} with a token")
    found: list[str] = []
    fixes: list[str] = []
    if not address.is_loopback:
        found.append(f"metrics on {m.listen} without a token")
        fixes.append(_METRICS_FIX)
    if m.allow_no_token:
        found.append("metrics.allow_no_token true")
        fixes.append(config_fix("metrics.allow_no_token", False))
    if found:
        return failed(METRICS_EXPOSURE, LOCAL, "; ".join(found), _joined(fixes))
    return passed(METRICS_EXPOSURE, LOCAL, f"metrics on loopback {m.listen}")


# -- O, W ----------------------------------------------------------------------------------


def _internal_overlap(cidr: str) -> str | None:
    """Why ``cidr`` reaches internal peers, or None (turnpeers.internal_reasons: the
    same rule as the live probe's fix, built on nat/peerfilter's normalisation)."""
    hits = internal_reasons(cidr)
    if not hits:
        return None
    return hits[0] if len(hits) == 1 else f"{len(hits)} internal ranges: {hits[0]}..."


def check_turn_peer_filter(config: Config) -> CheckResult:
    """turn.allowed_peers entries that overlap a denied special-purpose range (RFC 6890:
    loopback, RFC 1918, link-local and metadata, CGNAT, ULA...) or an IPv4-embedding
    IPv6 prefix fail (RFC 8656 §21); the fix keeps the others."""
    if not config.turn.listen:
        return passed(TURN_PEER_FILTER, LOCAL, "no TURN listener")
    opened = [(c, why) for c in config.turn.allowed_peers if (why := _internal_overlap(c))]
    if not opened:
        return passed(
            TURN_PEER_FILTER,
            LOCAL,
            f"turn.allowed_peers {toml_literal(config.turn.allowed_peers)}: no internal range",
        )
    bad = {c for c, _ in opened}
    keep = [c for c in config.turn.allowed_peers if c not in bad]
    return failed(
        TURN_PEER_FILTER,
        LOCAL,
        "turn.allowed_peers exempts " + _listed([f"{c} ({why})" for c, why in opened]),
        config_fix("turn.allowed_peers", keep),
    )


_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")
_SPECIAL_V4 = tuple(ipaddress.collapse_addresses(ipaddress.IPv4Network(c) for c, _ in DENIED_IPV4))
_SPECIAL_V6 = tuple(ipaddress.collapse_addresses(ipaddress.IPv6Network(c) for c, _ in DENIED_IPV6))
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _public_in(net: _Net) -> int:
    """How many globally routable addresses ``net`` holds: outside the special-purpose
    ranges (RFC 6890), and for IPv6 inside global unicast 2000::/3."""
    special: tuple[_Net, ...]
    if isinstance(net, ipaddress.IPv4Network):
        base: _Net = net
        special = _SPECIAL_V4
    elif net.subnet_of(_GLOBAL_V6):
        base, special = net, _SPECIAL_V6
    elif _GLOBAL_V6.subnet_of(net):
        base, special = _GLOBAL_V6, _SPECIAL_V6
    else:
        return 0
    total = base.num_addresses
    for s in special:
        if s.version != base.version:
            continue
        if base.subnet_of(s):  # type: ignore[arg-type]
            return 0
        if s.subnet_of(base):  # type: ignore[arg-type]
            total -= s.num_addresses
    return total


def _public_counts(cidrs: Sequence[str]) -> tuple[int, int]:
    """Public IPv4 and IPv6 addresses ``cidrs`` cover together (overlaps merged)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
    return sum(map(_public_in, v4)), sum(map(_public_in, v6))


def _over_budget(counts: tuple[int, int]) -> tuple[bool, bool]:
    return counts[0] > MAX_TRUSTED_PUBLIC_V4, counts[1] > MAX_TRUSTED_PUBLIC_V6


def _trust_repair(config: Config) -> tuple[list[ZoneSection], list[str], list[str]]:
    """The zones with public CIDRs dropped from trusted zones, in order, once the public
    addresses kept would exceed the budget (a zone left with nothing, or the "internet"
    zone, which covers every address whatever it lists, becomes untrusted); what was
    found; the small public blocks kept."""
    zones: list[ZoneSection] = []
    found: list[str] = []
    small: list[str] = []
    kept: list[str] = []
    for z in config.zones:
        if z.trust != "trusted":
            zones.append(z)
            continue
        dropped: list[str] = []
        for cidr in zone_cidrs(z):
            if not any(_public_counts([cidr])):
                continue
            if any(_over_budget(_public_counts([*kept, cidr]))):
                dropped.append(cidr)
            else:
                kept.append(cidr)
                small.append(f"{z.name} {cidr}")
        if not dropped:
            zones.append(z)
            continue
        implicit = z.name == DEFAULT_ZONE and not set(dropped) <= set(z.cidrs)
        what = ", ".join(dropped)
        if implicit:
            what = f"every address no other zone lists ({what})"
        found.append(f"trusted zone {z.name} covers {what}")
        rest = [c for c in z.cidrs if c not in dropped]
        untrust = implicit or not rest or z.name == DEFAULT_ZONE
        zones.append(
            z.model_copy(update={"trust": "untrusted"})
            if untrust
            else z.model_copy(update={"cidrs": rest})
        )
    return zones, found, small


def repaired_zones(config: Config) -> list[ZoneSection]:
    """One repair of the zones for W-trusted-zone and F-ids together, so that running
    either printed line fixes both: trusted zones cut to the budget, then untrusted
    zones that ban too briefly or allow too much given the defaults."""
    zones, _, _ = _trust_repair(config)
    defaults = _zone_defaults()
    return [
        z.model_copy(update=defaults)
        if z.trust != "trusted"
        and (
            z.rate_ban < MIN_BAN_SECONDS
            or z.rate_requests / z.rate_window > MAX_REQUESTS_PER_SECOND
        )
        else z
        for z in zones
    ]


def check_trusted_zone(config: Config) -> CheckResult:
    """Trusted zones (never rate limited or banned) covering more public addresses
    together than :data:`MAX_TRUSTED_PUBLIC_V4` / :data:`MAX_TRUSTED_PUBLIC_V6` fail (the
    zone named "internet" covers every address); within that they pass, named. The fix
    drops the CIDRs past the budget, or makes the zone untrusted (the same line as
    F-ids', both repairs in one)."""
    _, found, small = _trust_repair(config)
    if found:
        return failed(TRUSTED_ZONE, LOCAL, "; ".join(found), _zones_fix(repaired_zones(config)))
    trusted = [z.name for z in config.zones if z.trust == "trusted"]
    observed = (
        f"trusted zones {', '.join(trusted)}: no public range" if trusted else "no trusted zone"
    )
    if small:
        observed = f"trusted zones hold small public blocks only: {_listed(small)}"
    return passed(TRUSTED_ZONE, LOCAL, observed)


def check_dscp(config: Config) -> CheckResult:
    """sip.dscp or media.dscp 0 (unmarked) fails: CS3 for signaling and EF for voice
    (RFC 4594, RFC 3246) let the network queue them ahead of bulk data."""
    found: list[str] = []
    fixes: list[str] = []
    for key, value, section in (
        ("sip.dscp", config.sip.dscp, SipSection),
        ("media.dscp", config.media.dscp, MediaSection),
    ):
        if value == 0:
            found.append(f"{key} 0")
            fixes.append(config_fix(key, section.model_fields["dscp"].default))
    if found:
        return failed(DSCP, LOCAL, ", ".join(found) + " (unmarked)", _joined(fixes))
    return passed(DSCP, LOCAL, f"sip.dscp {config.sip.dscp}, media.dscp {config.media.dscp}")


def local_checks(config: Config, facts: LocalFacts, now: float) -> list[CheckResult]:
    """Every local check's result, in :data:`SPECS` order."""
    return [
        check_plaintext_sip(config),
        check_tls_version(config),
        check_certificate_expiry(config, facts, now),
        check_file_permissions(facts),
        check_client_certificates(config),
        check_digest_md5(config),
        check_weak_password(config, facts),
        check_srtp_required(config),
        check_endpoint_policy(config, facts),
        check_ids(config),
        check_fraud(config),
        check_alerts(config, facts),
        check_metrics_exposure(config),
        check_turn_peer_filter(config),
        check_trusted_zone(config),
        check_dscp(config),
    ]
