"""The SIP service reports IPv6 sources to the IDS by their /64 (issue 13, finding 15).

One subscriber picks any address of its /64 at will (RFC 4941), so an IDS threshold
counted per address is one new address per message away from void.
"""

from __future__ import annotations

from pathlib import Path

from voipsec.config import Config
from voipsec.edge.ids_loader import default_rules_path, load_rules
from voipsec.server import build_sip_service
from voipsec.storage import Store

from .fakes import FakeClock, FakeFlow

#: The shipped malformed-burst rule fires on the 11th unparsable message in 10 s.
MALFORMED_BURST = 11


def test_sip_service_ids_counts_ipv6_sources_per_64_and_bans_the_64(tmp_path: Path) -> None:
    clock = FakeClock()
    service, _ = build_sip_service(
        config=Config.model_validate({"sip": {"domain": "example.test"}}),
        store=Store(tmp_path / "voipsec.db"),
        clock=clock,
        ids_rules=load_rules([default_rules_path()]),
    )
    for n in range(MALFORMED_BURST):
        # A different address of 2001:db8:1:2::/64 for every message.
        flow = FakeFlow((f"2001:db8:1:2::{n + 1:x}", 5061))
        service.on_stream_message(flow, b"NOT SIP AT ALL\r\n\r\n")  # type: ignore[arg-type]
    assert [b.source for b in service.guard.bans()] == ["2001:db8:1:2::/64"]
    assert service.is_banned("2001:db8:1:2::ffff")
    assert not service.is_banned("2001:db8:1:3::1")
    service.store.close()
