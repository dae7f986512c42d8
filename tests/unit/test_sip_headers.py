"""Header names, compact forms and the ordered header list (voipsec.sip.headers)."""

from __future__ import annotations

import pytest

from voipsec.sip.errors import SipParseError
from voipsec.sip.headers import (
    COMPACT_FORMS,
    Header,
    Headers,
    canonical_name,
    header,
    is_token,
    split_list,
)


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("v", "via"),
        ("i", "call-id"),
        ("f", "from"),
        ("t", "to"),
        ("m", "contact"),
        ("l", "content-length"),
        ("c", "content-type"),
        ("k", "supported"),
        ("s", "subject"),
        ("e", "content-encoding"),
        ("o", "event"),
        ("r", "refer-to"),
        ("u", "allow-events"),
        ("x", "session-expires"),
    ],
)
def test_headers_compact_form_maps_to_full_name(compact: str, full: str) -> None:
    assert COMPACT_FORMS[compact] == full
    assert canonical_name(compact) == full
    assert canonical_name(compact.upper()) == full


def test_headers_canonical_name_lowercases_full_names() -> None:
    assert canonical_name("Call-ID") == "call-id"
    assert canonical_name("X-Custom") == "x-custom"
    assert canonical_name("vIa") == "via"


def test_headers_header_builder() -> None:
    assert header("V", "SIP/2.0/UDP h") == Header(name="V", key="via", value="SIP/2.0/UDP h")


def test_headers_is_token() -> None:
    assert is_token("!interesting-Method0123456789_*+`.%indeed'~") is True
    assert is_token("") is False
    assert is_token("a b") is False
    assert is_token("a:b") is False
    assert is_token("ä") is False


def test_headers_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w> ,, c') == [
        '"a, b" <sip:x@y;p=1,2>',
        "<sip:z@w>",
        "c",
    ]
    assert split_list('"a \\" , b" <sip:x>, d') == ['"a \\" , b" <sip:x>', "d"]
    assert split_list("") == []


def test_headers_split_list_unbalanced_quotes_is_400() -> None:
    with pytest.raises(SipParseError) as info:
        split_list('"a, <sip:x>')
    assert (info.value.status, info.value.reason) == (400, "unbalanced quotes in header")


def _headers() -> Headers:
    return Headers(
        (
            header("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            header("v", "SIP/2.0/UDP c;branch=z9hG4bK3"),
            header("To", "<sip:bob@example.com>"),
            header("Authorization", 'Digest username="a", realm="b"'),
            header("Contact", "<sip:a@b>, <sip:c@d>"),
        )
    )


def test_headers_lookup_is_case_and_compact_insensitive() -> None:
    h = _headers()
    assert h.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"
    assert h.get("t") == "<sip:bob@example.com>"
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"
    assert "V" in h
    assert "m" in h
    assert "Call-ID" not in h
    assert 3 not in h
    assert h.count("via") == 2
    assert len(h) == 5


def test_headers_values_split_list_headers_only() -> None:
    h = _headers()
    assert h.values("via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert h.values("m") == ["<sip:a@b>", "<sip:c@d>"]
    assert h.values("authorization") == ['Digest username="a", realm="b"']
    assert h.lines("via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]


def test_headers_replace_keeps_position_and_name() -> None:
    h = _headers().replace("via", "SIP/2.0/TLS x;branch=z9hG4bK9")
    assert [f.name for f in h] == ["Via", "To", "Authorization", "Contact"]
    assert h.get("via") == "SIP/2.0/TLS x;branch=z9hG4bK9"
    assert h.count("via") == 1


def test_headers_replace_none_removes() -> None:
    h = _headers().replace("contact", None)
    assert "contact" not in h
    assert len(h) == 4


def test_headers_replace_missing_appends() -> None:
    h = _headers().replace("Expires", "60")
    assert h.fields[-1] == Header(name="Expires", key="expires", value="60")


def test_headers_append_and_immutability() -> None:
    original = _headers()
    appended = original.append("Max-Forwards", "70")
    assert len(original) == 5
    assert appended.fields[-1] == Header(name="Max-Forwards", key="max-forwards", value="70")
    assert appended != original


def test_headers_equality_and_hash() -> None:
    assert _headers() == _headers()
    assert hash(_headers()) == hash(_headers())
    assert _headers() != "not headers"
    assert list(_headers()) == list(_headers().fields)
    assert repr(Headers(())) == "Headers([])"


def test_headers_indexed_by_the_parser_answer_like_constructed_ones() -> None:
    fields = (
        header("Via", "SIP/2.0/TLS a;branch=z9hG4bK1"),
        header("v", "SIP/2.0/TLS b;branch=z9hG4bK2"),
        header("Call-ID", "x"),
    )
    indexed = Headers.indexed(fields, {"via": [0, 1], "call-id": [2]})
    built = Headers(fields)
    assert indexed == built
    assert indexed.lines("VIA") == built.lines("VIA") == [f.value for f in fields[:2]]
    assert indexed.get("i") == "x"
    assert (indexed.count_key("via"), indexed.count_key("contact")) == (2, 0)


def test_headers_first_missing_names_the_first_absent_key_in_order() -> None:
    headers = Headers((header("v", "SIP/2.0/TLS a"), header("CSeq", "1 BYE")))
    assert headers.first_missing(("via", "cseq")) is None
    assert headers.first_missing(("via", "call-id", "from")) == "call-id"
