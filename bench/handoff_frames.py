"""Frames between signaling workers for one call across two of them (docs/performance.md).

Starts ``voipsec serve`` with ``sip.workers = 2``, registers bob over a connection
worker 1 holds, has alice call him over one worker 0 holds (INVITE, 200, ACK, media,
BYE, 200: the steps of tests/integration/test_workers.py), stops serve and prints the
frame counters each worker logs when it stops. A deterministic count, not a timing.

    PYTHONPATH=src .venv/bin/python bench/handoff_frames.py
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ALICE, BOB
from tests.integration.test_media import ALICE_PAYLOAD, BOB_PAYLOAD
from tests.integration.test_workers import call, phone_on
from tests.peers.voipsec import prepare, serving


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(Path(tmp) / "data", users=[ALICE, BOB], settings=[("sip.workers", "2")])
        with serving(prepared) as server, ExitStack() as stack:
            bob = phone_on(server, 1, BOB, BOB_PAYLOAD)
            stack.callback(bob.close)
            bob.register()
            alice = phone_on(server, 0, ALICE, ALICE_PAYLOAD)
            stack.callback(alice.close)
            call(alice, bob)
        for line in prepared.log.read_text().splitlines():
            if "handed over" in line:
                print(line.split(": ", 1)[1])


if __name__ == "__main__":
    main()
