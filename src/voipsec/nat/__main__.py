"""Run the STUN/TURN service alone: ``python -m voipsec.nat --dir DIR``.

Reads ``DIR/voipsec.toml`` (``[sip].domain`` is the realm, ``[turn]`` listen and
allowed_peers; a ``tls:`` listen entry uses voipsec's server certificate in
``DIR/tls``), the users of ``DIR/voipsec.db`` (their MD5 digest HA1 is their TURN
key) and the TURN REST shared secret ``DIR/turn-secret``, created 0600 with 32 random
bytes (hex) when missing. Until ``voipsec serve`` runs the service itself, tests and
benches start this runner. Errors are one line and exit code 2; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from .. import logfmt
from ..config import CONFIG_NAME, ConfigError, load, parse_listen
from ..pki.ca import ServerPaths
from ..pki.tls import server_context
from ..storage import DB_NAME, Store
from .keystore import SECRET_NAME, UserKeys, read_or_create_secret
from .service import TurnService
from .turn import DEFAULT_BANDWIDTH, DEFAULT_TOTAL_QUOTA, DEFAULT_USER_QUOTA


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m voipsec.nat", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("voipsec-data"))
    parser.add_argument("--listen", action="append", default=[], help="udp:|tcp:|tls:HOST:PORT")
    parser.add_argument(
        "--allow-peer", action="append", default=[], metavar="CIDR", help="exempt peers"
    )
    parser.add_argument("--relay-host", default="127.0.0.1")
    parser.add_argument("--user-quota", type=int, default=DEFAULT_USER_QUOTA)
    parser.add_argument("--total-quota", type=int, default=DEFAULT_TOTAL_QUOTA)
    parser.add_argument("--bandwidth", type=int, default=DEFAULT_BANDWIDTH, help="bytes/s")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning"])
    return parser


async def _serve(service: TurnService) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await service.start()
    print(f"voipsec TURN listening on {' '.join(service.addresses)}", flush=True)
    try:
        await stopping.wait()
    finally:
        await service.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data_dir: Path = args.dir
    try:
        config = load(data_dir / CONFIG_NAME)
        secret = read_or_create_secret(data_dir / SECRET_NAME)
    except ConfigError as err:
        print(f"error: {err.problems[0]}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logfmt.configure(args.log_level or config.log.level)
    realm = config.sip.domain
    listen = args.listen or list(config.turn.listen)
    try:
        tls = any(parse_listen(entry).transport == "tls" for entry in listen)
        paths = ServerPaths.in_dir(data_dir)
        context = (
            server_context(
                cert=paths.cert,
                key=paths.key,
                client_ca=None,
                client_cert="off",
                min_version=config.tls.min_version,
                session_tickets=config.tls.session_tickets,
            )
            if tls
            else None
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    store = Store(data_dir / DB_NAME)
    try:
        service = TurnService(
            listen=listen,
            realm=realm,
            lookup_key=UserKeys(store, realm),
            rest_secret=secret,
            allowed_peers=[*config.turn.allowed_peers, *args.allow_peer],
            relay_host=args.relay_host,
            user_quota=args.user_quota,
            total_quota=args.total_quota,
            bandwidth=args.bandwidth,
            ssl_context=context,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(_serve(service))
    except OSError as err:
        print(f"error: cannot listen: {err.strerror or err}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
