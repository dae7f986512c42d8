"""Signaling worker k > 0 of ``voipsec serve`` (sip.workers > 1): the "sip" role.

The supervisor (app/supervisor.py) starts ``python -m voipsec.app.worker_main sip
--dir DIR --index K``; this builds a full :class:`~voipsec.server.Server` with index K
(its own event loop, SIP service and call control), binds the shared SIP listeners
(SO_REUSEPORT), says hello to the hub and serves until its parent stops it or goes
away. Failure mode: a child that cannot bind or load its config exits with status 1;
the parent's start fails with it (``serve`` does not run half-built).
"""

from __future__ import annotations

import asyncio
import logging

from ..config import CONFIG_NAME, load
from .supervisor import WorkerArgs


async def run(args: WorkerArgs, stopping: asyncio.Event) -> None:
    """Serve as signaling worker ``args.index`` until ``stopping`` is set."""
    from ..server import Server  # the server imports this package: import on use

    config = load(args.data_dir / CONFIG_NAME)
    logging.getLogger().setLevel(config.log.level.upper())  # worker_main set the format
    server = Server(config=config, data_dir=args.data_dir, index=args.index)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    await server.run_until(stopping)
