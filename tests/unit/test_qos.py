"""DSCP marking on real sockets: the TOS byte carries the code point in its upper six bits."""

from __future__ import annotations

import socket

from voipsec.qos import set_dscp


def test_media_sockets_get_expedited_forwarding() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        set_dscp(sock, 46)
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB8


def test_sip_sockets_get_cs3() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        set_dscp(sock, 24)
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0x60


def test_ipv6_sockets_use_the_traffic_class() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        set_dscp(sock, 46)
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 0xB8


def test_zero_leaves_the_default() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        set_dscp(sock, 0)
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0
