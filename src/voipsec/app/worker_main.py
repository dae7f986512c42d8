"""The entry point of every worker process ``voipsec serve`` starts (shell).

``python -m voipsec.app.worker_main ROLE --dir DIR --index K [ROLE OPTIONS]``: the
supervisor (:mod:`.supervisor`) runs this; people do not. ``ROLE`` names an entry of
:data:`ROLES` ("media": a relay worker, :mod:`voipsec.media.worker`). The worker
reads its settings from ``DIR/config.toml`` itself: nothing secret crosses argv.

Every role lives as long as its parent: the worker stops on SIGTERM/SIGINT and when
its stdin (a pipe only the parent holds) reaches end of file, so a parent killed with
SIGKILL leaves no orphan. Log lines go to stderr (the parent's), each naming the
worker (``[media-0]``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from ..config import CONFIG_NAME, ConfigError, load
from ..logfmt import SafeFormatter
from .supervisor import WorkerArgs, leave_at_once

log = logging.getLogger("voipsec.worker")


#: A role's main: runs until ``stopping`` is set.
RoleMain = Callable[[WorkerArgs, asyncio.Event], Awaitable[None]]


def _media() -> RoleMain:
    from ..media.worker import run

    return run


def _sip() -> RoleMain:
    from .sipworker import run

    return run


#: The roles a worker can take; each imports its module only when chosen.
ROLES: dict[str, Callable[[], RoleMain]] = {"media": _media, "sip": _sip}


def parse_args(argv: Sequence[str]) -> WorkerArgs:
    parser = argparse.ArgumentParser(prog="voipsec.app.worker_main")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--index", required=True, type=int)
    known, extra = parser.parse_known_args(list(argv))
    return WorkerArgs(role=known.role, data_dir=known.dir, index=known.index, extra=tuple(extra))


def _configure_logging(args: WorkerArgs) -> None:
    """Log as ``serve`` does (``[log] level``), each line naming the worker."""
    handler = logging.StreamHandler(sys.stderr)
    line = f"%(asctime)s %(levelname)s [{args.name}] %(name)s: %(message)s"
    handler.setFormatter(SafeFormatter(line))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(load(args.data_dir / CONFIG_NAME).log.level.upper())
    except ConfigError as err:
        log.error("%s: %s", args.name, err)


async def _stdin_closed(name: str, stopping: asyncio.Event) -> None:
    """The parent's end of our stdin is gone: after a SIGTERM that is the parent's
    normal stop (we are stopping already); otherwise the parent died: leave at once."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    if not stopping.is_set():
        leave_at_once(name)


async def serve(args: WorkerArgs) -> None:
    """Run ``args.role`` until SIGTERM, SIGINT or the end of stdin."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    watch = loop.create_task(_stdin_closed(args.name, stopping), name="stdin watch")
    try:
        await ROLES[args.role]()(args, stopping)
    finally:
        watch.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(args)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except Exception:
        log.exception("%s failed", args.name)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
