"""Parser and serializer of SIP messages (voipsec.sip.message)."""

from __future__ import annotations

import pytest

from voipsec.sip import limits
from voipsec.sip.errors import SipParseError
from voipsec.sip.headers import Header
from voipsec.sip.message import (
    VIA_CACHE_SIZE,
    CSeq,
    Request,
    Response,
    Via,
    error_response_bytes,
    is_rfc3261_branch,
    parse_cseq,
    parse_delta,
    parse_message,
    parse_via,
    response_to,
    sip_uri,
    split_head,
    top_via_with_received,
)
from voipsec.sip.uri import AbsoluteUri, NameAddr, SipUri

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sips:alice@192.0.2.10:5061;transport=tls>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 14\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1\r\n"
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.1>;expires=3600, <sip:alice@198.51.100.7>;q=0.5\r\n"
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;received=192.0.2.1\r\n"
    b"To: <sip:alice@example.com>;tag=2493k59kd\r\n"
    b"From: <sip:alice@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.1>;expires=3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

UNAUTHORIZED = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n"
    b"To: <sip:alice@example.com>;tag=2493k59kd\r\n"
    b"From: <sip:alice@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"\r\n'
    b'WWW-Authenticate: Digest realm="example.com", nonce="n1", algorithm=MD5, qop="auth"\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def _with(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def _error(data: bytes, *, datagram: bool = True) -> tuple[int, str]:
    with pytest.raises(SipParseError) as info:
        parse_message(data, datagram=datagram)
    return info.value.status, info.value.reason


# -- round trip -------------------------------------------------------------------


@pytest.mark.parametrize("data", [INVITE, REGISTER, OK, UNAUTHORIZED])
def test_message_canonical_round_trip(data: bytes) -> None:
    assert parse_message(data).to_bytes() == data
    assert parse_message(data, datagram=False).to_bytes() == data


def test_message_request_fields() -> None:
    request = _request(INVITE)
    assert request.method == "INVITE"
    assert request.raw_uri == "sip:bob@example.com"
    assert request.uri == SipUri(scheme="sip", user="bob", host="example.com", port=None)
    assert request.version == "SIP/2.0"
    assert request.body == b"v=0\r\no=- 1 1\r\n"
    assert request.call_id == "a84b4c76e66710@pc33.example.com"


def test_message_response_fields() -> None:
    response = _response(OK)
    assert (response.status, response.reason, response.version) == (200, "OK", "SIP/2.0")
    assert response.body == b""
    assert response.cseq == CSeq(seq=1826, method="REGISTER")


def test_message_leading_crlf_is_ignored() -> None:
    # RFC 3261 §7.5: CRLFs before the start line are skipped.
    assert parse_message(b"\r\n\r\n" + REGISTER).to_bytes() == REGISTER


def test_message_bare_lf_line_endings_parse() -> None:
    request = _request(REGISTER.replace(b"\r\n", b"\n"))
    assert request.cseq == CSeq(seq=1826, method="REGISTER")
    assert request.to_bytes() == REGISTER


def test_message_header_names_keep_their_spelling() -> None:
    data = _with(REGISTER, b"Max-Forwards: 70", b"MAX-forwards: 70")
    request = _request(data)
    assert request.headers.get("max-forwards") == "70"
    assert request.to_bytes() == data


# -- compact forms, folding, lists ------------------------------------------------

COMPACT = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc1\r\n"
    b"i: compact@example.com\r\n"
    b"f: <sip:alice@example.com>;tag=1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"m: <sip:alice@192.0.2.1>\r\n"
    b"c: application/sdp\r\n"
    b"k: timer\r\n"
    b"s: lunch\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_message_compact_forms_map_to_full_names() -> None:
    request = _request(COMPACT)
    keys = [(h.name, h.key) for h in request.headers]
    assert keys == [
        ("v", "via"),
        ("i", "call-id"),
        ("f", "from"),
        ("t", "to"),
        ("m", "contact"),
        ("c", "content-type"),
        ("k", "supported"),
        ("s", "subject"),
        ("CSeq", "cseq"),
        ("l", "content-length"),
    ]
    assert request.headers.get("Call-ID") == "compact@example.com"
    assert request.headers.get("Content-Type") == "application/sdp"
    assert request.headers.get("Supported") == "timer"
    assert request.headers.get("Subject") == "lunch"
    assert request.headers.get("Content-Length") == "4"
    assert request.top_via.branch == "z9hG4bKc1"
    assert request.from_.tag == "1"
    assert str(request.to.uri) == "sip:bob@example.com"
    assert str(request.contacts[0].uri) == "sip:alice@192.0.2.1"
    assert request.body == b"v=0\n"
    assert request.to_bytes() == COMPACT


def test_message_folded_header_unfolds() -> None:
    data = _with(REGISTER, b"Expires: 7200\r\n", b"Subject: I know\r\n   you're\r\n\tthere\r\n")
    request = _request(data)
    assert request.headers.get("subject") == "I know you're there"
    assert b"Subject: I know you're there\r\n" in request.to_bytes()


def test_message_folded_via_unfolds() -> None:
    data = _with(
        REGISTER,
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n",
        b"Via: SIP/2.0/UDP 192.0.2.1:5060\r\n ;branch=z9hG4bKnashds7\r\n",
    )
    assert _request(data).top_via.branch == "z9hG4bKnashds7"


def test_message_continuation_before_first_header_is_400() -> None:
    data = _with(REGISTER, b"SIP/2.0\r\n", b"SIP/2.0\r\n folded\r\n")
    assert _error(data) == (400, "continuation line before first header")


def test_message_via_values_split_on_commas_and_lines() -> None:
    data = _with(
        REGISTER,
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n",
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa, SIP/2.0/TCP [2001:db8::1]:5070"
        b";branch=z9hG4bKb\r\nv: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKc\r\n",
    )
    request = _request(data)
    assert request.vias == (
        Via(transport="UDP", host="192.0.2.1", port=5060, params=(("branch", "z9hG4bKa"),)),
        Via(transport="TCP", host="[2001:db8::1]", port=5070, params=(("branch", "z9hG4bKb"),)),
        Via(transport="TLS", host="proxy.example.com", port=None, params=(("branch", "z9hG4bKc"),)),
    )
    assert request.headers.count("via") == 2


def test_message_contact_values_split_but_not_inside_quotes() -> None:
    data = _with(
        REGISTER,
        b"Contact: <sip:alice@192.0.2.1>;expires=3600, <sip:alice@198.51.100.7>;q=0.5",
        b'Contact: "Doe, Jane" <sip:jane@192.0.2.1>, <sip:a@b.example;x=1,2>',
    )
    contacts = _request(data).contacts
    assert [c.display for c in contacts] == ['"Doe, Jane"', None]
    assert [str(c.uri) for c in contacts] == ["sip:jane@192.0.2.1", "sip:a@b.example;x=1,2"]


def test_message_contacts_of_register() -> None:
    contacts = _request(REGISTER).contacts
    assert contacts == (
        NameAddr(
            display=None,
            uri=SipUri(scheme="sip", user="alice", host="192.0.2.1", port=None),
            params=(("expires", "3600"),),
        ),
        NameAddr(
            display=None,
            uri=SipUri(scheme="sip", user="alice", host="198.51.100.7", port=None),
            params=(("q", "0.5"),),
        ),
    )
    assert _request(REGISTER).wildcard_contact is False


def test_message_authorization_is_not_split_on_commas() -> None:
    value = 'Digest username="alice", realm="example.com", nonce="n", uri="sip:x", response="r"'
    data = _with(REGISTER, b"Expires: 7200\r\n", f"Authorization: {value}\r\n".encode())
    assert _request(data).headers.values("authorization") == [value]


def test_message_www_authenticate_is_not_split_on_commas() -> None:
    response = _response(UNAUTHORIZED)
    assert response.headers.values("www-authenticate") == [
        'Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"',
        'Digest realm="example.com", nonce="n1", algorithm=MD5, qop="auth"',
    ]


# -- lazy header bodies -----------------------------------------------------------


def test_message_lazy_bodies_parse_on_first_use() -> None:
    request = _request(REGISTER)
    assert request.cseq == CSeq(seq=1826, method="REGISTER")
    assert request.from_ == NameAddr(
        display=None,
        uri=SipUri(scheme="sip", user="alice", host="example.com", port=None),
        params=(("tag", "456248"),),
    )
    assert request.to.tag is None
    assert request.top_via.branch == "z9hG4bKnashds7"
    assert request.top_via.host == "192.0.2.1"
    assert request.top_via.port == 5060
    assert request.int_header("expires") == 7200
    assert request.int_header("min-expires") is None


def test_message_lazy_contact_error_surfaces_only_on_use() -> None:
    data = _with(
        REGISTER,
        b"Contact: <sip:alice@192.0.2.1>;expires=3600, <sip:alice@198.51.100.7>;q=0.5",
        b"Contact: <sip:alice@bad host>",
    )
    request = _request(data)  # the Contact is not needed to parse the request
    with pytest.raises(SipParseError) as info:
        _ = request.contacts
    assert (info.value.status, info.value.reason) == (400, "malformed URI")


def test_message_wildcard_contact() -> None:
    data = _with(
        REGISTER,
        b"Contact: <sip:alice@192.0.2.1>;expires=3600, <sip:alice@198.51.100.7>;q=0.5",
        b"Contact: *",
    )
    request = _request(data)
    assert request.wildcard_contact is True
    assert request.contacts == ()


def test_message_unparsed_via_params() -> None:
    via = parse_via("SIP / 2.0 / udp host.example.com : 5060 ; branch = z9hG4bK1 ; rport")
    assert via == Via(
        transport="UDP",
        host="host.example.com",
        port=5060,
        params=(("branch", "z9hG4bK1"), ("rport", None)),
    )
    assert via.param("rport") == ""
    assert via.param("received") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("SIP/3.0/UDP host", "malformed Via protocol"),
        ("SIP/2.0 host", "malformed Via protocol"),
        ("SIP/2.0/UDP", "malformed Via sent-by"),
        ("SIP/2.0/UDP ;branch=x", "malformed Via sent-by"),
        ("SIP/2.0/UDP host:70000", "malformed Via port"),
        ("SIP/2.0/UDP host:x1", "malformed Via port"),
        ('SIP/2.0/UDP "host"', "malformed Via host"),
        ("SIP/2.0/UDP host;;branch=x", "empty Via parameter"),
    ],
)
def test_message_parse_via_errors(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_via(value)
    assert (info.value.status, info.value.reason) == (400, reason)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1", "malformed CSeq"),
        ("x INVITE", "malformed CSeq"),
        ("-1 INVITE", "malformed CSeq"),
        ("\u0661 INVITE", "malformed CSeq"),  # ARABIC-INDIC DIGIT ONE is isdigit()
        ("1 INV<ITE", "malformed CSeq method"),
        ("2147483648 INVITE", "CSeq number too large"),
    ],
)
def test_message_parse_cseq_errors(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_cseq(value)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_message_parse_cseq_leading_zeros() -> None:
    assert parse_cseq("0009 OPTIONS") == CSeq(seq=9, method="OPTIONS")


def test_message_parse_delta() -> None:
    assert parse_delta(" 4294967295 ", "Expires") == 4294967295
    with pytest.raises(SipParseError) as info:
        parse_delta("4294967296", "Expires")
    assert (info.value.status, info.value.reason) == (400, "Expires out of range")
    with pytest.raises(SipParseError) as info:
        parse_delta("-1", "Expires")
    assert (info.value.status, info.value.reason) == (400, "malformed Expires")


# -- request checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "status", "reason"),
    [
        (
            b"REGISTER sip:example.com SIP/2.0",
            b"REGISTER  sip:example.com SIP/2.0",
            400,
            "malformed Request-Line",
        ),
        (
            b"REGISTER sip:example.com SIP/2.0",
            b"REGISTER sip:example.com",
            400,
            "malformed Request-Line",
        ),
        (
            b"REGISTER sip:example.com SIP/2.0",
            b"REGISTER sip:example.com HTTP/1.1",
            400,
            "malformed Request-Line",
        ),
        (
            b"REGISTER sip:example.com SIP/2.0",
            b"REGISTER sip:example.com SIP/3.0",
            505,
            "SIP version not supported",
        ),
        (
            b"REGISTER sip:example.com SIP/2.0",
            b"REG(ISTER sip:example.com SIP/2.0",
            400,
            "malformed method",
        ),
        (b"Call-ID: 843817637684230@998sdasdh09\r\n", b"", 400, "missing call-id header"),
        (b"CSeq: 1826 REGISTER\r\n", b"", 400, "missing cseq header"),
        (b"From: <sip:alice@example.com>;tag=456248\r\n", b"", 400, "missing from header"),
        (b"To: <sip:alice@example.com>\r\n", b"", 400, "missing to header"),
        (
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n",
            b"",
            400,
            "missing via header",
        ),
        (b"Call-ID: 843817637684230@998sdasdh09", b"Call-ID: ", 400, "empty Call-ID"),
        (
            b"CSeq: 1826 REGISTER",
            b"CSeq: 1826 INVITE",
            400,
            "CSeq method does not match Request-Line",
        ),
        (b"Max-Forwards: 70", b"Max-Forwards: 256", 400, "Max-Forwards out of range"),
        (b"Max-Forwards: 70", b"Max-Forwards: seventy", 400, "malformed max-forwards"),
        (b"Expires: 7200", b"Expires: soon", 400, "malformed expires"),
        (
            b"Max-Forwards: 70\r\n",
            b"Max-Forwards: 70\r\nMax-Forwards: 70\r\n",
            400,
            "multiple max-forwards headers",
        ),
        (
            b"To: <sip:alice@example.com>\r\n",
            b"To: <sip:alice@example.com>\r\nt: <sip:b@c>\r\n",
            400,
            "multiple to headers",
        ),
        (b"Max-Forwards: 70\r\n", b"Max Forwards: 70\r\n", 400, "malformed header line"),
        (b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n", 400, "malformed header line"),
        (
            b"Max-Forwards: 70\r\n",
            b"Max-Forwards: 70\n\r\nX: y\r\n",
            400,
            "empty line inside headers",
        ),
        (b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com", 400, "unterminated <URI>"),
        (b"Content-Length: 0", b"Content-Length: 10", 400, "Content-Length larger than body"),
        (b"Content-Length: 0", b"Content-Length: -1", 400, "malformed Content-Length"),
        (
            b"Content-Length: 0\r\n",
            b"Content-Length: 0\r\nl: 0\r\n",
            400,
            "multiple Content-Length headers",
        ),
    ],
)
def test_message_broken_request_refused(old: bytes, new: bytes, status: int, reason: str) -> None:
    assert _error(_with(REGISTER, old, new)) == (status, reason)


def test_message_header_section_must_end_with_empty_line() -> None:
    assert _error(REGISTER[:-2]) == (400, "header section not terminated by an empty line")
    assert _error(REGISTER[:-4]) == (400, "header section not terminated by an empty line")
    assert _error(b"") == (400, "header section not terminated by an empty line")


def test_message_header_section_not_utf8_is_400() -> None:
    data = _with(REGISTER, b"Expires: 7200", b"Subject: \xff\xfe")
    assert _error(data) == (400, "header section is not UTF-8")


def test_message_request_uri_of_other_scheme_parses() -> None:
    data = _with(REGISTER, b"REGISTER sip:example.com", b"REGISTER tel:+1-201-555-0123")
    request = _request(data)
    assert request.uri == AbsoluteUri(scheme="tel", rest="+1-201-555-0123")
    with pytest.raises(SipParseError) as info:
        sip_uri(request.uri)
    assert (info.value.status, info.value.reason) == (416, "unsupported URI scheme")
    assert sip_uri(_request(REGISTER).uri).host == "example.com"


# -- bodies -----------------------------------------------------------------------


def test_message_datagram_bytes_past_content_length_are_ignored() -> None:
    request = _request(REGISTER + b"trailing noise")
    assert request.body == b""
    assert request.to_bytes() == REGISTER


def test_message_datagram_without_content_length_takes_rest() -> None:
    data = _with(INVITE, b"Content-Length: 14\r\n", b"")
    assert _request(data).body == b"v=0\r\no=- 1 1\r\n"
    # From a stream, a message without Content-Length has no body.
    message = parse_message(data, datagram=False)
    assert message.body == b""


def test_message_stream_body_is_exactly_content_length() -> None:
    assert parse_message(INVITE, datagram=False).body == b"v=0\r\no=- 1 1\r\n"


# -- responses --------------------------------------------------------------------


def test_message_response_empty_reason_phrase() -> None:
    data = _with(OK, b"SIP/2.0 200 OK", b"SIP/2.0 200 ")
    response = _response(data)
    assert (response.status, response.reason) == (200, "")
    assert response.to_bytes() == data


@pytest.mark.parametrize(
    ("start", "status", "reason"),
    [
        (b"SIP/2.0 99 Low", 400, "malformed status code"),
        (b"SIP/2.0 700 High", 400, "malformed status code"),
        (b"SIP/2.0 2OO OK", 400, "malformed status code"),
        (b"SIP/2.0 4294967301 Big", 400, "malformed status code"),
        (b"SIP/3.0 200 OK", 505, "SIP version not supported"),
    ],
)
def test_message_broken_status_line_refused(start: bytes, status: int, reason: str) -> None:
    assert _error(_with(OK, b"SIP/2.0 200 OK", start)) == (status, reason)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"CSeq: 1826 REGISTER", b"CSeq: 99999999999 REGISTER", "CSeq number too large"),
        (b"CSeq: 1826 REGISTER\r\n", b"", "missing cseq header"),
        (b"SIP/2.0/UDP 192.0.2.1:5060", b"SIP/2.0/UDP 192.0.2.1:99999", "malformed Via port"),
        (b"Call-ID: 843817637684230@998sdasdh09\r\n", b"", "missing call-id header"),
    ],
)
def test_message_response_unmatchable_headers_refused(old: bytes, new: bytes, reason: str) -> None:
    assert _error(_with(OK, old, new)) == (400, reason)


# -- building responses -----------------------------------------------------------


def test_message_response_to_copies_headers_and_adds_to_tag() -> None:
    data = _with(
        REGISTER,
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n",
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n"
        b"v: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKp\r\n",
    )
    response = response_to(
        _request(data), 423, "Interval Too Brief", to_tag="t1", extra=(("Min-Expires", "60"),)
    )
    assert response.to_bytes() == (
        b"SIP/2.0 423 Interval Too Brief\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n"
        b"v: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKp\r\n"
        b"To: <sip:alice@example.com>;tag=t1\r\n"
        b"From: <sip:alice@example.com>;tag=456248\r\n"
        b"Call-ID: 843817637684230@998sdasdh09\r\n"
        b"CSeq: 1826 REGISTER\r\n"
        b"Min-Expires: 60\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert parse_message(response.to_bytes()) == response


def test_message_response_to_keeps_existing_to_tag() -> None:
    data = _with(REGISTER, b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com>;tag=a")
    response = response_to(_request(data), 200, "OK", to_tag="b")
    assert response.headers.get("to") == "<sip:alice@example.com>;tag=a"


def test_message_response_to_100_has_no_to_tag() -> None:
    response = response_to(_request(REGISTER), 100, "Trying", to_tag="b")
    assert response.headers.get("to") == "<sip:alice@example.com>"


def test_message_response_to_with_body_sets_content_length() -> None:
    response = response_to(_request(REGISTER), 200, "OK", body=b"hello")
    assert response.headers.get("content-length") == "5"
    assert response.to_bytes().endswith(b"Content-Length: 5\r\n\r\nhello")


def test_message_error_response_bytes_answers_broken_request() -> None:
    broken = _with(REGISTER, b"Max-Forwards: 70", b"Max-Forwards: many")
    assert error_response_bytes(broken, 400, "Bad Request") == (
        b"SIP/2.0 400 Bad Request\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n"
        b"To: <sip:alice@example.com>\r\n"
        b"From: <sip:alice@example.com>;tag=456248\r\n"
        b"Call-ID: 843817637684230@998sdasdh09\r\n"
        b"CSeq: 1826 REGISTER\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def test_message_error_response_bytes_keeps_compact_names() -> None:
    answer = error_response_bytes(COMPACT.replace(b"l: 4", b"l: x"), 400, "Bad Request")
    assert answer is not None
    assert b"\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc1\r\n" in answer
    assert b"\r\ni: compact@example.com\r\n" in answer


def test_message_error_response_bytes_none_for_response() -> None:
    assert error_response_bytes(OK, 400, "Bad Request") is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"REGISTER\r\n\r\n",
        _with(REGISTER, b"Call-ID: 843817637684230@998sdasdh09\r\n", b""),
        _with(REGISTER, b"REGISTER sip:example.com", b"REG<ISTER sip:example.com"),
    ],
)
def test_message_error_response_bytes_none_for_hopeless_bytes(data: bytes) -> None:
    assert error_response_bytes(data, 400, "Bad Request") is None


def test_message_top_via_with_received_adds_received_and_fills_rport() -> None:
    data = _with(
        REGISTER,
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n",
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport, SIP/2.0/UDP p;branch=z9hG4bKy\r\n",
    )
    stamped = top_via_with_received(_request(data), "192.0.2.1", 40000)
    assert stamped.headers.lines("via") == [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport=40000;received=192.0.2.1, "
        "SIP/2.0/UDP p;branch=z9hG4bKy"
    ]
    assert stamped.top_via.param("rport") == "40000"
    assert stamped.top_via.param("received") == "192.0.2.1"


def test_message_top_via_with_received_replaces_old_received() -> None:
    data = _with(REGISTER, b"branch=z9hG4bKnashds7", b"received=203.0.113.9;branch=z9hG4bKnashds7")
    stamped = top_via_with_received(_request(data), "198.51.100.1", 5060)
    assert stamped.top_via.params == (("branch", "z9hG4bKnashds7"), ("received", "198.51.100.1"))


def test_message_top_via_with_received_same_host_without_rport_unchanged() -> None:
    request = _request(REGISTER)
    assert top_via_with_received(request, "192.0.2.1", 5060) == request


def test_message_top_via_with_received_same_host_with_rport_adds_received() -> None:
    # RFC 3581 §4: received is added even if identical to the sent-by.
    data = _with(REGISTER, b"branch=z9hG4bKnashds7", b"branch=z9hG4bKnashds7;rport")
    stamped = top_via_with_received(_request(data), "192.0.2.1", 5060)
    assert stamped.headers.get("via") == (
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;rport=5060;received=192.0.2.1"
    )


def test_message_top_via_with_received_keeps_other_headers() -> None:
    stamped = top_via_with_received(_request(REGISTER), "198.51.100.1", 5060)
    assert [h.key for h in stamped.headers] == [h.key for h in _request(REGISTER).headers]
    assert stamped.headers.fields[1] == Header(name="Max-Forwards", key="max-forwards", value="70")


# -- helpers ----------------------------------------------------------------------


def test_message_is_rfc3261_branch() -> None:
    assert is_rfc3261_branch("z9hG4bK776asdhds") is True
    assert is_rfc3261_branch("z9hG4bK") is False  # RFC 4475 §3.2.1: cookie alone
    assert is_rfc3261_branch("776asdhds") is False
    assert is_rfc3261_branch(None) is False


def test_message_split_head() -> None:
    assert split_head(b"A\r\nB\r\n\r\nbody") == (b"A\r\nB", b"body")
    assert split_head(b"A\nB\n\nbody\r\n\r\n") == (b"A\nB", b"body\r\n\r\n")
    assert split_head(b"A\r\nB") == (b"A\r\nB", b"")


def test_message_empty_via_header_line_is_400() -> None:
    # RFC 3261 §20.42 Via = 1#via-parm: an empty line above a good one used to reach the
    # Via stamping as an IndexError (issue 13, finding 9).
    data = (
        b"OPTIONS sip:example.test SIP/2.0\r\nVia: \r\n"
        b"Via: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bKe1\r\n"
        b"From: <sip:a@example.test>;tag=1\r\nTo: <sip:example.test>\r\nCall-ID: e\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    with pytest.raises(SipParseError) as info:
        parse_message(data).top_via  # noqa: B018
    assert (info.value.status, info.value.reason) == (400, "empty Via header")


# -- parsed once (issue 15) ---------------------------------------------------------


def test_message_header_bodies_parsed_once_per_message() -> None:
    request = _request(INVITE)
    assert request.vias is request.vias
    assert request.top_via is request.vias[0]
    assert request.cseq is request.cseq
    assert request.from_ is request.from_
    assert request.contacts is request.contacts


def test_message_response_to_shares_parsed_bodies_with_its_request() -> None:
    request = _request(INVITE)
    response = response_to(request, 180, "Ringing", to_tag="b1")
    assert response.vias is request.vias
    assert response.cseq is request.cseq
    assert response.from_ is request.from_
    # The To got a tag: parsed from the response's own header, not inherited.
    assert response.to.tag == "b1"
    assert request.to.tag is None
    assert response.to.uri == request.to.uri


def test_message_response_to_100_shares_the_untagged_to() -> None:
    request = _request(INVITE)
    assert response_to(request, 100, "Trying", to_tag="b1").to is request.to


def test_message_response_to_does_not_inherit_the_request_contacts() -> None:
    request = _request(REGISTER)
    assert len(request.contacts) == 2
    response = response_to(request, 200, "OK")
    assert response.contacts == ()


def test_message_top_via_with_received_keeps_the_other_parsed_vias() -> None:
    data = _with(
        REGISTER,
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n",
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\r\n"
        b"Via: SIP/2.0/UDP p;branch=z9hG4bKy\r\n",
    )
    request = _request(data)
    stamped = top_via_with_received(request, "192.0.2.1", 40000)
    assert stamped.vias[1] is request.vias[1]
    assert stamped.top_via == parse_via(stamped.headers.values("via")[0])
    assert stamped.top_via.params == (
        ("branch", "z9hG4bKx"),
        ("rport", "40000"),
        ("received", "192.0.2.1"),
    )
    assert stamped.cseq is request.cseq


def test_message_via_cache_is_bounded_by_via_cache_size() -> None:
    parse_via.cache_clear()
    for i in range(VIA_CACHE_SIZE + 10):
        parse_via(f"SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK{i}")
    assert parse_via.cache_info().currsize == VIA_CACHE_SIZE
    parse_via.cache_clear()


def test_message_via_cache_never_caches_an_error() -> None:
    for _ in range(2):
        with pytest.raises(SipParseError) as info:
            parse_via("SIP/2.0/TLS bad host;branch=z9hG4bK1")
        assert (info.value.status, info.value.reason) == (400, "malformed Via host")


def test_message_too_many_vias_counted_in_one_pass() -> None:
    vias = b"".join(
        b"Via: SIP/2.0/UDP h%d;branch=z9hG4bK%d\r\n" % (i, i) for i in range(limits.MAX_VIA + 1)
    )
    data = _with(REGISTER, b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n", vias)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert (info.value.status, info.value.reason) == (483, "too many Via headers")


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport",
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx; RPORT ;received=203.0.113.9",
        "SIP/2.0/UDP 10.0.0.1;rport=;branch=z9hG4bKx",
        "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKx;rport;Received=1.2.3.4;x",
        "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKx",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7",
    ],
)
def test_message_stamped_top_via_equals_the_stamped_text_parsed(via: str) -> None:
    data = _with(REGISTER, b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7", via.encode())
    for host, port in (("192.0.2.1", 40000), ("10.0.0.1", 5060), ("::1", 5061)):
        stamped = top_via_with_received(_request(data), host, port)
        assert stamped.top_via == parse_via(stamped.headers.values("via")[0])
