"""HEP export of a real call keeps SRTP keys and digest secrets out of the capture
(issue 13, finding 4), read by sipcapture's own decoder hep-js.

bob registers with SHA-256 digest, alice calls him with proxy credentials and an SDES
offer, bob answers with his own key and voipsec hands each phone its relay key: eight
``a=crypto`` lines and two digest responses cross the server. With the
default ``hep.redact = true`` none of those secrets reaches the collector, every
credential and key line has exactly the SIP log's redacted form, and the rest of the
SIP (Call-ID correlation, the dialog) is intact. With ``hep.redact = false`` they do
reach it, and the server warns at start that it is a lab setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_media import SUITE, scripted_call
from tests.peers.hepjs import HepJsCollector, hep_js_collector
from tests.peers.proc import wait_for
from tests.peers.voipsec import prepare, serving
from voipsec.media.sdes import crypto_line

pytestmark = pytest.mark.peers

WARNING = (
    "HEP export carries secrets (digest responses, nonces, SDP keys) in clear:"
    " hep.redact = false is for labs only"
)
#: An Authorization or Proxy-Authorization line as the SIP log redacts it (RFC 7616
#: §3.4: response, nonce and cnonce go; who tried what stays).
REDACTED_CREDENTIALS = re.compile(
    r'(?:Proxy-)?Authorization: Digest username="(?:alice|bob)", realm="localhost", '
    r'nonce="<redacted>", uri="sip:[^"]+", response="<redacted>", '
    r'algorithm=(?:MD5|SHA-256), qop=auth, nc=00000001, cnonce="<redacted>"'
    r'(?:, opaque="[^"]*")?'
)
#: An SDES key line (RFC 4568 §9.1) with its key-salt redacted.
REDACTED_CRYPTO = re.compile(r"a=crypto:\d+ [A-Z0-9_]+ inline:<redacted>(?:\|\S+)*")
_CREDENTIAL_LINE = re.compile(r"^(?:Proxy-)?Authorization:.*$", re.IGNORECASE | re.MULTILINE)
_CRYPTO_LINE = re.compile(r"^a=crypto:.*$", re.MULTILINE)
_CALL_ID = re.compile(r"^Call-ID: (.+)$", re.MULTILINE)
_CONTENT_LENGTH = re.compile(r"^Content-Length: (\d+)$", re.MULTILINE)

Packets = list[tuple[dict[str, Any], str]]


def _sip(collector: HepJsCollector) -> Packets:
    """(rcinfo, payload with CRLF as LF) of every SIP packet decoded so far."""
    found = []
    for packet in collector.packets():
        info = packet.get("rcinfo")
        if isinstance(info, dict) and info.get("payloadType") == 1:
            found.append((info, str(packet["payload"]).replace("\r\n", "\n")))
    return found


def _bye_answered(collector: HepJsCollector) -> bool:
    return any(p.startswith("SIP/2.0 200") and "CSeq: 3 BYE" in p for _, p in _sip(collector))


def _call_through(tmp_path: Path, *, redact: bool) -> tuple[Packets, list[str], str, str]:
    """One call with HEP to hep-js: (SIP packets, the phones' own inline keys, alice's
    Call-ID, the server log)."""
    with hep_js_collector(tmp_path / "hep") as collector:
        settings = [("hep.target", f'"udp:127.0.0.1:{collector.port}"')]
        if not redact:
            settings.append(("hep.redact", "false"))
        prepared = prepare(tmp_path / "data", users=[ALICE, BOB], settings=settings)
        with serving(prepared) as server, scripted_call(server) as (alice, bob):
            keys = [
                crypto_line(1, SUITE, phone.media.master).key_params.removeprefix("inline:")
                for phone in (alice, bob)
            ]
            assert alice.hang_up().status == 200
            bob.wait_bye()
            wait_for(lambda: _bye_answered(collector), what="the BYE's 200 OK in HEP")
            log = server.log_text()
        packets = _sip(collector)
    assert [p for p in collector.packets() if "undecodable" in p] == []
    return packets, keys, alice.call_id, log


def test_hep_export_of_a_call_carries_no_srtp_key_and_no_digest_secret(tmp_path: Path) -> None:
    packets, keys, call_id, log = _call_through(tmp_path, redact=True)
    payloads = [payload for _, payload in packets]
    credentials = [line for p in payloads for line in _CREDENTIAL_LINE.findall(p)]
    crypto = [line for p in payloads for line in _CRYPTO_LINE.findall(p)]
    # bob's REGISTER and alice's INVITE carried credentials. Keys: alice's offer (in
    # her INVITE and its authenticated retry), voipsec's four suites to bob, bob's
    # answer, voipsec's answer to alice.
    assert len(credentials) == 2, credentials
    assert len(crypto) == 1 + 1 + 4 + 1 + 1, crypto
    for line in credentials:
        assert REDACTED_CREDENTIALS.fullmatch(line), line
    for line in crypto:
        assert REDACTED_CRYPTO.fullmatch(line), line
    everything = "\n".join(payloads)
    for key in keys:
        assert key not in everything
    assert re.search(r'response="[0-9a-f]', everything) is None
    # The rest of the SIP is intact: Homer correlates every packet by its Call-ID, and
    # Content-Length follows the redacted body, so collectors frame the message whole.
    for info, payload in packets:
        assert _CALL_ID.findall(payload) == [info["correlation_id"]], payload
        head, _, body = payload.partition("\n\n")
        length = len(body.replace("\n", "\r\n").encode())
        assert _CONTENT_LENGTH.findall(head) == [str(length)], payload
    assert call_id in {info["correlation_id"] for info, _ in packets}
    assert WARNING not in log


def test_hep_redact_false_exports_the_secrets_and_warns(tmp_path: Path) -> None:
    packets, keys, call_id, log = _call_through(tmp_path, redact=False)
    everything = "\n".join(payload for _, payload in packets)
    for key in keys:
        assert f"inline:{key}" in everything
    assert len(re.findall(r'response="[0-9a-f]{32,64}"', everything)) == 2
    assert "<redacted>" not in everything
    assert WARNING in log
    assert call_id in {info["correlation_id"] for info, _ in packets}
