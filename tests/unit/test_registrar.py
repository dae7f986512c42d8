"""Registrar and location service (voipsec.core.registrar, RFC 3261 §10.3)."""

from __future__ import annotations

import pytest

from voipsec.core.registrar import (
    RegisterOutcome,
    Registrar,
    RegistrarPolicy,
    RegistrarStatistics,
)
from voipsec.sip.errors import SipParseError
from voipsec.sip.message import Request, parse_message
from voipsec.sip.uri import parse_uri
from voipsec.storage import Binding

NOW = 1_000.0
SOURCE = "tls:192.0.2.1:40000"
CALL_ID = "843817637684230@998sdasdh09"


def _registrar(**policy: int) -> Registrar:
    return Registrar(
        RegistrarPolicy(
            domain="example.com", domains=frozenset({"example.com", "192.0.2.100"}), **policy
        )
    )


def _register(
    *contacts: str,
    to: str = "sip:alice@example.com",
    expires: int | str | None = None,
    call_id: str = CALL_ID,
    cseq: int = 1,
    user_agent: str | None = None,
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.1:40000;branch=z9hG4bKreg",
        "Max-Forwards: 70",
        f"To: <{to}>",
        f"From: <{to}>;tag=456248",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def _binding(contact: str, expires_at: float, *, cseq: int = 1, call_id: str = CALL_ID) -> Binding:
    return Binding(
        aor="alice@example.com",
        contact=contact,
        expires_at=expires_at,
        call_id=call_id,
        cseq=cseq,
        source=SOURCE,
        user_agent="",
    )


def _do(
    registrar: Registrar, request: Request, *, user: str = "alice", now: float = NOW
) -> RegisterOutcome:
    return registrar.register(request, user=user, now=now, source=SOURCE)


# -- bindings -------------------------------------------------------------------------


def test_registrar_register_default_expires() -> None:
    registrar = _registrar()
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", user_agent="Phone/1.0"))
    binding = Binding(
        aor="alice@example.com",
        contact="sip:alice@192.0.2.1",
        expires_at=NOW + 3600,
        call_id=CALL_ID,
        cseq=1,
        source=SOURCE,
        user_agent="Phone/1.0",
    )
    assert outcome == RegisterOutcome(
        status=200,
        reason="OK",
        headers=(("Contact", "<sip:alice@192.0.2.1>;expires=3600"),),
        upserts=(binding,),
    )
    assert registrar.lookup("alice@example.com", NOW) == [binding]


def test_registrar_expires_header_used() -> None:
    outcome = _do(_registrar(), _register("<sip:alice@192.0.2.1>", expires=600))
    assert outcome.headers == (("Contact", "<sip:alice@192.0.2.1>;expires=600"),)


def test_registrar_contact_expires_param_overrides_header() -> None:
    outcome = _do(
        _registrar(),
        _register("<sip:alice@192.0.2.1>;expires=120", "<sip:alice@192.0.2.2>", expires=600),
    )
    assert outcome.headers == (
        ("Contact", "<sip:alice@192.0.2.1>;expires=120"),
        ("Contact", "<sip:alice@192.0.2.2>;expires=600"),
    )


def test_registrar_too_brief_is_423_with_min_expires() -> None:
    registrar = _registrar()
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", expires=59))
    assert outcome == RegisterOutcome(
        status=423, reason="Interval Too Brief", headers=(("Min-Expires", "60"),)
    )
    assert registrar.lookup("alice@example.com", NOW) == []


def test_registrar_at_min_expires_is_accepted() -> None:
    assert _do(_registrar(), _register("<sip:alice@192.0.2.1>", expires=60)).status == 200


def test_registrar_contact_param_too_brief_is_423() -> None:
    outcome = _do(_registrar(min_expires=300), _register("<sip:a@192.0.2.1>;expires=299"))
    assert (outcome.status, outcome.headers) == (423, (("Min-Expires", "300"),))


def test_registrar_expires_capped_at_max() -> None:
    outcome = _do(_registrar(), _register("<sip:alice@192.0.2.1>", expires=100_000))
    assert outcome.headers == (("Contact", "<sip:alice@192.0.2.1>;expires=7200"),)
    assert outcome.upserts[0].expires_at == NOW + 7200


def test_registrar_malformed_contact_expires_is_400() -> None:
    with pytest.raises(SipParseError) as info:
        _do(_registrar(), _register("<sip:alice@192.0.2.1>;expires=soon"))
    assert (info.value.status, info.value.reason) == (400, "malformed Contact expires")


def test_registrar_refresh_keeps_one_binding() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600, cseq=1))
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", expires=900, cseq=2), now=NOW + 10)
    assert outcome.headers == (("Contact", "<sip:alice@192.0.2.1>;expires=900"),)
    assert registrar.statistics().bindings == 1


def test_registrar_query_without_contact_lists_bindings() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600))
    outcome = _do(registrar, _register(cseq=2), now=NOW + 100)
    assert outcome == RegisterOutcome(
        status=200, reason="OK", headers=(("Contact", "<sip:alice@192.0.2.1>;expires=500"),)
    )


def test_registrar_expires_zero_removes_binding() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>", expires=600))
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>;expires=0", cseq=2))
    assert outcome.removals == (("alice@example.com", "sip:alice@192.0.2.1"),)
    assert outcome.headers == (("Contact", "<sip:alice@192.0.2.2>;expires=600"),)


def test_registrar_alias_domain_maps_to_primary_aor() -> None:
    registrar = _registrar()
    outcome = _do(registrar, _register("<sip:a@192.0.2.1>", to="sip:alice@192.0.2.100"))
    assert outcome.upserts[0].aor == "alice@example.com"
    uri = parse_uri("sip:alice@EXAMPLE.com")
    assert registrar.aor_for(uri) == "alice@example.com"  # type: ignore[arg-type]
    assert registrar.aor_for(parse_uri("sip:example.com")) is None  # type: ignore[arg-type]


def test_registrar_user_agent_truncated() -> None:
    outcome = _do(_registrar(), _register("<sip:a@192.0.2.1>", user_agent="U" * 300))
    assert outcome.upserts[0].user_agent == "U" * 200


# -- wildcard -------------------------------------------------------------------------


def test_registrar_wildcard_with_expires_zero_removes_all() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>", expires=600))
    outcome = _do(registrar, _register("*", expires=0, cseq=2))
    assert outcome == RegisterOutcome(
        status=200,
        reason="OK",
        removals=(
            ("alice@example.com", "sip:alice@192.0.2.1"),
            ("alice@example.com", "sip:alice@192.0.2.2"),
        ),
    )
    assert registrar.lookup("alice@example.com", NOW) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        (("*",), None),
        (("*",), 60),
        (("*", "<sip:alice@192.0.2.1>"), 0),
        (("*, <sip:alice@192.0.2.1>",), 0),
    ],
)
def test_registrar_invalid_wildcard_is_400(contacts: tuple[str, ...], expires: int | None) -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.9>", expires=600))
    outcome = _do(registrar, _register(*contacts, expires=expires, cseq=2))
    assert outcome == RegisterOutcome(status=400, reason="Invalid Wildcard Contact")
    assert len(registrar.lookup("alice@example.com", NOW)) == 1


# -- refusals -------------------------------------------------------------------------


def test_registrar_other_user_is_403() -> None:
    # §10.3 step 6: the authenticated user may only change their own bindings.
    registrar = _registrar()
    outcome = _do(registrar, _register("<sip:bob@192.0.2.1>"), user="bob")
    assert outcome == RegisterOutcome(status=403, reason="Forbidden")
    assert registrar.lookup("alice@example.com", NOW) == []


def test_registrar_foreign_domain_is_404() -> None:
    outcome = _do(_registrar(), _register("<sip:a@192.0.2.1>", to="sip:alice@elsewhere.example"))
    assert outcome == RegisterOutcome(status=404, reason="Not Found")


def test_registrar_to_without_user_is_404() -> None:
    assert _do(_registrar(), _register("<sip:a@192.0.2.1>", to="sip:example.com")).status == 404


def test_registrar_to_not_sip_is_400() -> None:
    # RFC 4475 §3.3.4 unksm2: "A registrar would reject this request with a 400".
    outcome = _do(_registrar(), _register(to="isbn:2983792873"))
    assert outcome == RegisterOutcome(status=400, reason="To Must Be a SIP URI")


def test_registrar_out_of_order_cseq_is_500() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600, cseq=5))
    for cseq in (5, 4):
        outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", expires=900, cseq=cseq))
        assert outcome == RegisterOutcome(status=500, reason="Out of Order CSeq")
    assert registrar.lookup("alice@example.com", NOW)[0].expires_at == NOW + 600


def test_registrar_out_of_order_removal_is_500() -> None:
    # §10.3 step 7: an older REGISTER must not remove a binding a newer one made.
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600, cseq=5))
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", expires=0, cseq=4))
    assert outcome == RegisterOutcome(status=500, reason="Out of Order CSeq")
    assert len(registrar.lookup("alice@example.com", NOW)) == 1


def test_registrar_lower_cseq_with_other_call_id_is_accepted() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600, cseq=5))
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", call_id="other", cseq=1))
    assert outcome.status == 200
    assert outcome.upserts[0].call_id == "other"


def test_registrar_too_many_contacts_counts_existing_bindings() -> None:
    registrar = _registrar(max_contacts_per_aor=2)
    assert _do(registrar, _register("<sip:a@192.0.2.1>", "<sip:a@192.0.2.2>")).status == 200
    outcome = _do(registrar, _register("<sip:a@192.0.2.3>", cseq=2))
    assert outcome == RegisterOutcome(status=403, reason="Too Many Contacts")
    # Replacing one contact by another in one REGISTER fits.
    outcome = _do(registrar, _register("<sip:a@192.0.2.1>;expires=0", "<sip:a@192.0.2.3>", cseq=3))
    assert outcome.status == 200
    assert [b.contact for b in registrar.lookup("alice@example.com", NOW)] == [
        "sip:a@192.0.2.2",
        "sip:a@192.0.2.3",
    ]


# -- expiry ---------------------------------------------------------------------------


def test_registrar_expire_sweeps_lapsed_bindings() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=60))
    _do(registrar, _register("<sip:alice@192.0.2.2>", expires=600, cseq=2))
    assert registrar.expire(NOW + 59) == []
    assert registrar.expire(NOW + 60) == [("alice@example.com", "sip:alice@192.0.2.1")]
    assert [b.contact for b in registrar.lookup("alice@example.com", NOW + 60)] == [
        "sip:alice@192.0.2.2"
    ]
    assert registrar.expire(NOW + 600) == [("alice@example.com", "sip:alice@192.0.2.2")]
    assert registrar.statistics() == RegistrarStatistics(
        aors=0, bindings=0, registrations=2, refusals=0, expired=2
    )


def test_registrar_lookup_hides_lapsed_bindings_before_sweep() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=60))
    assert registrar.lookup("alice@example.com", NOW + 60) == []
    assert registrar.lookup("nobody@example.com", NOW) == []


def test_registrar_lapsed_bindings_dropped_on_register_are_reported_as_removals() -> None:
    registrar = _registrar()
    registrar.load([_binding("sip:old@192.0.2.7", NOW - 1)])
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600, cseq=2))
    # The store must forget the lapsed binding too; the sweep will no longer see it.
    assert outcome.removals == (("alice@example.com", "sip:old@192.0.2.7"),)
    assert registrar.expire(NOW + 1) == []
    assert registrar.statistics().expired == 1


def test_registrar_lapsed_binding_registered_again_is_not_removed() -> None:
    registrar = _registrar()
    registrar.load([_binding("sip:alice@192.0.2.1", NOW - 1, cseq=1)])
    outcome = _do(registrar, _register("<sip:alice@192.0.2.1>", expires=600, cseq=2))
    assert outcome.removals == ()
    assert [b.contact for b in outcome.upserts] == ["sip:alice@192.0.2.1"]


def test_registrar_load_restores_bindings() -> None:
    registrar = _registrar()
    registrar.load([_binding("sip:alice@192.0.2.1", NOW + 100)])
    assert [b.contact for b in registrar.lookup("alice@example.com", NOW)] == [
        "sip:alice@192.0.2.1"
    ]
    assert registrar.statistics().aors == 1


def test_registrar_statistics_count_refusals() -> None:
    registrar = _registrar()
    _do(registrar, _register("<sip:alice@192.0.2.1>"))
    _do(registrar, _register("<sip:alice@192.0.2.1>", expires=1, cseq=2))
    _do(registrar, _register("<sip:bob@192.0.2.1>"), user="bob")
    assert registrar.statistics() == RegistrarStatistics(
        aors=1, bindings=1, registrations=1, refusals=2, expired=0
    )
