"""The SIP message log (voipsec.monitor.siplog): redaction, JSON lines, rotation."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voipsec.monitor.siplog import (
    FILE_MODE,
    MAX_BACKUPS,
    MAX_LOGGED_MESSAGE,
    SipLog,
    SipLogStatistics,
    redact,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "ids"

#: baresip 1.0.0 (Debian ``baresip-core``), account
#: ``<sip:alice@example.test;transport=udp>;auth_pass=alice-secret-1;mediaenc=srtp-mand``
#: with an outbound proxy on 127.0.0.1, dialling sip:bob@example.test: its second INVITE,
#: after a 407 with ``qop="auth"``, byte for byte as a Python UDP listener received it
#: (captured 2026-11-28 on the development machine, loopback only).
BARESIP_INVITE = b"\r\n".join(
    [
        b"INVITE sip:bob@example.test;transport=udp SIP/2.0",
        b"Via: SIP/2.0/UDP 127.0.0.1:58705;branch=z9hG4bKa453dabfee0d1670;rport",
        b"Contact: <sip:alice-0x55dac1e68370@127.0.0.1:58705>",
        b"Max-Forwards: 70",
        b'Proxy-Authorization: Digest username="alice", realm="example.test", '
        b'nonce="6f1c3a5e9b2d4c7a8e0f1b3d5a7c9e1f", uri="sip:bob@example.test;transport=udp", '
        b'response="d7591d8b31830680c1592a47ce54a4d1", cnonce="ccfeb123b67b4df8", qop=auth, '
        b"nc=00000001",
        b"Route: <sip:127.0.0.1:55862;transport=udp;lr>",
        b"To: <sip:bob@example.test;transport=udp>",
        b"From: <sip:alice@example.test>;tag=c4fc559b7ef46de7",
        b"Call-ID: 395dc802343e4e5c",
        b"CSeq: 7969 INVITE",
        b"User-Agent: baresip v1.0.0 (x86_64/linux)",
        b"Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,REFER",
        b"Supported:",
        b"Content-Type: application/sdp",
        b"Content-Length: 427",
        b"",
        b"v=0",
        b"o=- 2931797302 1732597206 IN IP4 127.0.0.1",
        b"s=-",
        b"c=IN IP4 127.0.0.1",
        b"t=0 0",
        b"a=tool:baresip 1.0.0",
        b"m=audio 15712 RTP/SAVP 0 8 101",
        b"a=rtpmap:0 PCMU/8000",
        b"a=rtpmap:8 PCMA/8000",
        b"a=rtpmap:101 telephone-event/8000",
        b"a=fmtp:101 0-15",
        b"a=sendrecv",
        b"a=label:1",
        b"a=rtcp-rsize",
        b"a=ssrc:1024011780 cname:sip:alice@example.test",
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:tE3BkffSk5qXHmHF8w21VK0JdvR1V8x1NVPvlPtT",
        b"a=minptime:20",
        b"a=ptime:20",
        b"",
    ]
)
SECRETS = (
    b"6f1c3a5e9b2d4c7a8e0f1b3d5a7c9e1f",
    b"d7591d8b31830680c1592a47ce54a4d1",
    b"ccfeb123b67b4df8",
    b"tE3BkffSk5qXHmHF8w21VK0JdvR1V8x1NVPvlPtT",
)


# -- redaction --------------------------------------------------------------------------


def test_siplog_redact_baresip_invite_exactly() -> None:
    expected = (
        BARESIP_INVITE.replace(b'nonce="6f1c3a5e9b2d4c7a8e0f1b3d5a7c9e1f"', b'nonce="<redacted>"')
        .replace(b'response="d7591d8b31830680c1592a47ce54a4d1"', b'response="<redacted>"')
        .replace(b'cnonce="ccfeb123b67b4df8"', b'cnonce="<redacted>"')
        .replace(b"inline:tE3BkffSk5qXHmHF8w21VK0JdvR1V8x1NVPvlPtT", b"inline:<redacted>")
        # The 40-character key became 10: the body is 30 bytes shorter.
        .replace(b"Content-Length: 427", b"Content-Length: 397")
    )
    redacted = redact(BARESIP_INVITE)
    assert redacted == expected
    assert len(redacted.partition(b"\r\n\r\n")[2]) == 397
    assert b'Proxy-Authorization: Digest username="alice", realm="example.test", ' in redacted
    assert b'uri="sip:bob@example.test;transport=udp"' in redacted
    assert not any(secret in redacted for secret in SECRETS)


def test_siplog_redact_baresip_register_exactly() -> None:
    message = (DATA / "baresip-register-2.sip").read_bytes()
    line = next(x for x in redact(message).split(b"\r\n") if x.startswith(b"Authorization"))
    assert line == (
        b'Authorization: Digest username="alice", realm="test", nonce="<redacted>", '
        b'uri="sip:127.0.0.1:15993;transport=udp", response="<redacted>"'
    )


def test_siplog_redact_svcrack_register_without_spaces_exactly() -> None:
    message = (DATA / "svcrack-register-2.sip").read_bytes()
    line = next(x for x in redact(message).split(b"\r\n") if x.startswith(b"Authorization"))
    assert line == (
        b'Authorization: Digest username="100",realm="test",nonce="<redacted>",'
        b'uri="sip:127.0.0.1",algorithm=MD5,qop=auth,response="<redacted>"'
    )


def test_siplog_redact_leaves_messages_without_secrets_alone() -> None:
    for name in ("sipp-uac-invite.sip", "svmap-options.sip", "svwar-register-1.sip"):
        message = (DATA / name).read_bytes()
        assert redact(message) == message


def test_siplog_redact_unquoted_tokens_folding_and_case() -> None:
    message = (
        b"REGISTER sip:example.test SIP/2.0\r\n"
        b"authorization : Digest username=bob,\r\n"
        b'  NONCE=abc123 , Response=def456,cnonce = "x\\"y"\r\n'
        b'WWW-Authenticate: Digest realm="r", nonce="server-challenge"\r\n'
        b"\r\n"
    )
    assert redact(message) == (
        b"REGISTER sip:example.test SIP/2.0\r\n"
        b"authorization : Digest username=bob,\r\n"
        b'  NONCE=<redacted> , Response=<redacted>,cnonce = "<redacted>"\r\n'
        b'WWW-Authenticate: Digest realm="r", nonce="server-challenge"\r\n'
        b"\r\n"
    )


def test_siplog_redact_quote_in_another_value_cannot_hide_the_response() -> None:
    message = (
        b'Proxy-Authorization: Digest username="a, response=\\"x", response="secret-1"\r\n\r\n'
    )
    assert redact(message) == (
        b'Proxy-Authorization: Digest username="a, response=\\"x", response="<redacted>"\r\n\r\n'
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b'Authorization: Digest response="unterminated', b"Authorization: Digest <redacted>"),
        (b"Authorization: Digest response secret", b"Authorization: Digest <redacted>"),
        (b'Authorization: Digest response="s" junk', b"Authorization: Digest <redacted>"),
        (b'Authorization: "quoted-scheme" x', b"Authorization: <redacted>"),
        (b"Authorization:", b"Authorization: <redacted>"),
    ],
)
def test_siplog_redact_unreadable_auth_header_loses_its_value(
    header: bytes, expected: bytes
) -> None:
    assert redact(b"INVITE sip:x SIP/2.0\r\n" + header + b"\r\n\r\n") == (
        b"INVITE sip:x SIP/2.0\r\n" + expected + b"\r\n\r\n"
    )


def test_siplog_redact_sdp_keys_keep_lifetime_and_mki() -> None:
    body = (
        b"v=0\n"
        b"k=base64:c2VjcmV0LWtleQ==\n"
        b"m=audio 4000 RTP/SAVP 0\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
        b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
        b";inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP\n"
        b"a=crypto:2 F8_128_HMAC_SHA1_80 unknown-method:abc\n"
        b"a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO\n"
        b"a=ice-ufrag:0230c78b\n"
        b"a=ice-pwd:d45c6daf0236fdbcb4cddf55\r\n"
    )
    assert redact(b"INVITE sip:x SIP/2.0\n\n" + body) == (
        b"INVITE sip:x SIP/2.0\n\n"
        b"v=0\n"
        b"k=<redacted>\n"
        b"m=audio 4000 RTP/SAVP 0\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>|2^20|1:4"
        b";inline:<redacted>|2^20|2:4 FEC_ORDER=FEC_SRTP\n"
        b"a=crypto:2 F8_128_HMAC_SHA1_80 <redacted>\n"
        b"a=key-mgmt:mikey <redacted>\n"
        b"a=ice-ufrag:0230c78b\n"
        b"a=ice-pwd:<redacted>\r\n"
    )


def test_siplog_redact_sdp_inside_multipart_body() -> None:
    message = (
        b"INVITE sip:x SIP/2.0\r\nContent-Type: multipart/mixed;boundary=b1\r\n\r\n"
        b"--b1\r\nContent-Type: application/sdp\r\n\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5\r\n"
        b"--b1--\r\n"
    )
    assert redact(message).count(b"inline:<redacted>\r\n") == 1
    assert b"S2V5" not in redact(message)


_KEYED_BODY = b"v=0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + b"K" * 40 + b"\r\n"
_CLEAN_BODY = b"v=0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>\r\n"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (b"Content-Length: 89", b"Content-Length: 59"),
        (b"l:89", b"l:59"),  # compact form (RFC 3261 §7.3.3)
        (b"content-length :  89 ", b"content-length :  59 "),
        (b"Content-Length: 99", b"Content-Length: 99"),  # was wrong: left as it was
        (b"Content-Length: 89\r\nContent-Length: 89", b"Content-Length: 89\r\nContent-Length: 89"),
    ],
)
def test_siplog_redact_content_length_follows_the_redacted_body(
    field: bytes, expected: bytes
) -> None:
    head = b"INVITE sip:x SIP/2.0\r\nCall-ID: c\r\n"
    assert len(_KEYED_BODY) == 89 and len(_CLEAN_BODY) == 59
    assert redact(head + field + b"\r\n\r\n" + _KEYED_BODY) == (
        head + expected + b"\r\n\r\n" + _CLEAN_BODY
    )


def test_siplog_redact_without_content_length_or_keys_keeps_the_head() -> None:
    head = b"INVITE sip:x SIP/2.0\r\nCall-ID: c\r\n\r\n"
    assert redact(head + _KEYED_BODY) == head + _CLEAN_BODY
    plain = head.replace(b"\r\n\r\n", b"\r\nContent-Length: 4\r\n\r\n") + b"v=0\n"
    assert redact(plain) == plain


@given(st.binary(max_size=2_000))
def test_siplog_redact_never_raises_on_random_bytes(data: bytes) -> None:
    redact(data)
    redact(b"INVITE sip:x SIP/2.0\r\nAuthorization: Digest " + data + b"\r\n\r\n" + data)


# -- the log file -----------------------------------------------------------------------


def write(siplog: SipLog, message: bytes = BARESIP_INVITE, **overrides: object) -> None:
    args: dict[str, object] = {
        "direction": "in",
        "local": ("127.0.0.1", 5061),
        "remote": ("192.0.2.7", 40001),
        "transport": "tls",
        "tls_identity": "alice@example.test",
        "call_id": "395dc802343e4e5c",
        "message": message,
        "time": 1_764_288_000.25,
    }
    args.update(overrides)
    siplog.write(**args)  # type: ignore[arg-type]


def test_siplog_writes_one_json_line_per_message(tmp_path: Path) -> None:
    siplog = SipLog(tmp_path / "sip.log")
    write(siplog)
    write(siplog, direction="out", local=("::1", 5061), remote=("2001:db8::7", 5060),
          tls_identity=None, call_id=None, message=b"SIP/2.0 100 Trying\r\n\r\n")  # fmt: skip
    siplog.close()
    lines = (tmp_path / "sip.log").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "time": 1_764_288_000.25,
            "direction": "in",
            "local": "127.0.0.1:5061",
            "remote": "192.0.2.7:40001",
            "transport": "tls",
            "tls_identity": "alice@example.test",
            "call_id": "395dc802343e4e5c",
            "size": len(BARESIP_INVITE),
            "truncated": False,
            "message": redact(BARESIP_INVITE).decode(),
        },
        {
            "time": 1_764_288_000.25,
            "direction": "out",
            "local": "[::1]:5061",
            "remote": "[2001:db8::7]:5060",
            "transport": "tls",
            "tls_identity": None,
            "call_id": None,
            "size": 22,
            "truncated": False,
            "message": "SIP/2.0 100 Trying\r\n\r\n",
        },
    ]
    assert not any(secret in (tmp_path / "sip.log").read_bytes() for secret in SECRETS)
    assert siplog.statistics() == SipLogStatistics(
        written=2,
        bytes_written=(tmp_path / "sip.log").stat().st_size,
        rotations=0,
        truncated=0,
        errors=0,
    )


def test_siplog_non_utf8_bytes_are_escaped(tmp_path: Path) -> None:
    siplog = SipLog(tmp_path / "sip.log")
    write(siplog, message=b"OPTIONS sip:\xff SIP/2.0\r\n\r\n")
    record = json.loads((tmp_path / "sip.log").read_text())
    assert record["message"] == "OPTIONS sip:\\xff SIP/2.0\r\n\r\n"


def test_siplog_message_over_limit_is_truncated(tmp_path: Path) -> None:
    siplog = SipLog(tmp_path / "sip.log")
    write(siplog, message=b"x" * (MAX_LOGGED_MESSAGE + 1))
    record = json.loads((tmp_path / "sip.log").read_text())
    assert (record["size"], record["truncated"]) == (MAX_LOGGED_MESSAGE + 1, True)
    assert record["message"] == "x" * MAX_LOGGED_MESSAGE
    assert siplog.statistics().truncated == 1


def test_siplog_file_mode_is_0600_even_for_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "sip.log"
    path.write_text("")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        siplog = SipLog(path, max_bytes=1_000, backups=2)
        for _ in range(3):
            write(siplog)  # each line is over 1,000 bytes: every write rotates
    finally:
        os.umask(old_umask)
    for name in ("sip.log", "sip.log.1", "sip.log.2"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == FILE_MODE


def test_siplog_rotates_when_exceeding_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "sip.log"
    siplog = SipLog(path, max_bytes=300, backups=2)
    messages = [f"OPTIONS sip:{n} SIP/2.0\r\n\r\n".encode() for n in range(5)]
    line_size = None
    for message in messages:
        write(siplog, message=message)
        line_size = line_size or path.stat().st_size
    # Each line is about 290 bytes: every write after the first rotates.
    assert line_size is not None and 150 < line_size <= 300

    def logged(name: str) -> list[str]:
        return [json.loads(x)["message"] for x in (tmp_path / name).read_text().splitlines()]

    assert logged("sip.log") == [messages[4].decode()]
    assert logged("sip.log.1") == [messages[3].decode()]
    assert logged("sip.log.2") == [messages[2].decode()]
    assert not (tmp_path / "sip.log.3").exists()
    stats = siplog.statistics()
    assert (stats.written, stats.rotations) == (5, 4)
    assert path.stat().st_size <= 300


def test_siplog_lines_accumulate_until_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "sip.log"
    siplog = SipLog(path, max_bytes=10_000, backups=1)
    for _ in range(3):
        write(siplog, message=b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert len(path.read_text().splitlines()) == 3
    assert siplog.statistics().rotations == 0


def test_siplog_without_backups_starts_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "sip.log"
    siplog = SipLog(path, max_bytes=300, backups=0)
    write(siplog, message=b"OPTIONS sip:1 SIP/2.0\r\n\r\n")
    write(siplog, message=b"OPTIONS sip:2 SIP/2.0\r\n\r\n")
    assert [p.name for p in tmp_path.iterdir()] == ["sip.log"]
    assert "sip:2" in path.read_text() and "sip:1" not in path.read_text()


def test_siplog_reopened_log_continues_its_size(tmp_path: Path) -> None:
    path = tmp_path / "sip.log"
    first = SipLog(path, max_bytes=500, backups=1)
    write(first, message=b"OPTIONS sip:1 SIP/2.0\r\n\r\n")
    first.close()
    second = SipLog(path, max_bytes=500, backups=1)
    write(second, message=b"OPTIONS sip:2 SIP/2.0\r\n\r\n")
    assert second.statistics().rotations == 1


def test_siplog_bad_path_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    siplog = SipLog(tmp_path / "no-such-dir" / "sip.log")
    with caplog.at_level(logging.DEBUG, logger="voipsec.siplog"):
        write(siplog)
        write(siplog)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "No such file or directory" in warnings[0].getMessage()
    assert siplog.statistics() == SipLogStatistics(
        written=0, bytes_written=0, rotations=0, truncated=0, errors=2
    )


def test_siplog_recovers_when_the_path_becomes_writable(tmp_path: Path) -> None:
    siplog = SipLog(tmp_path / "later" / "sip.log")
    write(siplog)
    (tmp_path / "later").mkdir()
    write(siplog)
    assert siplog.statistics().errors == 1
    assert siplog.statistics().written == 1


def test_siplog_settings_out_of_range_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=f"^backups must be 0-{MAX_BACKUPS}, not {MAX_BACKUPS + 1}$"
    ):
        SipLog(tmp_path / "sip.log", backups=MAX_BACKUPS + 1)
    with pytest.raises(ValueError, match=r"^max_bytes must be positive, not 0$"):
        SipLog(tmp_path / "sip.log", max_bytes=0)
