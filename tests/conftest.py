"""Shared fixtures: a prepared voipsec data directory and a running server."""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# One PostgreSQL test cluster for the whole run (session scope), shared by every module
# that asks for these fixtures by name.
from tests.peers.postgres import postgres_server, postgres_url  # noqa: F401
from tests.peers.voipsec import VoipsecServer, prepare, serving

SRC = Path(__file__).resolve().parents[1] / "src"


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile src/ once per run, in the controller (not in each xdist worker).

    Every ``voipsec serve`` the suite starts is four interpreters importing ~200 modules
    of voipsec. With PYTHONDONTWRITEBYTECODE set (as where `make test` was timed) nothing writes
    their .pyc, so each of them compiled every module from source again: 0.25 s of CPU
    per signaling process. compileall writes the .pyc regardless (they are .gitignored;
    an edited module is recompiled here or, by its changed mtime, at import).
    """
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(SRC, quiet=1)


# pydantic looks for plugins in every installed distribution's entry points the first time
# a model is built: ~25 ms of CPU in each process that loads the config (four per server,
# one per real CLI command). voipsec uses no pydantic plugin; the test processes inherit
# this (tests/peers/proc.py `running` passes os.environ on).
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


ALICE = ("alice", "alice-secret-1")
BOB = ("bob", "bob-secret-22")


@pytest.fixture
def server_dir(tmp_path: Path) -> VoipsecServer:
    """An initialised data directory with alice and bob, not yet serving."""
    return prepare(tmp_path / "data", users=[ALICE, BOB])


@pytest.fixture
def server(server_dir: VoipsecServer) -> Iterator[VoipsecServer]:
    """``voipsec serve`` on a free TLS port of 127.0.0.1 with alice and bob."""
    with serving(server_dir) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """One server for a whole module of tests that do not change its state."""
    prepared = prepare(tmp_path_factory.mktemp("shared") / "data", users=[ALICE, BOB])
    with serving(prepared) as running_server:
        yield running_server
