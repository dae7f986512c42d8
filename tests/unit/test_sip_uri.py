"""SIP URIs and name-addr values (voipsec.sip.uri)."""

from __future__ import annotations

import pytest

from voipsec.sip.errors import SipParseError
from voipsec.sip.uri import AbsoluteUri, NameAddr, SipUri, parse_name_addr, parse_uri


def _uri_error(text: str) -> tuple[int, str]:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    return info.value.status, info.value.reason


def _name_addr_error(text: str) -> tuple[int, str]:
    with pytest.raises(SipParseError) as info:
        parse_name_addr(text)
    return info.value.status, info.value.reason


def test_uri_full_sip_uri() -> None:
    uri = parse_uri("sip:alice:secret@Example.COM:5070;transport=TLS;lr?subject=hi&x=y")
    assert uri == SipUri(
        scheme="sip",
        user="alice",
        password="secret",
        host="Example.COM",
        port=5070,
        params=(("transport", "TLS"), ("lr", None)),
        headers="subject=hi&x=y",
    )
    assert isinstance(uri, SipUri)
    assert uri.transport == "tls"
    assert uri.param("LR") == ""
    assert uri.param("maddr") is None
    assert uri.secure is False
    assert uri.aor == "sip:alice@example.com"
    assert str(uri) == "sip:alice:secret@Example.COM:5070;transport=TLS;lr?subject=hi&x=y"


def test_uri_password_not_in_repr() -> None:
    uri = parse_uri("sip:alice:secret@example.com")
    assert "secret" not in repr(uri)


def test_uri_sips_is_secure_and_scheme_lowercased() -> None:
    uri = parse_uri("SIPS:bob@example.com")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.secure) == ("sips", True)
    # The AOR is always sip: so sip: and sips: registrations share it.
    assert uri.aor == "sip:bob@example.com"


def test_uri_host_only() -> None:
    assert parse_uri("sip:example.com") == SipUri(
        scheme="sip", user=None, host="example.com", port=None
    )
    assert parse_uri("sip:example.com").aor == "sip:example.com"  # type: ignore[union-attr]


def test_uri_ipv6_reference() -> None:
    uri = parse_uri("sip:[2001:db8::10]:5070;maddr=x")
    assert uri == SipUri(
        scheme="sip", user=None, host="[2001:db8::10]", port=5070, params=(("maddr", "x"),)
    )


def test_uri_aor_unescapes_user() -> None:
    uri = parse_uri("sip:I%20have%20spaces@EXAMPLE.net")
    assert isinstance(uri, SipUri)
    assert uri.user == "I%20have%20spaces"
    assert uri.aor == "sip:I have spaces@example.net"


def test_uri_user_with_user_unreserved_characters() -> None:
    # RFC 3261 §25.1 user-unreserved includes ";" "?" "," "/" (RFC 4475 intmeth, semiuri).
    uri = parse_uri("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1@example.com")
    assert uri == SipUri(
        scheme="sip",
        user="1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
        password="&it+has=1",
        host="example.com",
        port=None,
    )
    semi = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(semi, SipUri)
    assert (semi.user, semi.host, semi.params) == ("user;par=u%40example.net", "example.com", ())


def test_uri_raw_at_sign_in_header_value_stays_in_headers() -> None:
    uri = parse_uri("sip:bob@example.com?Replaces=12345@192.0.2.1%3Bto-tag%3D7")
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host) == ("bob", "example.com")
    assert uri.headers == "Replaces=12345@192.0.2.1%3Bto-tag%3D7"


def test_uri_two_at_signs_in_userinfo_is_400() -> None:
    assert _uri_error("sip:a@b@example.com") == (400, "malformed host in URI")


def test_uri_other_scheme_is_absolute() -> None:
    assert parse_uri("tel:+1-201-555-0123") == AbsoluteUri(scheme="tel", rest="+1-201-555-0123")
    uri = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert uri == AbsoluteUri(scheme="nobodyknowsthisscheme", rest="totallyopaquecontent")
    assert uri.secure is False
    assert str(uri) == "nobodyknowsthisscheme:totallyopaquecontent"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed URI"),
        ("sip:a b@example.com", "malformed URI"),
        ("<sip:a@example.com>", "malformed URI"),
        ('sip:"a"@example.com', "malformed URI"),
        ("example.com", "malformed URI scheme"),
        (":x", "malformed URI scheme"),
        ("1sip:x", "malformed URI scheme"),
        ("si_p:x", "malformed URI scheme"),
        ("tel:", "malformed URI"),
        ("sip:@example.com", "empty user in URI"),
        ("sip::pw@example.com", "empty user in URI"),
        ("sip:a%4@example.com", "bad escape in URI"),
        ("sip:a%zz@example.com", "bad escape in URI"),
        ("sip:", "malformed host in URI"),
        ("sip:a@", "malformed host in URI"),
        ("sip:a@exa_mple.com", "malformed host in URI"),
        ("sip:a@-example.com", "malformed host in URI"),
        ("sip:a@example.com:", "malformed port in URI"),
        ("sip:a@example.com:50x", "malformed port in URI"),
        ("sip:a@example.com:65536", "port out of range in URI"),
        ("sip:[2001:db8::1", "malformed IPv6 reference"),
        ("sip:[not-ipv6]", "malformed IPv6 reference"),
        ("sip:[::1]x", "malformed port in URI"),
        ("sip:a@example.com;;lr", "empty URI parameter"),
        ("sip:a@example.com;=x", "empty URI parameter name"),
        ("sip:a@example.com;p=%g1", "bad escape in URI"),
    ],
)
def test_uri_malformed_is_400(text: str, reason: str) -> None:
    assert _uri_error(text) == (400, reason)


def test_uri_name_addr_with_quoted_display() -> None:
    value = '"Alice \\"A\\" Smith" <sip:alice@example.com;transport=tls>;tag=88sja8x;x'
    assert parse_name_addr(value) == NameAddr(
        display='"Alice \\"A\\" Smith"',
        uri=SipUri(
            scheme="sip",
            user="alice",
            host="example.com",
            port=None,
            params=(("transport", "tls"),),
        ),
        params=(("tag", "88sja8x"), ("x", None)),
    )


def test_uri_name_addr_token_display_without_space() -> None:
    # RFC 4475 §3.1.1.6 lwsdisp: no LWS between a token display name and "<".
    na = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert (na.display, na.tag) == ("caller", "323")


def test_uri_name_addr_token_display_with_many_words() -> None:
    na = parse_name_addr("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>")
    assert na.display == "token1~` token2'+_ token3*%!.-"


def test_uri_name_addr_unquoted_utf8_display_is_tolerated() -> None:
    assert parse_name_addr("Jürgen <sip:j@example.com>").display == "Jürgen"


def test_uri_addr_spec_params_belong_to_the_header() -> None:
    # RFC 3261 §20.10 and RFC 4475 §3.3.12 cparam01.
    na = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert isinstance(na.uri, SipUri)
    assert na.uri.params == ()
    assert na.params == (("unknownparam", None),)
    assert na.display is None


def test_uri_name_addr_params_inside_brackets_belong_to_the_uri() -> None:
    na = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(na.uri, SipUri)
    assert na.uri.params == (("unknownparam", None),)
    assert na.params == ()


def test_uri_name_addr_str() -> None:
    na = parse_name_addr('"Bob" <sip:bob@example.com> ; tag = 1 ; lr')
    assert str(na) == '"Bob" <sip:bob@example.com>;tag=1;lr'
    assert na.param("TAG") == "1"
    assert na.param("lr") == ""


def test_uri_name_addr_other_scheme() -> None:
    na = parse_name_addr("<http://www.example.com>;tag=3234233")
    assert na.uri == AbsoluteUri(scheme="http", rest="//www.example.com")
    assert na.tag == "3234233"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"Alice sip:alice@example.com', "unbalanced quotes in display name"),
        ('"Alice" sip:alice@example.com', "display name without <URI>"),
        ("<sip:alice@example.com", "unterminated <URI>"),
        ("Watson, Thomas <sip:t.watson@example.org>", "malformed display name"),
        ("Bell (Alexander) <sip:a.g.bell@example.com>", "malformed display name"),
        (
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            ("addr-spec with reserved characters must use <URI>"),
        ),
        (
            "sip:a@example.com,sip:b@example.com",
            ("addr-spec with reserved characters must use <URI>"),
        ),
        ("<sip:alice@example.com> junk", "junk after URI"),
        ("<sip:alice@example.com>;;tag=1", "empty header parameter"),
        ("< sip:t.watson@example.org >", "malformed URI"),
    ],
)
def test_uri_name_addr_malformed_is_400(value: str, reason: str) -> None:
    assert _name_addr_error(value) == (400, reason)


def test_uri_name_addr_uri_too_long_is_414() -> None:
    assert _name_addr_error("<sip:" + "a" * 2048 + "@example.com>") == (414, "URI too long")


def test_uri_same_aor_user_exact_host_case_insensitive() -> None:
    from voipsec.sip.uri import same_aor

    assert same_aor("alice@Example.TEST", "alice@example.test")
    assert not same_aor("alice@example.test", "ALICE@example.test")
    assert not same_aor("alice", "alice")  # not an AOR at all
    assert not same_aor("alice@example.test", "alice@example.org")
