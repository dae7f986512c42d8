"""The monitoring hook: one redaction per message for the SIP log and HEP together,
and HEP redacted by default (issue 13, finding 4)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import pytest

from tests.unit.test_hep import parse_hep3
from tests.unit.test_siplog import BARESIP_INVITE, SECRETS
from voipsec.config import Config
from voipsec.events import EventBus, MessageSeen
from voipsec.monitor import service as monitor_service
from voipsec.monitor.service import MonitorService
from voipsec.monitor.siplog import redact
from voipsec.storage import Store


def _seen(direction: Literal["in", "out"]) -> MessageSeen:
    return MessageSeen(
        direction=direction,
        transport="tls",
        local=("127.0.0.1", 5061),
        peer=("127.0.0.1", 40000),
        tls_identity=None,
        data=BARESIP_INVITE,
    )


@asynccontextmanager
async def monitoring(
    tmp_path: Path, *, siplog: bool, hep_redact: bool | None
) -> AsyncIterator[tuple[MonitorService, socket.socket]]:
    """A started MonitorService exporting HEP to a UDP socket we read (HEP off when
    ``hep_redact`` is None)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    settings: dict[str, object] = {"siplog": {"enabled": siplog}, "metrics": {"listen": ""}}
    if hep_redact is not None:
        port = sink.getsockname()[1]
        settings["hep"] = {"target": f"udp:127.0.0.1:{port}", "redact": hep_redact}
    store = Store(tmp_path / "voipsec.db")
    monitor = MonitorService(
        config=Config.model_validate(settings), data_dir=tmp_path, store=store, events=EventBus()
    )
    await monitor.start()
    try:
        yield monitor, sink
    finally:
        await monitor.stop()
        store.close()
        sink.close()


async def _hep_payload(sink: socket.socket) -> bytes:
    packet = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sink, 70_000), 5)
    return dict((kind, value) for _, kind, value in parse_hep3(packet))[0x000F]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real: Callable[[bytes], bytes] = redact

    def counted(message: bytes) -> bytes:
        calls.append(message)
        return real(message)

    monkeypatch.setattr(monitor_service, "redact", counted)
    return calls


async def test_monitor_redacts_once_for_the_sip_log_and_hep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    async with monitoring(tmp_path, siplog=True, hep_redact=True) as (monitor, sink):
        monitor.message(_seen("in"))
        payload = await _hep_payload(sink)
    assert calls == [BARESIP_INVITE]
    logged = json.loads((tmp_path / "sip.log").read_text())["message"]
    assert payload == redact(BARESIP_INVITE)
    assert logged == redact(BARESIP_INVITE).decode()
    for secret in SECRETS:
        assert secret not in payload and secret.decode() not in logged


async def test_monitor_hep_alone_is_redacted_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    async with monitoring(tmp_path, siplog=False, hep_redact=True) as (monitor, sink):
        monitor.message(_seen("out"))
        payload = await _hep_payload(sink)
    assert (len(calls), payload) == (1, redact(BARESIP_INVITE))


async def test_monitor_hep_redact_false_sends_secrets_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = _counting(monkeypatch)
    caplog.set_level(logging.WARNING, logger="voipsec.monitor")
    async with monitoring(tmp_path, siplog=False, hep_redact=False) as (monitor, sink):
        monitor.message(_seen("in"))
        payload = await _hep_payload(sink)
    assert (calls, payload) == ([], BARESIP_INVITE)
    assert [r.getMessage() for r in caplog.records if r.name == "voipsec.monitor"] == [
        "HEP export carries secrets (digest responses, nonces, SDP keys) in clear:"
        " hep.redact = false is for labs only"
    ]


async def test_monitor_sip_log_stays_redacted_when_hep_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    async with monitoring(tmp_path, siplog=True, hep_redact=False) as (monitor, sink):
        monitor.message(_seen("in"))
        payload = await _hep_payload(sink)
    logged = json.loads((tmp_path / "sip.log").read_text())["message"]
    assert (len(calls), payload) == (1, BARESIP_INVITE)
    assert logged == redact(BARESIP_INVITE).decode()


def test_config_hep_redact_defaults_to_true() -> None:
    assert Config.model_validate({}).hep.redact is True
