"""Where a live audit looks (audit/targets.py), and the CLI's limits on targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.voipsec import voipsec
from voipsec.audit.targets import (
    MAX_TARGETS,
    SipTarget,
    TargetError,
    TurnTarget,
    parse_host_port,
    parse_target,
    parse_turn,
)


def test_targets_sips_with_and_without_port() -> None:
    assert parse_target("sips:pbx.example.org:5062") == SipTarget("pbx.example.org", 5062)
    assert parse_target("SIPS:192.0.2.1") == SipTarget("192.0.2.1", 5061)
    assert str(parse_target("sips:[2001:db8::1]:5061")) == "sips:[2001:db8::1]:5061"


def test_targets_turn_default_port_and_scheme() -> None:
    assert parse_turn("127.0.0.1") == TurnTarget("127.0.0.1", 3478)
    assert parse_turn("turn:127.0.0.1:3479") == TurnTarget("127.0.0.1", 3479)
    assert str(parse_turn("[::1]:3478")) == "turn:[::1]:3478"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sip:192.0.2.1:5060", "'sip:192.0.2.1:5060': a target is sips:HOST:PORT (TLS only)"),
        ("sips:[::1", "'[::1': unclosed '['"),
        ("sips:[::1]5061", "'[::1]5061': expected ':PORT' after ']'"),
        ("sips:[pbx]:5061", "'[pbx]:5061': not an IPv6 address in brackets"),
        ("sips:::1:5061", "'::1:5061': put an IPv6 address in brackets"),
        ("sips:pbx_1:5061", "'pbx_1:5061': not a host name or address"),
        ("sips:pbx:0", "'pbx:0': port must be 1-65535"),
        ("sips:pbx:65536", "'pbx:65536': port must be 1-65535"),
        ("sips:pbx:x", "'pbx:x': port must be 1-65535"),
    ],
)
def test_targets_refused_with_reason(text: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(text)
    assert str(caught.value) == message


def test_targets_port_needed_without_default() -> None:
    with pytest.raises(TargetError, match=r"^'pbx': a port is needed \(HOST:PORT\)$"):
        parse_host_port("pbx")


def test_cli_audit_more_than_max_targets_is_one_line(tmp_path: Path) -> None:
    args = ["--target", "sips:127.0.0.1:5061"] * MAX_TARGETS + ["--turn", "127.0.0.1:3478"]
    result = voipsec("audit", *args, data_dir=tmp_path, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"voipsec: error: at most {MAX_TARGETS} targets per run\n",
    )
    assert not (tmp_path / "audit").exists()


def test_cli_audit_bad_target_and_format_are_one_line(tmp_path: Path) -> None:
    bad = voipsec("audit", "--turn", "[::1", data_dir=tmp_path, check=False)
    assert (bad.returncode, bad.stderr) == (1, "voipsec: error: '[::1': unclosed '['\n")
    fmt = voipsec("audit", "--format", "xml", data_dir=tmp_path, check=False)
    assert (fmt.returncode, fmt.stderr) == (
        1,
        "voipsec: error: --format must be one of text, json, md, sarif\n",
    )
    under = voipsec("audit", "--fail-under", "101", data_dir=tmp_path, check=False)
    assert (under.returncode, under.stderr) == (1, "voipsec: error: --fail-under must be 0-100\n")


def test_own_targets_probe_any_address_listeners_on_loopback() -> None:
    """Review 3 #1: a listener on 0.0.0.0 or :: is probed on 127.0.0.1 or ::1 (the
    certificate names loopback, and the server's zones see the probes' real source)."""
    from voipsec.audit.cli import own_targets
    from voipsec.config import Config

    config = Config.model_validate(
        {
            "sip": {"listen": ["udp:0.0.0.0:5060", "tls:0.0.0.0:5095"]},
            "turn": {"listen": ["tcp:0.0.0.0:3478", "udp:[::]:3479"]},
        }
    )
    assert own_targets(config) == ([SipTarget("127.0.0.1", 5095)], [TurnTarget("::1", 3479)])
    six = Config.model_validate({"sip": {"listen": ["tls:[::]:5061"]}})
    assert own_targets(six)[0] == [SipTarget("::1", 5061)]
    assert own_targets(Config())[0] == [SipTarget("127.0.0.1", 5061)]
