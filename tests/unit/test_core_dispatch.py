"""core/dispatch.py: every branch, with plain data (no parser, no service, no clock)."""

from __future__ import annotations

import pytest

from voipsec.core.dispatch import (
    ALLOW,
    Answer,
    Discard,
    DiscardReason,
    DispatchPolicy,
    Handler,
    IdsVerdict,
    RequestFacts,
    ToHandler,
    admit,
    dispatch,
    inspects,
    unsupported_requires,
)
from voipsec.edge.sanity import SanityFailure

DOMAIN = "example.test"
POLICY = DispatchPolicy(domains=frozenset({DOMAIN, "127.0.0.1"}))
DROPPING = DispatchPolicy(domains=POLICY.domains, sanity_drops=True)
HOPS = SanityFailure(check="max_forwards", status=483, reason="Too Many Hops")
IDS_REPLY = IdsVerdict(rule="scanner-user-agent", status=403)
IDS_DROP = IdsVerdict(rule="malformed-burst", status=0)


def _facts(method: str, **fields: object) -> RequestFacts:
    values: dict[str, object] = {"method": method, "in_dialog": False, "uri_host": DOMAIN}
    values.update(fields)
    return RequestFacts(**values)  # type: ignore[arg-type]


def test_core_dispatch_admit_full_table_is_503_retry_after_without_to_tag() -> None:
    assert admit("INVITE", table_full=True) == Answer(
        status=503, reason="Service Unavailable", headers=(("Retry-After", "5"),), to_tag=False
    )


def test_core_dispatch_admit_ack_or_room_left_is_admitted() -> None:
    assert admit("ACK", table_full=True) is None
    assert admit("REGISTER", table_full=False) is None


def test_core_dispatch_inspects_every_method_but_ack() -> None:
    assert [inspects(m) for m in ("ACK", "INVITE", "REGISTER", "FOO")] == [
        False,
        True,
        True,
        True,
    ]


def test_core_dispatch_ack_goes_to_the_call_layer_whatever_else_is_known() -> None:
    facts = _facts("ACK", in_dialog=True, uri_host=None, ids=IDS_DROP, sanity=HOPS)
    assert dispatch(facts, DROPPING) == ToHandler(handler=Handler.ACK)


def test_core_dispatch_ids_drop_wins_over_everything() -> None:
    facts = _facts("INVITE", ids=IDS_DROP, sanity=HOPS)
    assert dispatch(facts, DROPPING) == Discard(reason=DiscardReason.IDS)


def test_core_dispatch_sanity_drop_wins_over_an_ids_reply() -> None:
    facts = _facts("INVITE", ids=IDS_REPLY, sanity=HOPS)
    assert dispatch(facts, DROPPING) == Discard(reason=DiscardReason.SANITY)


def test_core_dispatch_ids_reply_is_its_status_forbidden() -> None:
    facts = _facts("REGISTER", ids=IdsVerdict(rule="r", status=404), sanity=HOPS)
    assert dispatch(facts, POLICY) == Answer(status=404, reason="Forbidden")


def test_core_dispatch_sanity_failure_is_answered_with_its_status() -> None:
    facts = _facts("INVITE", sanity=HOPS, requires=("foo",))
    assert dispatch(facts, POLICY) == Answer(status=483, reason="Too Many Hops")


def test_core_dispatch_unsupported_require_is_420_with_unsupported() -> None:
    facts = _facts("REGISTER", requires=("path", "foo", "Outbound", "100rel"))
    assert dispatch(facts, POLICY) == Answer(
        status=420, reason="Bad Extension", headers=(("Unsupported", "foo, 100rel"),)
    )


def test_core_dispatch_supported_require_passes() -> None:
    facts = _facts("REGISTER", requires=("path", "OUTBOUND"))
    assert dispatch(facts, POLICY) == ToHandler(handler=Handler.REGISTRAR)


def test_core_dispatch_cancel_and_ack_never_get_420() -> None:
    assert unsupported_requires(_facts("CANCEL", requires=("foo",))) == []
    assert unsupported_requires(_facts("ACK", requires=("foo",))) == []
    assert dispatch(_facts("CANCEL", requires=("foo",)), POLICY) == ToHandler(
        handler=Handler.CANCEL
    )


def test_core_dispatch_non_sip_uri_is_416() -> None:
    facts = _facts("INVITE", uri_host=None)
    assert dispatch(facts, POLICY) == Answer(status=416, reason="Unsupported URI Scheme")


def test_core_dispatch_method_outside_the_zone_policy_is_403() -> None:
    facts = _facts("INVITE", zone_methods=frozenset({"OPTIONS"}))
    assert dispatch(facts, POLICY) == Answer(status=403, reason="Not Allowed From This Zone")


def test_core_dispatch_method_inside_the_zone_policy_passes() -> None:
    facts = _facts("OPTIONS", zone_methods=frozenset({"OPTIONS"}))
    assert dispatch(facts, POLICY).status == 200  # type: ignore[union-attr]


def test_core_dispatch_register_from_a_zone_that_may_not_is_403() -> None:
    facts = _facts("REGISTER", zone_may_register=False)
    assert dispatch(facts, POLICY) == Answer(status=403, reason="Not Allowed From This Zone")


def test_core_dispatch_register_for_a_foreign_domain_is_404() -> None:
    facts = _facts("REGISTER", uri_host="elsewhere.test")
    assert dispatch(facts, POLICY) == Answer(status=404, reason="Domain Not Served")


@pytest.mark.parametrize("host", [DOMAIN, "127.0.0.1"])
def test_core_dispatch_register_for_our_domain_goes_to_the_registrar(host: str) -> None:
    assert dispatch(_facts("REGISTER", uri_host=host), POLICY) == ToHandler(
        handler=Handler.REGISTRAR
    )


def test_core_dispatch_register_with_a_to_tag_still_goes_to_the_registrar() -> None:
    facts = _facts("REGISTER", in_dialog=True)
    assert dispatch(facts, POLICY) == ToHandler(handler=Handler.REGISTRAR)


def test_core_dispatch_cancel_goes_to_cancel_in_or_out_of_dialog() -> None:
    assert dispatch(_facts("CANCEL"), POLICY) == ToHandler(handler=Handler.CANCEL)
    assert dispatch(_facts("CANCEL", in_dialog=True), POLICY) == ToHandler(handler=Handler.CANCEL)


@pytest.mark.parametrize("method", ["INVITE", "BYE", "UPDATE", "INFO", "PRACK", "SUBSCRIBE", "X"])
def test_core_dispatch_to_tag_routes_in_dialog(method: str) -> None:
    facts = _facts(method, in_dialog=True)
    assert dispatch(facts, POLICY) == ToHandler(handler=Handler.IN_DIALOG)


def test_core_dispatch_initial_invite_goes_to_the_call_layer() -> None:
    assert dispatch(_facts("INVITE"), POLICY) == ToHandler(handler=Handler.INVITE)


@pytest.mark.parametrize("in_dialog", [False, True])
def test_core_dispatch_options_is_answered_200_in_or_out_of_dialog(in_dialog: bool) -> None:
    assert dispatch(_facts("OPTIONS", in_dialog=in_dialog), POLICY) == Answer(
        status=200,
        reason="OK",
        headers=(
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, REFER"),
            ("Accept", "application/sdp"),
            ("Supported", "outbound, path"),
        ),
    )


@pytest.mark.parametrize("method", ["BYE", "UPDATE", "INFO", "PRACK", "REFER"])
def test_core_dispatch_dialog_method_outside_a_dialog_is_481(method: str) -> None:
    assert dispatch(_facts(method), POLICY) == Answer(
        status=481, reason="Call/Transaction Does Not Exist"
    )


@pytest.mark.parametrize("method", ["SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH"])
def test_core_dispatch_known_unserved_method_is_405_with_allow(method: str) -> None:
    assert dispatch(_facts(method), POLICY) == Answer(
        status=405, reason="Method Not Allowed", headers=(("Allow", ALLOW),)
    )


@pytest.mark.parametrize("method", ["FOO", "register", "PING"])
def test_core_dispatch_unknown_method_is_501_with_allow(method: str) -> None:
    assert dispatch(_facts(method), POLICY) == Answer(
        status=501, reason="Not Implemented", headers=(("Allow", ALLOW),)
    )
