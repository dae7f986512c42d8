"""voipsec's one typed configuration: loaded from TOML, validated with clear errors.

Every key has a default (the secure one) and a comment in the file ``voipsec init``
writes. A bad file gives one line per problem — file, key, why — and
:class:`ConfigError`; the CLI turns that into a non-zero exit.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .checks import (
    DEFAULT_EMERGENCY_NUMBERS,
    MAX_EMAIL_RECIPIENTS,
    WebOrigin,
    check_email_address,
    check_emergency_numbers,
    check_sdp_attribute_names,
    check_url,
    parse_smtp_server,
)
from .template import DEFAULT_TOML as DEFAULT_TOML

CONFIG_NAME = "voipsec.toml"
#: The demo user's credentials `voipsec init` writes (0600); the audit reads them.
DEMO_FILE = "demo-user.txt"

TRANSPORTS = ("tls", "tcp", "udp", "wss")
ZoneTransport = Literal["tls", "tcp", "udp", "wss"]


#: At most this many signaling or relay processes (sip.workers, media.workers).
MAX_WORKERS = 64
#: Bytes of socket buffer (SO_RCVBUF and SO_SNDBUF) each SIP UDP listener asks for.
#: 4 MiB holds about two seconds of 250 calls/s (7 messages of ~1 kB each per call,
#: both legs) while a worker is busy; the kernel's default (~208 KiB) overflowed in
#: issue 16. The lowest value holds one largest datagram with the kernel's overhead;
#: the highest is far beyond what any net.core.rmem_max allows.
DEFAULT_UDP_BUFFER = 4 * 1024 * 1024
MIN_UDP_BUFFER = 128 * 1024
MAX_UDP_BUFFER = 256 * 1024 * 1024


def resolve_workers(setting: int) -> int:
    """0 means one process per core (at most MAX_WORKERS)."""
    if setting:
        return setting
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


CLIENT_CERT_MODES = ("required", "optional", "off")


class Listen(BaseModel):
    model_config = ConfigDict(frozen=True)
    transport: str
    host: str
    port: int
    #: Per-listener override of ``tls.client_cert`` (a zone of certificate-only phones).
    client_cert: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        tail = f";client_cert={self.client_cert}" if self.client_cert else ""
        return f"{self.transport}:{host}:{self.port}{tail}"


def parse_listen(text: str) -> Listen:
    """``tls:127.0.0.1:5061``, ``udp:[::1]:5060``, ``tls:127.0.0.1:5062;client_cert=required``."""
    text, _, options = text.partition(";")
    client_cert: str | None = None
    if options:
        name, eq, value = options.partition("=")
        if name != "client_cert" or not eq or value not in CLIENT_CERT_MODES:
            raise ValueError(
                f"{options!r}: the only listener option is client_cert=required|optional|off"
            )
        client_cert = value
    transport, sep, rest = text.partition(":")
    if not sep or transport not in TRANSPORTS:
        raise ValueError(f"{text!r}: transport must be one of {', '.join(TRANSPORTS)}")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: host must be an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    if client_cert is not None and transport != "tls":
        raise ValueError(f"{text!r}: client_cert applies to tls listeners only")
    return Listen(transport=transport, host=host, port=int(port_text), client_cert=client_cert)


def check_cidrs(value: list[str]) -> list[str]:
    """The one CIDR validator of every setting that lists networks."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a CIDR") from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SipSection(_Section):
    domain: str = "localhost"
    listen: list[str] = Field(default_factory=lambda: ["tls:127.0.0.1:5061"])
    #: Other names and addresses that mean "this server" in a Request-URI or AOR.
    aliases: list[str] = Field(default_factory=list)
    #: DSCP of SIP packets (24 = CS3, RFC 4594 signaling); 0 leaves the default.
    dscp: Annotated[int, Field(ge=0, le=63)] = 24
    #: Signaling processes sharing the listeners; 0 = one per core, 1 = one process.
    workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] = 0
    #: Socket buffer bytes asked for on each UDP listener (receive and send).
    udp_buffer: Annotated[int, Field(ge=MIN_UDP_BUFFER, le=MAX_UDP_BUFFER)] = DEFAULT_UDP_BUFFER
    websocket_origins: list[WebOrigin] = Field(default_factory=list)

    def worker_count(self) -> int:
        """How many signaling processes ``serve`` runs (0 resolved to the cores)."""
        return resolve_workers(self.workers)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one listen address is required")
        for item in value:
            parse_listen(item)
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not value or any(c in value for c in ' @:;<>"/'):
            raise ValueError(f"{value!r} is not a host name")
        return value.lower()

    def listeners(self) -> list[Listen]:
        return [parse_listen(x) for x in self.listen]


#: TLS 1.3 session tickets sent after a handshake by default: none. OpenSSL sends two
#: NewSessionTicket messages right after the handshake, and PJSIP/GnuTLS phones (Jami
#: 13.7) then lose the next SIP message and their REGISTER times out (issue 16). Phones
#: keep their connection open for hours, so resumption saves them little.
SESSION_TICKETS = 0

#: Most TLS 1.3 tickets a server may send per handshake: a client uses one ticket per
#: resumed connection, and OpenSSL's own default is 2; more only costs bytes.
MAX_SESSION_TICKETS = 8


class TlsSection(_Section):
    client_cert: Literal["required", "optional", "off"] = "optional"
    min_version: Literal["1.2", "1.3"] = "1.2"
    #: TLS 1.3 tickets sent after each handshake (0: none; see pki/tls.py).
    session_tickets: Annotated[int, Field(ge=0, le=MAX_SESSION_TICKETS)] = SESSION_TICKETS
    handshake_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    idle_timeout: Annotated[float, Field(gt=0, le=86_400)] = 900.0
    message_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_connections_per_ip: Annotated[int, Field(ge=1, le=100_000)] = 256
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000


#: Days before a certificate (device or server) expires from which it is listed as
#: expiring and alerted: a month leaves time to reach a desk phone.
EXPIRY_WARNING_DAYS = 30
#: Most warning days accepted: a year; more would warn about every certificate.
MAX_EXPIRY_WARNING_DAYS = 365


class PkiSection(_Section):
    #: Device certificates expiring within this many days are listed as expiring by
    #: ``voipsec ca list`` and alerted once a day (pki/lifecycle.py).
    expiry_warning_days: Annotated[int, Field(ge=1, le=MAX_EXPIRY_WARNING_DAYS)] = (
        EXPIRY_WARNING_DAYS
    )


class AuthSection(_Section):
    #: "digest": always digest (a presented certificate must still match the AOR);
    #: "cert_or_digest": a valid device certificate for the AOR replaces digest;
    #: "cert_and_digest": both factors.
    policy: Literal["digest", "cert_or_digest", "cert_and_digest"] = "digest"
    algorithms: list[Literal["SHA-256", "MD5"]] = Field(
        default_factory=lambda: list[Literal["SHA-256", "MD5"]](["SHA-256"])
    )
    nonce_lifetime: Annotated[int, Field(ge=10, le=3600)] = 300

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        return value


class RegistrarSection(_Section):
    min_expires: Annotated[int, Field(ge=1, le=86_400)] = 60
    max_expires: Annotated[int, Field(ge=1, le=86_400)] = 7200
    default_expires: Annotated[int, Field(ge=1, le=86_400)] = 3600
    max_contacts_per_aor: Annotated[int, Field(ge=1, le=100)] = 10


SrtpSuite = Literal[
    "AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"
]
#: ``media.max_streams``: its default and ceiling, media/streams.py's
#: DEFAULT_MAX_STREAMS and MAX_STREAMS (config does not import the relay; a unit
#: test holds them equal).
DEFAULT_MAX_STREAMS = 4
MAX_STREAMS = 8

SRTP_SUITES: tuple[SrtpSuite, ...] = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
)


class MediaSection(_Section):
    srtp: Literal["required", "optional", "off"] = "required"
    #: How SRTP is offered to the callee: "savp" (RTP/SAVP + a=crypto, RFC 4568) or
    #: "avp-crypto" (best effort: RTP/AVP + a=crypto; docs/media.md, "Optional SRTP").
    srtp_offer: Literal["savp", "avp-crypto"] = "savp"
    ports: str = "20000-20999"
    #: Address the relay binds and writes into SDP (c=, o=).
    address: str = "127.0.0.1"
    #: SDES suites voipsec accepts and offers, most preferred first.
    suites: list[SrtpSuite] = Field(default_factory=lambda: list[SrtpSuite](SRTP_SUITES))
    #: Seconds without one valid media packet, from a leg that must be sending (not
    #: on hold: media/direction.py), before an answered call is ended.
    timeout: Annotated[float, Field(ge=1, le=3600)] = 30.0
    #: DSCP of media packets (46 = EF, RFC 3246); 0 leaves the default.
    dscp: Annotated[int, Field(ge=0, le=63)] = 46
    #: CIDRs exempt from the deny list for media sent to a zone's or trunk's networks.
    allowed_peers: list[str] = Field(default_factory=list)
    #: Relay processes; 0 = one per core.
    workers: Annotated[int, Field(ge=0, le=MAX_WORKERS)] = 0
    #: SDP attribute names let through the B2BUA besides the built-in allow-list
    #: (media/sdp.py SDP_ATTRIBUTES_CROSSING), e.g. "extmap" or "ssrc".
    sdp_allow_attributes: list[str] = Field(default_factory=list)
    #: Media streams (m= lines) one call may have relayed; more are refused with
    #: port 0 (media/streams.py).
    max_streams: Annotated[int, Field(ge=1, le=MAX_STREAMS)] = DEFAULT_MAX_STREAMS
    #: Seconds a browser leg's DTLS-SRTP handshake may take from our SDP reaching it;
    #: then the call ends (docs/webrtc.md "Media for browsers").
    dtls_timeout: Annotated[float, Field(ge=1, le=60)] = 10.0

    def worker_count(self) -> int:
        """How many relay processes ``serve`` runs (0 resolved to the cores)."""
        return resolve_workers(self.workers)

    @field_validator("allowed_peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        return check_cidrs(value)

    @field_validator("sdp_allow_attributes")
    @classmethod
    def _sdp_attributes(cls, value: list[str]) -> list[str]:
        return check_sdp_attribute_names(value)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @field_validator("suites")
    @classmethod
    def _suites(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one SRTP suite is required")
        return value

    def port_range(self) -> tuple[int, int]:
        low, _, high = self.ports.partition("-")
        return int(low), int(high)

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        low, sep, high = value.partition("-")
        if not (sep and low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) < 65536):
            raise ValueError(f"{value!r}: expected LOW-HIGH with 1024 <= LOW < HIGH <= 65535")
        return value


class TurnSection(_Section):
    listen: list[str] = Field(default_factory=lambda: ["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"])
    allowed_peers: list[str] = Field(default_factory=list)

    @field_validator("allowed_peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        return check_cidrs(value)


class ZoneSection(_Section):
    name: str
    cidrs: list[str]
    trust: Literal["trusted", "untrusted"] = "untrusted"
    rate_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 16
    rate_window: Annotated[float, Field(gt=0, le=3600)] = 2.0
    rate_ban: Annotated[int, Field(ge=1, le=31_536_000)] = 300
    methods: list[str] = Field(default_factory=list)
    may_register: bool = True
    transports: list[ZoneTransport] = Field(
        default_factory=lambda: list[ZoneTransport](["tls", "tcp", "udp", "wss"])
    )
    #: Phones of this zone may name any address of its CIDRs in SDP, not only their own.
    media_in_zone: bool = False

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a zone needs at least one CIDR")
        return check_cidrs(value)


#: The zone every address in no listed zone gets (server.build_zone_map), whatever
#: CIDRs it lists itself: in effect it covers 0.0.0.0/0 and ::/0.
DEFAULT_ZONE = "internet"
_EVERYWHERE = ("0.0.0.0/0", "::/0")


def zone_cidrs(zone: ZoneSection) -> tuple[str, ...]:
    """The CIDRs ``zone`` in effect covers: its own, and for :data:`DEFAULT_ZONE` every
    address (it gets each address that no other zone lists)."""
    if zone.name == DEFAULT_ZONE:
        return tuple(dict.fromkeys((*zone.cidrs, *_EVERYWHERE)))
    return tuple(zone.cidrs)


def _default_zones() -> list[ZoneSection]:
    return [
        ZoneSection(name="loopback", cidrs=["127.0.0.0/8", "::1/128"], trust="trusted"),
        ZoneSection(name=DEFAULT_ZONE, cidrs=list(_EVERYWHERE)),
    ]


SANITY_CHECKS = ("max_forwards", "from_tag", "via_branch", "uri_scheme", "lengths")


class SanitySection(_Section):
    checks: list[Literal["max_forwards", "from_tag", "via_branch", "uri_scheme", "lengths"]] = (
        Field(default_factory=lambda: list(SANITY_CHECKS))  # type: ignore[arg-type]
    )
    #: "reply" answers the failure's status (400/483/416); "drop" stays silent.
    action: Literal["reply", "drop"] = "reply"


class IdsSection(_Section):
    enabled: bool = True
    #: Extra rule files (*.yaml) in this directory, relative to the data directory;
    #: re-read when they change.
    rules_dir: str = "rules"
    #: Server header value; empty sends none (no software version revealed).
    server_header: str = ""


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


CLASSES_OF_SERVICE = ("internal", "national", "international", "premium-rate")
ClassOfService = Literal["internal", "national", "international", "premium-rate"]


class CallsSection(_Section):
    #: Calls at once (both legs count as one call); more get 503.
    max_calls: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: Seconds a call may ring before the caller gets 408 and the callee a CANCEL.
    ring_timeout: Annotated[int, Field(ge=5, le=600)] = 60
    #: Seconds any call may last; at the limit both legs get a BYE.
    max_duration: Annotated[int, Field(ge=60, le=604_800)] = 14_400
    #: Seconds between in-dialog OPTIONS probes on both legs of an answered call; a
    #: leg answering 408/481 or nothing ends the call (the far end vanished). 0: off.
    probe_interval: Annotated[int, Field(ge=0, le=86_400)] = 300
    #: Dialled exactly (separators aside), these reach a trunk for every authenticated
    #: caller whatever its class of service or fraud limits (core/emergency.py); they
    #: must be the country's own. Empty: none (`serve` warns).
    emergency_numbers: list[str] = Field(default_factory=lambda: list(DEFAULT_EMERGENCY_NUMBERS))
    #: The trunk emergency calls go to; "": the dial plan's route of +<country code><number>.
    emergency_trunk: str = ""

    @field_validator("emergency_numbers")
    @classmethod
    def _emergency_numbers(cls, value: list[str]) -> list[str]:
        return check_emergency_numbers(value)


class DialplanSection(_Section):
    #: Country calling code of this site; national numbers become +<cc><number>.
    country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,2}$")] = "44"
    national_prefix: Annotated[str, Field(pattern=r"^[0-9]{0,3}$")] = "0"
    international_prefix: Annotated[str, Field(pattern=r"^[0-9]{1,4}$")] = "00"
    #: Class of service of users added without one.
    default_class: ClassOfService = "national"
    #: Directory (relative to the data directory) whose prefix files replace the
    #: shipped ones of the same name (premium-rate.txt).
    prefixes_dir: str = "dialplan"


class TrunkSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    #: Where calls to this trunk go: "tls:HOST:PORT" (TLS only).
    address: str
    #: Host of the Request-URI and To of calls sent to the trunk.
    domain: str
    #: Digest credentials voipsec answers the trunk's 401/407 with.
    username: str = ""
    password: str = Field(default="", repr=False)
    #: Register to the trunk with the credentials (for trunks that want it).
    registration: bool = False
    #: E.164 prefixes routed to this trunk; the longest matching prefix wins.
    prefixes: list[str] = Field(default_factory=list)
    #: Source CIDRs the trunk's calls come from (calls are never trusted by From).
    sources: list[str] = Field(default_factory=list)
    #: Inbound DID (E.164) to user name.
    dids: dict[str, str] = Field(default_factory=dict)
    #: CA file to verify the trunk's certificate; empty: voipsec's own CA.
    ca: str = ""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        listen = parse_listen(value)
        if listen.transport != "tls":
            raise ValueError(f"{value!r}: trunks are reached over TLS only")
        return value

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"\+[0-9]*", item):
                raise ValueError(f"{item!r} is not an E.164 prefix (+ and digits)")
        return value

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        return check_cidrs(value)

    @field_validator("dids")
    @classmethod
    def _dids(cls, value: dict[str, str]) -> dict[str, str]:
        for did in value:
            if not re.fullmatch(r"\+[1-9][0-9]{1,14}", did):
                raise ValueError(f"{did!r} is not an E.164 number")
        return value

    def listen(self) -> Listen:
        return parse_listen(self.address)


class FraudSection(_Section):
    enabled: bool = True
    #: Extra rule files (*.yaml) here replace shipped rules of the same id.
    rules_dir: str = "fraud"


class AlertsSection(_Section):
    #: HTTP(S) URL alerts are POSTed to as JSON (retried); empty: none.
    webhook: str = Field(default="", repr=False)
    #: Syslog target, "udp:HOST:PORT" or "unix:/dev/log"; empty: none.
    syslog: str = ""
    #: Addresses alerts are e-mailed to (retried); empty: no e-mail. The keys after it
    #: are checked against it, so it comes first (pydantic validates in this order).
    email_to: list[str] = Field(default_factory=list)
    email_from: str = Field(default="", validate_default=True)
    #: The SMTP server, "HOST[:PORT]"; the port defaults to 587 (starttls) or 465.
    smtp: str = Field(default="", validate_default=True)
    #: "starttls" (required, never plaintext) or "implicit" (TLS from the first byte).
    smtp_tls: Literal["starttls", "implicit"] = "starttls"
    #: CA file (relative to the data directory) for the server's certificate; empty:
    #: the system CAs.
    smtp_ca: str = ""
    #: SMTP AUTH (only ever over TLS) when both are set.
    smtp_user: str = ""
    smtp_password: str = Field(default="", repr=False)

    @field_validator("email_to")
    @classmethod
    def _email_to(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_EMAIL_RECIPIENTS:
            raise ValueError(f"at most {MAX_EMAIL_RECIPIENTS} addresses")
        for item in value:
            check_email_address(item)
        if len(set(value)) != len(value):
            raise ValueError("an address is listed twice")
        return value

    @field_validator("email_from")
    @classmethod
    def _email_from(cls, value: str, info: ValidationInfo) -> str:
        if value:
            return check_email_address(value)
        if info.data.get("email_to"):
            raise ValueError("required when email_to is set")
        return value

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str, info: ValidationInfo) -> str:
        if value:
            parse_smtp_server(value)
        elif info.data.get("email_to"):
            raise ValueError("required when email_to is set (HOST[:PORT])")
        return value

    @field_validator("smtp_user")
    @classmethod
    def _smtp_user(cls, value: str) -> str:
        # smtplib sends credentials as ASCII; a line break would end the command.
        if not all(33 <= ord(c) <= 126 for c in value):
            raise ValueError("must be printable ASCII without spaces")
        return value

    @field_validator("smtp_password")
    @classmethod
    def _smtp_password(cls, value: str, info: ValidationInfo) -> str:
        # Messages never repeat the password.
        if not all(32 <= ord(c) <= 126 for c in value):
            raise ValueError("must be printable ASCII")
        # A user without a password is accepted (so that `config set` can set the user
        # first); the dispatcher then sends without AUTH and says so at start.
        if value and not info.data.get("smtp_user"):
            raise ValueError("needs smtp_user")
        return value


class SipLogSection(_Section):
    #: JSON-lines log of every SIP message (secrets redacted); off by default.
    enabled: bool = False
    path: str = "sip.log"
    max_bytes: Annotated[int, Field(ge=4096, le=10_000_000_000)] = 50_000_000
    backups: Annotated[int, Field(ge=0, le=100)] = 5


class HepSection(_Section):
    #: Homer collector, "udp:HOST:PORT" or "tcp:HOST:PORT"; empty: no HEP export.
    target: str = ""
    capture_id: Annotated[int, Field(ge=0, le=2**32 - 1)] = 2001
    auth_key: str = Field(default="", repr=False)
    #: Digest responses, nonces and SDP keys replaced by "<redacted>" as in the SIP
    #: log. False exports them in clear (logged as a warning at start): labs only.
    redact: bool = True

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value:
            listen = parse_listen(value)
            if listen.transport not in ("udp", "tcp"):
                raise ValueError(f"{value!r}: expected udp:HOST:PORT or tcp:HOST:PORT")
        return value


class MetricsSection(_Section):
    #: HTTPS address of /metrics (the web port); empty: no metrics server.
    listen: str = "127.0.0.1:8443"
    #: Bearer token /metrics requires; empty: none (loopback only by default).
    token: str = Field(default="", repr=False)
    #: Serve /metrics without a token on an address that is not loopback (logs a
    #: warning); off, such a configuration is refused (fails closed).
    allow_no_token: bool = Field(default=False, validate_default=True)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            parse_listen(f"tls:{value}")
        return value

    @field_validator("allow_no_token")
    @classmethod
    def _token_beyond_loopback(cls, value: bool, info: ValidationInfo) -> bool:
        # Runs after listen and token (declared before it); a bad listen is reported there.
        listen, token = info.data.get("listen"), info.data.get("token")
        if value or token or not listen:
            return value
        address = ipaddress.ip_address(parse_listen(f"tls:{listen}").host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_loopback:
            raise ValueError(
                f"metrics.listen {listen} is not loopback: set metrics.token "
                "(or metrics.allow_no_token = true)"
            )
        return value


#: CDR operations queued while the database is slow or gone ([cdr] max_pending). A call
#: makes 3-4 (open, answer, media, end) of about 1 KB each: 100,000 is ~25,000 calls and
#: ~100 MB at worst, about an hour of a busy small system's calls.
CDR_MAX_PENDING = 100_000


class CdrSection(_Section):
    #: Where call detail records go: "" is voipsec.db in the data directory;
    #: "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE" a PostgreSQL server.
    url: str = Field(default="", repr=False)
    #: Operations the CDR writer queues while the database is unavailable; past it they
    #: are dropped, counted and alerted (docs/storage.md).
    max_pending: Annotated[int, Field(ge=1, le=10_000_000)] = CDR_MAX_PENDING

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_url(value)  # its messages never repeat the URL (it may hold a password)
        return value


#: Graded actions of the endpoint policy (endpoints/policy.py), mildest first.
PolicyAction = Literal["allow", "warn", "restrict", "refuse"]
#: Entries of endpoints.minimum_firmware (a site lists its phone models: tens).
MAX_MINIMUM_FIRMWARE = 500
_FIRMWARE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}(?:/[A-Za-z0-9*?._-]{1,64})?$")
# A version as endpoints/versions.py reads it: starts with a number, at most 64 chars.
_FIRMWARE_VERSION = re.compile(r"^[0-9][0-9A-Za-z.()+_-]{0,63}$")


#: ``[endpoints.zones.*]`` and ``[endpoints.classes.*]`` tables together: one per zone
#: and class is plenty; the bound keeps the per-device resolution cheap.
MAX_POLICY_OVERRIDES = 64


def _check_minimum_firmware(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_MINIMUM_FIRMWARE:
        raise ValueError(f"at most {MAX_MINIMUM_FIRMWARE} entries")
    for key, version in value.items():
        if not _FIRMWARE_KEY.match(key):
            raise ValueError(f"{key[:80]!r} is not 'Vendor' or 'Vendor/MODEL-PATTERN'")
        if not _FIRMWARE_VERSION.match(version):
            raise ValueError(f"{key!r}: {version[:80]!r} is not a version (e.g. 1.0.7.81)")
    return value


class EndpointsOverrideSection(_Section):
    """``[endpoints.zones.<zone>]`` / ``[endpoints.classes.<class>]``: only the keys
    given apply, and only where stricter than ``[endpoints]`` (endpoints/policy.py
    ``effective_settings``)."""

    kev_advisory: PolicyAction | None = None
    advisory: PolicyAction | None = None
    unknown_user_agent: PolicyAction | None = None
    md5_digest: PolicyAction | None = None
    tls12: PolicyAction | None = None
    below_minimum: PolicyAction | None = None
    minimum_firmware: dict[str, str] = Field(default_factory=dict)
    missing_certificate: PolicyAction | None = None
    expiring_certificate: PolicyAction | None = None
    no_srtp_offer: PolicyAction | None = None

    @field_validator("minimum_firmware")
    @classmethod
    def _minimum_firmware(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_minimum_firmware(value)


class EndpointsSection(_Section):
    """The endpoint policy at REGISTER and INVITE (docs/endpoints.md "Policy"). Safe
    defaults: only a KEV-listed advisory refuses; the rest warns or is allowed."""

    enabled: bool = True
    kev_advisory: PolicyAction = "refuse"
    advisory: PolicyAction = "warn"
    unknown_user_agent: PolicyAction = "warn"
    md5_digest: PolicyAction = "warn"
    tls12: PolicyAction = "allow"
    below_minimum: PolicyAction = "warn"
    minimum_firmware: dict[str, str] = Field(default_factory=dict)
    missing_certificate: PolicyAction = "allow"
    #: "Expiring" means within ``pki.expiry_warning_days`` (one setting for the CA's
    #: alerts and this policy).
    expiring_certificate: PolicyAction = "warn"
    #: At INVITE from a registered device: an offer with no SRTP. ``restrict`` routes
    #: that call as a restricted device's (internal users and emergency numbers).
    no_srtp_offer: PolicyAction = "warn"
    #: Per zone (a ``[[zones]]`` name) and per class of service: stricter actions.
    zones: dict[str, EndpointsOverrideSection] = Field(default_factory=dict)
    classes: dict[str, EndpointsOverrideSection] = Field(default_factory=dict)

    @field_validator("minimum_firmware")
    @classmethod
    def _minimum_firmware(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_minimum_firmware(value)

    @field_validator("classes")
    @classmethod
    def _classes(
        cls, value: dict[str, EndpointsOverrideSection]
    ) -> dict[str, EndpointsOverrideSection]:
        for name in value:
            if name not in CLASSES_OF_SERVICE:
                raise ValueError(
                    f"no class of service named {name[:64]!r} "
                    f"(one of {', '.join(CLASSES_OF_SERVICE)})"
                )
        return value

    @model_validator(mode="after")
    def _overrides(self) -> EndpointsSection:
        if len(self.zones) + len(self.classes) > MAX_POLICY_OVERRIDES:
            raise ValueError(f"at most {MAX_POLICY_OVERRIDES} zone and class tables in all")
        return self


class Config(_Section):
    sip: SipSection = Field(default_factory=SipSection)
    tls: TlsSection = Field(default_factory=TlsSection)
    pki: PkiSection = Field(default_factory=PkiSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    registrar: RegistrarSection = Field(default_factory=RegistrarSection)
    media: MediaSection = Field(default_factory=MediaSection)
    turn: TurnSection = Field(default_factory=TurnSection)
    log: LogSection = Field(default_factory=LogSection)
    ids: IdsSection = Field(default_factory=IdsSection)
    sanity: SanitySection = Field(default_factory=SanitySection)
    zones: list[ZoneSection] = Field(default_factory=_default_zones)
    calls: CallsSection = Field(default_factory=CallsSection)
    dialplan: DialplanSection = Field(default_factory=DialplanSection)
    trunks: list[TrunkSection] = Field(default_factory=list)
    fraud: FraudSection = Field(default_factory=FraudSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    siplog: SipLogSection = Field(default_factory=SipLogSection)
    hep: HepSection = Field(default_factory=HepSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    cdr: CdrSection = Field(default_factory=CdrSection)
    endpoints: EndpointsSection = Field(default_factory=EndpointsSection)

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: list[ZoneSection]) -> list[ZoneSection]:
        names = [z.name for z in value]
        if len(set(names)) != len(names):
            raise ValueError("zone names must be unique")
        return value

    @field_validator("trunks")
    @classmethod
    def _trunks(cls, value: list[TrunkSection]) -> list[TrunkSection]:
        names = [t.name for t in value]
        if len(set(names)) != len(names):
            raise ValueError("trunk names must be unique")
        return value

    @model_validator(mode="after")
    def _endpoint_zones(self) -> Config:
        """Each ``[endpoints.zones.<zone>]`` names a configured zone (a typo would leave
        the zone on the global policy unnoticed)."""
        names = {z.name for z in self.zones}
        for name in self.endpoints.zones:
            if name not in names:
                raise ValueError(f"endpoints.zones: no zone named {name[:64]!r}")
        return self

    @model_validator(mode="after")
    def _emergency_trunk(self) -> Config:
        """calls.emergency_trunk names a configured trunk: a typo found at the first
        emergency call would fail it (fails closed at load instead)."""
        name = self.calls.emergency_trunk
        if name and name not in {t.name for t in self.trunks}:
            raise ValueError(f"calls.emergency_trunk: no trunk named {name[:64]!r}")
        return self

    @model_validator(mode="after")
    def _wss_without_required_certificates(self) -> Config:
        """A wss listener asks for no client certificate (a browser would prompt its
        user), so beside tls.client_cert = "required" it would let devices in without
        one: refused rather than silently weaker (fails closed)."""
        wss = [x for x in self.sip.listen if parse_listen(x).transport == "wss"]
        if wss and self.tls.client_cert == "required":
            raise ValueError(
                f"sip.listen: {wss[0]} takes no client certificate, which "
                'tls.client_cert = "required" demands of every device: remove the wss '
                "listener or relax tls.client_cert"
            )
        return self


def _format_errors(path: Path, err: ValidationError) -> list[str]:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{path}: {key}: {msg}")
    return lines


def validate(data: dict[str, Any], path: Path) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(path, err)) from None


#: Bytes of voipsec.toml read: the shipped one is a few KiB, a site's with trunks and
#: zones a few dozen; a link to /dev/zero must not exhaust memory.
MAX_CONFIG_BYTES = 1024 * 1024


def _read_config_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it is not a regular file (a FIFO is opened
    without blocking) or is larger than MAX_CONFIG_BYTES."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return None if size > MAX_CONFIG_BYTES else b"".join(chunks)


def load(path: Path, *, refuse_readable_secrets: bool = True) -> Config:
    """Read and validate a config file; ConfigError with one line per problem.

    A file holding secrets that others may read is refused, unless
    ``refuse_readable_secrets`` is False (``voipsec audit`` reads it to report it).
    """
    try:
        raw = _read_config_bytes(path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (run `voipsec init`)"]) from None
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    if raw is None:
        raise ConfigError([f"{path}: not a regular file of at most {MAX_CONFIG_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path}: not valid TOML: {err}"]) from None
    config = validate(data, path)
    if refuse_readable_secrets:
        _check_secrets_private(path, config)
    return config


def _secrets_in(config: Config) -> list[str]:
    """What secret the file holds, in words (never the secret itself)."""
    found = []
    if any(t.password for t in config.trunks):
        found.append("trunk passwords")
    if urlsplit(config.cdr.url).password:
        found.append("a CDR database password")
    if config.hep.auth_key:
        found.append("a HEP auth key")
    if config.metrics.token:
        found.append("a metrics token")
    if config.alerts.smtp_password:
        found.append("an SMTP password")
    return found


def _check_secrets_private(path: Path, config: Config) -> None:
    """Secrets live in the file: refuse it when others can read it (fail closed)."""
    secrets = _secrets_in(config)
    if not secrets:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        what = " and ".join(secrets)
        raise ConfigError([f"{path}: holds {what} but others may read it (run: chmod 600 {path})"])


def get_key(path: Path, key: str) -> Any:
    """The effective value of ``section.name`` (the default when the file omits it)."""
    config = load(path)
    node: Any = config.model_dump()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError([f"{path}: {key}: unknown key"])
        node = node[part]
    return node


def set_key(path: Path, key: str, literal: str) -> None:
    """Set ``section.name`` to a TOML literal, keeping comments; validates before writing."""
    section, dot, name = key.partition(".")
    if not dot and key in _TABLE_ARRAYS:
        _set_table_array(path, key, literal)
        return
    if not dot or not name or "." in name:
        raise ConfigError([f"{path}: {key}: expected SECTION.KEY"])
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(
            [f"{path}: {key}: {literal!r} is not a TOML literal (quote strings)"]
        ) from None
    import tomlkit  # only `config set` edits the file: no serving process pays its import

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc[section] = table
    table[name] = value
    validate(tomllib.loads(tomlkit.dumps(doc)), path)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    # The file may hold trunk passwords: only its owner reads it.
    path.chmod(0o600)


#: Top-level keys that are arrays of tables, set whole: `config set trunks '[{...}]'`.
_TABLE_ARRAYS = ("zones", "trunks")


def _set_table_array(path: Path, key: str, literal: str) -> None:
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(
            [f"{path}: {key}: {literal!r} is not a TOML literal (an array of tables)"]
        ) from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError([f"{path}: {key}: expected an array of tables, e.g. [{{name = ...}}]"])
    import tomlkit  # as in set_key

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    tables = tomlkit.aot()
    for item in value:
        table = tomlkit.table()
        table.update(item)
        tables.append(table)
    doc[key] = tables
    validate(tomllib.loads(tomlkit.dumps(doc)), path)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    path.chmod(0o600)
