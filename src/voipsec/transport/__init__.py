"""Asyncio SIP transports: TLS (default), TCP and UDP listeners and connections."""

from .connections import ConnectionLimits, ConnectionTable, Flow
from .stream import StreamProtocol
from .udp import DatagramProtocol

__all__ = [
    "ConnectionLimits",
    "ConnectionTable",
    "DatagramProtocol",
    "Flow",
    "StreamProtocol",
]
