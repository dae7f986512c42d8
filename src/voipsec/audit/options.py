"""What a live probe may use: credentials, the installation's own settings, bounds."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config

__all__ = ["PROBE_TIMEOUT", "ProbeOptions", "read_bounded"]

#: Seconds a probe waits for one answer before calling the target silent.
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOptions:
    """Inputs of the live probes.

    ``own`` is set when the target is this installation (``voipsec audit --dir DIR``
    without ``--target``): fixes are then ``voipsec config set`` lines, and credentials
    a probe needs for TURN are made from ``data_dir``'s keys. ``user``/``password``
    are a test user's (``--user``/``--password``) for the media and authentication
    probes, ``turn_user``/``turn_password`` a TURN server's long-term credentials
    (``--turn-user``/``--turn-password``); never printed.
    """

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    turn_user: str | None = None
    turn_password: str | None = field(default=None, repr=False)
    own: Config | None = None
    data_dir: Path | None = None
    timeout: float = PROBE_TIMEOUT


def read_bounded(path: Path, limit: int) -> bytes:
    """A small regular file's bytes, read without following a final symbolic link nor
    blocking on a FIFO (O_NOFOLLOW | O_NONBLOCK, then fstat); at most ``limit`` bytes.

    Raises OSError with a one-line reason: not a regular file, or larger than ``limit``
    (a link to /dev/zero must not exhaust memory, a FIFO must not hang the audit).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path}: larger than {limit} bytes")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"{path}: larger than {limit} bytes")
    return data
