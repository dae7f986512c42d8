"""What one phone learns of the other through voipsec's B2BUA (issue 16, items 3, 4).

Real peers, one server for the module (MD5 digest: baresip 1.0.0 and SIPp answer
nothing else; ``media.sdp_allow_attributes = ["x-allowed"]``):

* alice and bob, two baresip 1.0.0 phones over TLS, call each other. baresip says
  what it is (User-Agent, ``a=tool:baresip``) and what it does (Allow with REFER,
  SUBSCRIBE, NOTIFY, MESSAGE; Supported). Each phone's SIP trace shows what voipsec
  wrote to it: voipsec's own Allow, and an SDP with voipsec's own o=, ``s=-`` and no
  ``a=tool``. alice puts bob on hold (a re-INVITE): each leg keeps its own session id
  and its version grows by one (RFC 3264 §8).
* carol, a registered SIPp over TLS (a stunnel client hop), answers alice with
  ``tests/data/sipp/call_uas_leaky.xml``: every header and SDP line a phone may leak.
  alice's trace shows none of it but what the allow-lists pass (``b=AS``, and the
  admin's ``a=x-allowed``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, TraceEntry, account_line, free_sip_ports
from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import start_sipp, write_csv
from tests.peers.stunnel import stunnel_client
from tests.peers.voipsec import VoipsecServer, prepare, serving
from voipsec.core.dispatch import DIALOG_ALLOW
from voipsec.media.sdp import parse_sdp

pytestmark = pytest.mark.peers

DEADLINE = 15.0
#: SIPp ends a moment after the call (unregistering); it is killed if it has not by then.
SIPP_EXIT = 30.0
CAROL = ("carol", "carol-secret-333")
SETTINGS = [("auth.algorithms", '["MD5"]'), ("media.sdp_allow_attributes", '["x-allowed"]')]
PHONE_SETTINGS = "mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU"
ROOT = Path(__file__).resolve().parents[2]
REGISTER_SCENARIO = ROOT / "bench" / "sipp" / "call_uas_register.xml"
LEAKY_SCENARIO = ROOT / "tests" / "data" / "sipp" / "call_uas_leaky.xml"
#: Headers that describe a phone, not voipsec: they never reach the other phone.
PHONE_HEADERS = (
    "User-Agent",
    "Server",
    "Supported",
    "Allow-Events",
    "Accept",
    "Organization",
    "Call-Info",
    "Reply-To",
)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    data = tmp_path_factory.mktemp("hiding") / "data"
    prepared = prepare(data, users=[ALICE, BOB, CAROL], settings=SETTINGS)
    with serving(prepared) as running:
        yield running


def _phone(workdir: Path, server: VoipsecServer, user: tuple[str, str]) -> Baresip:
    sip_port, ctrl_port = free_sip_ports()
    return Baresip(
        workdir,
        account_line=account_line(user[0], user[1], server_port=server.port, extra=PHONE_SETTINGS),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
    )


@pytest.fixture(scope="module")
def phones(
    server: VoipsecServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Baresip, Baresip]]:
    workdir = tmp_path_factory.mktemp("phones")
    with ExitStack() as stack:
        alice = stack.enter_context(_phone(workdir / "alice", server, ALICE))
        bob = stack.enter_context(_phone(workdir / "bob", server, BOB))
        for ua in (alice, bob):
            event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
            assert event["type"] == "REGISTER_OK", (event, ua.log_text()[-3000:])
        server.wait_bindings("bob", 1, deadline=DEADLINE)
        yield alice, bob


# -- helpers --------------------------------------------------------------------------


def _traffic(ua: Baresip, server: VoipsecServer, since: int) -> list[TraceEntry]:
    """What ``ua`` exchanged with voipsec after the first ``since`` trace entries."""
    address = f"{server.host}:{server.port}"
    return [e for e in ua.sip_trace()[since:] if address in (e.src, e.dst)]


def _received(entries: list[TraceEntry], server: VoipsecServer, start: str) -> list[TraceEntry]:
    address = f"{server.host}:{server.port}"
    return [e for e in entries if e.src == address and e.start_line.startswith(start)]


def _sent(entries: list[TraceEntry], server: VoipsecServer, start: str) -> list[TraceEntry]:
    address = f"{server.host}:{server.port}"
    return [e for e in entries if e.dst == address and e.start_line.startswith(start)]


def _body(entry: TraceEntry) -> str:
    return entry.text.split("\n\n", 1)[1] if "\n\n" in entry.text else ""


def _call(
    alice: Baresip, uri: str, answer: Baresip | None, during: Callable[[], None] | None = None
) -> None:
    """alice calls ``uri``; ``answer`` (a baresip) accepts it, else the callee answers
    on its own; once the call is up, ``during`` runs and alice hangs up. The phones live
    for the module: only events after this call's start count."""
    seen = len(alice.events())
    answer_seen = len(answer.events()) if answer is not None else 0
    alice.send("dial", uri)
    if answer is not None:
        answer.wait_event("CALL_INCOMING", deadline=DEADLINE, after=answer_seen)
        answer.send("accept")
    event = alice.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE, after=seen)
    assert event["type"] == "CALL_ESTABLISHED", (event, alice.log_text()[-3000:])
    if during is not None:
        during()
    alice.send("hangup")
    alice.wait_event("CALL_CLOSED", deadline=DEADLINE, after=seen)
    if answer is not None:
        answer.wait_event("CALL_CLOSED", deadline=DEADLINE, after=answer_seen)


def _assert_ours(entry: TraceEntry) -> None:
    """``entry`` (written by voipsec) carries voipsec's Allow and nothing of the phone."""
    assert entry.headers("Allow") == [DIALOG_ALLOW], entry.text
    for name in PHONE_HEADERS:
        assert entry.headers(name) == [], (name, entry.text)


def _assert_our_sdp(text: str) -> tuple[str, int]:
    """The SDP voipsec wrote: its own origin and session name; returns its o= session
    id and version."""
    sdp = parse_sdp(text.encode())
    assert sdp.origin.startswith("- "), text
    assert sdp.origin.endswith(" IN IP4 127.0.0.1"), text
    assert sdp.session_name == "-", text
    assert "a=tool" not in text, text
    return sdp.session_id, sdp.version


def _invite_oks(entries: list[TraceEntry], server: VoipsecServer) -> list[TraceEntry]:
    """The 200s to INVITEs voipsec sent to a phone."""
    oks = _received(entries, server, "SIP/2.0 200 ")
    return [r for r in oks if r.headers("CSeq")[0].endswith(" INVITE")]


# -- tests ----------------------------------------------------------------------------


def test_baresip_call_each_phone_gets_voipsec_allow_and_sdp(
    server: VoipsecServer, phones: tuple[Baresip, Baresip]
) -> None:
    alice, bob = phones
    a_since, b_since = len(alice.sip_trace()), len(bob.sip_trace())

    def hold() -> None:
        """alice puts bob on hold: a re-INVITE relayed to bob, its 200 back to alice."""
        alice.send("hold")
        wait_for(
            lambda: (
                len(_invite_oks(_traffic(alice, server, a_since), server)) == 2
                and len(_received(_traffic(bob, server, b_since), server, "INVITE ")) == 2
            ),
            deadline=DEADLINE,
            what="the hold re-INVITE and its answer",
        )

    _call(alice, "sip:bob@localhost", answer=bob, during=hold)
    a_leg, b_leg = _traffic(alice, server, a_since), _traffic(bob, server, b_since)

    # What the phones said of themselves (so the test shows something was withheld).
    invite = _sent(a_leg, server, "INVITE ")[0]
    assert "REFER" in invite.headers("Allow")[0], invite.text
    assert invite.headers("User-Agent"), invite.text
    assert "a=tool:baresip" in _body(invite), invite.text
    answer = next(r for r in _sent(b_leg, server, "SIP/2.0 200 ") if _body(r))
    assert "REFER" in answer.headers("Allow")[0], answer.text
    assert "a=tool:baresip" in _body(answer), answer.text

    # What each phone got: voipsec's Allow and SDP, never the other phone's.
    b_invite, b_hold = _received(b_leg, server, "INVITE ")
    ringing = _received(a_leg, server, "SIP/2.0 180 ")
    a_ok, a_hold_ok = _invite_oks(a_leg, server)
    assert ringing, [e.start_line for e in a_leg]
    for written in (b_invite, b_hold, *ringing, a_ok, a_hold_ok):
        _assert_ours(written)
    b_origin = _assert_our_sdp(_body(b_invite))
    a_origin = _assert_our_sdp(_body(a_ok))
    assert a_origin[0] != b_origin[0]  # each leg is a session of voipsec's own
    # RFC 3264 §8: the hold changed each leg's SDP, so each leg's version grew by one.
    assert _assert_our_sdp(_body(b_hold)) == (b_origin[0], b_origin[1] + 1)
    assert _assert_our_sdp(_body(a_hold_ok)) == (a_origin[0], a_origin[1] + 1)
    assert "a=sendonly" in _body(b_hold).splitlines(), b_hold.text


def test_leaky_sipp_callee_reaches_the_caller_only_through_the_allow_lists(
    server: VoipsecServer, phones: tuple[Baresip, Baresip], tmp_path: Path
) -> None:
    alice, _ = phones
    hop, port = free_port(), free_port()
    contact = f"sip:carol@127.0.0.1:{port};transport=tls"
    inf = write_csv(tmp_path / "carol.csv", [(CAROL[0], CAROL[1], "localhost", "1")])
    since = len(alice.sip_trace())
    with (
        stunnel_client(hop, server.host, server.port, server.ca, tmp_path / "stunnel"),
        start_sipp(
            REGISTER_SCENARIO,
            f"127.0.0.1:{hop}",
            workdir=tmp_path / "sipp",
            inf_csv=inf,
            calls=1,
            local_port=port,
            ooc_scenario=LEAKY_SCENARIO,
            keys={"uas_contact": contact},
            extra=["-auth_uri", "localhost"],
            timeout=30.0,
            trace_logs=True,
        ) as carol,
    ):
        server.wait_bindings("carol", 1, deadline=DEADLINE)
        _call(alice, "sip:carol@localhost", answer=None)
        result = carol.wait(SIPP_EXIT)
    assert (result.successful, result.failed, result.returncode) == (1, 0, 0), result.error_tail()
    # carol was offered voipsec's Allow, not alice's.
    (logged,) = result.log_lines("INVITE ")
    assert logged.split(" allow=", 1)[1].strip() == DIALOG_ALLOW, logged
    assert len(result.log_lines("DONE leaky ")) == 1, result.log_lines()

    a_leg = _traffic(alice, server, since)
    ringing = _received(a_leg, server, "SIP/2.0 180 ")
    ok = _invite_oks(a_leg, server)
    assert ringing and ok, [e.start_line for e in a_leg]
    for response in (*ringing, *ok):
        _assert_ours(response)
        assert "Leaky" not in response.text and "leaky" not in response.text, response.text
    sdp = _body(ok[-1])
    _assert_our_sdp(sdp)
    lines = sdp.splitlines()
    assert not [x for x in lines if x[:2] in ("i=", "u=", "e=", "p=", "k=", "r=", "z=")], sdp
    assert "b=AS:64" in lines, sdp  # bandwidth is media-relevant (RFC 3556)
    assert "a=x-allowed:yes" in lines, sdp  # media.sdp_allow_attributes
    assert "b=X-LEAKY:999" not in lines, sdp
    assert not [x for x in lines if "ssrc" in x or "x-leaky" in x], sdp
