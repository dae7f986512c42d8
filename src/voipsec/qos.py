"""DSCP marking (RFC 2474): CS3 for SIP, EF for media, as RFC 4594 recommends."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("voipsec.qos")


def set_dscp(sock: object, dscp: int) -> None:
    """Mark a socket's packets with a DSCP (RFC 2474: the upper six bits of TOS)."""
    if not dscp or sock is None:
        return
    family = getattr(sock, "family", None)
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is None:
        return
    try:
        if family == socket.AF_INET6:
            setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        else:
            setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
    except OSError as err:
        log.warning("cannot set DSCP %d: %s", dscp, err)
