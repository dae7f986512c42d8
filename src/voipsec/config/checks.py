"""Value checks shared by the configuration and the features that use the values.

Why here: ``voipsec.config`` validates every key when the file is loaded, and must
import no feature module (it sits below them all); the CDR store and the alert
dispatcher check the same values again when they are handed them directly. So the
checks live once, below both. Every check raises ValueError with one line that never
repeats a secret (a CDR URL may hold a password).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

__all__ = [
    "DEFAULT_EMERGENCY_NUMBERS",
    "MAX_EMAIL_ADDRESS",
    "MAX_EMAIL_RECIPIENTS",
    "MAX_EMERGENCY_DIGITS",
    "MAX_EMERGENCY_NUMBERS",
    "MAX_SDP_ALLOW_ATTRIBUTES",
    "MIN_EMERGENCY_DIGITS",
    "POSTGRES_SCHEMES",
    "SDP_NEVER_CROSSING",
    "WebOrigin",
    "check_email_address",
    "check_emergency_numbers",
    "check_origin",
    "check_sdp_attribute_names",
    "check_url",
    "never_crossing",
    "parse_smtp_server",
]

# -- CDR database URL ------------------------------------------------------------------

#: URL schemes of PostgreSQL (libpq accepts both).
POSTGRES_SCHEMES = ("postgresql", "postgres")

_URL_HELP = '"" (SQLite in the data directory) or postgresql://USER@HOST:PORT/DATABASE'


def check_url(url: str) -> None:
    """Refuse a CDR URL voipsec cannot use; the message never repeats the URL."""
    if not url:
        return
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        raise ValueError(f"expected {_URL_HELP}")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("the URL must not contain spaces or control characters")
    parts = urlsplit(url)
    if "," not in parts.netloc:  # libpq's host1:port1,host2:port2 is not urlsplit's
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise ValueError("the port of the CDR URL must be a number 1-65535") from None


# -- e-mail ----------------------------------------------------------------------------

#: Longest e-mail address: RFC 5321 §4.5.3.1.3 limits a path to 256 octets, the
#: angle brackets included.
MAX_EMAIL_ADDRESS = 254
#: Longest local part (RFC 5321 §4.5.3.1.1).
_MAX_LOCAL_PART = 64
#: Recipients of one alert e-mail: RFC 5321 §4.5.3.1.8 makes servers accept at least
#: 100 RCPT commands per message; more may be refused.
MAX_EMAIL_RECIPIENTS = 100

#: RFC 5321 §4.1.2 Dot-string atoms (ASCII only: no SMTPUTF8) @ an RFC 1035 host name.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def check_email_address(text: str) -> str:
    """``text`` if it is a plain ``local@domain`` address; ValueError (one line) if not.

    Only what goes into a header and an SMTP command unquoted: no display name, no
    quoted local part, no spaces or line breaks (nothing can inject a header).
    """
    if len(text) > MAX_EMAIL_ADDRESS:
        raise ValueError(f"an e-mail address is at most {MAX_EMAIL_ADDRESS} characters")
    if not _ADDRESS.fullmatch(text) or len(text.partition("@")[0]) > _MAX_LOCAL_PART:
        raise ValueError(f"{text!r} is not an e-mail address (local@domain)")
    return text


def parse_smtp_server(text: str) -> tuple[str, int | None]:
    """``HOST[:PORT]`` (IPv6 as ``[ADDR]:PORT``) as (host, port or None); ValueError if bad."""
    problem = f"{text!r}: expected HOST[:PORT]"
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(problem)
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(problem) from None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _HOST_NAME.fullmatch(host) or len(host) > 253:
            raise ValueError(problem)
    if port_text is None:
        return host, None
    if not port_text.isdigit():
        raise ValueError(problem)
    if not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return host, int(port_text)


# -- SDP attributes an admin lets through the B2BUA (media.sdp_allow_attributes) -------

#: Extra attribute names an admin may allow. The media path needs about a dozen
#: (media/sdp.py SDP_ATTRIBUTES_CROSSING); video/WebRTC adds perhaps ten more.
MAX_SDP_ALLOW_ATTRIBUTES = 32
#: Attributes no configuration lets cross from one leg's SDP to the other's: they name
#: an endpoint's addresses or transport candidates (RFC 3605 a=rtcp, RFC 8839 ICE), or
#: they belong to the relay, which terminates media and writes its own: the SRTP keys
#: (RFC 4568 a=crypto), RTCP multiplexing (RFC 5761) and DTLS-SRTP's certificate and
#: role (RFC 8122 a=fingerprint, RFC 4145 a=setup), which the relay does not speak.
SDP_NEVER_CROSSING = frozenset(
    {
        "rtcp",
        "candidate",
        "remote-candidates",
        "end-of-candidates",
        "crypto",
        "rtcp-mux",
        "rtcp-mux-only",
        "fingerprint",
        "setup",
        "tls-id",
    }
)
#: RFC 8866 §9 token: an attribute name.
_SDP_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}")


def never_crossing(name: str) -> bool:
    """Whether attribute ``name`` may never cross (:data:`SDP_NEVER_CROSSING`, ice-*)."""
    return name in SDP_NEVER_CROSSING or name.startswith("ice-")


def check_sdp_attribute_names(names: list[str]) -> list[str]:
    """``names`` if each is an attribute name that may be allowed across the B2BUA."""
    if len(names) > MAX_SDP_ALLOW_ATTRIBUTES:
        raise ValueError(f"at most {MAX_SDP_ALLOW_ATTRIBUTES} attribute names")
    for name in names:
        if not _SDP_TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not an SDP attribute name (without a= or :)")
        if never_crossing(name):
            raise ValueError(
                f"{name!r} never crosses: it names an endpoint's address or the relay's own"
            )
    return names


# -- WebSocket origins (sip.websocket_origins) -----------------------------------------


def check_origin(text: str) -> str:
    """A web origin as browsers send it (RFC 6454 §6.1): ``https://host[:port]``,
    lower-cased; no path, no trailing slash, no wildcard (each page is named)."""
    origin = text.lower()
    if re.fullmatch(r"https?://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?", origin) is None:
        raise ValueError(f"{text!r} is not an origin like https://example.com or https://host:8443")
    return origin


#: One entry of sip.websocket_origins, checked and lower-cased when the file is loaded.
WebOrigin = Annotated[str, AfterValidator(check_origin)]


# -- emergency numbers (calls.emergency_numbers; core/emergency.py) --------------------

#: The common short emergency numbers: 112 (EU-wide and GSM, ETSI TS 122 101 §10.1),
#: 911 (NANP), 999 (UK and others), 000 (Australia). A site sets its country's own.
DEFAULT_EMERGENCY_NUMBERS = ("112", "911", "999", "000")
#: Short codes are at least 2 digits (Germany's 110, Belgium's 100 have 3; a few
#: countries use 2-digit codes such as 17 or 18 in France).
MIN_EMERGENCY_DIGITS = 2
#: 8 digits covers every service short code in ITU-T E.164 Supplement 4 / national
#: plans we know of (116xxx in the EU is 6); longer is a subscriber number, which must
#: go through the class of service like any other.
MAX_EMERGENCY_DIGITS = 8
#: More than a country's emergency and urgent-care codes, fewer than a list that
#: would turn the class-of-service bypass into a loophole.
MAX_EMERGENCY_NUMBERS = 16
_EMERGENCY_NUMBER = re.compile(f"[0-9]{{{MIN_EMERGENCY_DIGITS},{MAX_EMERGENCY_DIGITS}}}")


def check_emergency_numbers(numbers: list[str]) -> list[str]:
    """``numbers`` if each is 2 to 8 ASCII digits, none twice, at most
    :data:`MAX_EMERGENCY_NUMBERS` of them. These bypass every class of service and
    fraud limit, so anything unexpected is refused rather than guessed at."""
    if len(numbers) > MAX_EMERGENCY_NUMBERS:
        raise ValueError(f"at most {MAX_EMERGENCY_NUMBERS} emergency numbers")
    for number in numbers:
        if _EMERGENCY_NUMBER.fullmatch(number) is None:
            raise ValueError(
                f"{number[:16]!r} is not an emergency number "
                f"({MIN_EMERGENCY_DIGITS} to {MAX_EMERGENCY_DIGITS} digits, no '+')"
            )
    if len(set(numbers)) != len(numbers):
        raise ValueError("an emergency number is listed twice")
    return numbers
