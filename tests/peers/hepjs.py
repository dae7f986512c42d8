"""A HEP collector built on sipcapture's hep-js decoder (the Homer project's own HEP3
library), for tests that check what voipsec exports.

``hep_js_collector`` runs ``tests/peers/hep_collector.js`` under Node.js on a free UDP
port of 127.0.0.1 and yields a :class:`HepJsCollector`: its ``packets()`` are the
datagrams hep-js decoded so far, each a dict ``{"rcinfo": {...}, "payload": "..."}``
(hep-js's field names: ``payloadType``, ``captureId``, ``capturePass``,
``correlation_id``, ``srcIp``, ``srcPort``, ``mos`` ...), or ``{"undecodable": N}``.
``make peers`` (scripts/install-peers.sh) installs hep-js into ``.cache/hep-js``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .proc import require, running, wait_for

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("hep_collector.js")
#: Where scripts/install-peers.sh puts hep-js and what it needs.
NODE_MODULES = ROOT / ".cache" / "hep-js" / "node_modules"


@dataclass
class HepJsCollector:
    port: int
    output: Path

    def packets(self) -> list[dict[str, object]]:
        """Every datagram decoded so far, in arrival order."""
        rows = []
        for line in self.output.read_text().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                if "port" not in row:
                    rows.append(row)
        return rows


def _bound_port(output: Path) -> int | None:
    for line in output.read_text().splitlines():
        if line.startswith('{"port":'):
            return int(json.loads(line)["port"])
    return None


@contextlib.contextmanager
def hep_js_collector(workdir: Path) -> Iterator[HepJsCollector]:
    """The collector, listening; stopped when the block ends."""
    if not (NODE_MODULES / "hep-js" / "package.json").exists():
        raise AssertionError(f"hep-js is not installed in {NODE_MODULES}: run `make peers`")
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "hep-js.jsonl"
    output.touch()
    argv = [require("node"), str(SCRIPT), "0"]
    with running(argv, log=output, env={"NODE_PATH": str(NODE_MODULES)}) as proc:
        wait_for(
            lambda: _bound_port(output) is not None or proc.poll() is not None,
            what="the hep-js collector to bind",
        )
        port = _bound_port(output)
        assert port is not None, output.read_text()
        yield HepJsCollector(port=port, output=output)
