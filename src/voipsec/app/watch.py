"""Files the running server watches: the IDS rule files and the CA's CRL.

Each watcher remembers what it last read (modification times) and re-reads only
when that changed; a periodic job (app/periodic.py) asks it. A file that does not
load keeps what was loaded before (fails safe: the old rules, the old CRL).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from ..edge.ids import Rule
from ..edge.ids_loader import RuleError, default_rules_path, load_rules
from ..pki.ca import CaPaths, read_crl_serials

log = logging.getLogger("voipsec.sip")

Stamp = tuple[tuple[str, float], ...]


class RuleFiles:
    """The shipped IDS rules and the ``*.yaml`` files of ``rules_dir``."""

    def __init__(self, *, data_dir: Path, rules_dir: str, enabled: bool) -> None:
        self._dir = data_dir / rules_dir
        self._enabled = enabled
        self._stamp = self._current_stamp()

    def load(self) -> list[Rule] | None:
        """Every rule, or None when the IDS is off. Raises RuleError for a bad file."""
        if not self._enabled:
            return None
        return load_rules(self._files())

    def changed(self) -> list[Rule] | None:
        """The rules again when a file changed since the last look, else None.

        A bad file is reported and the old rules stay.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            return self.load()
        except RuleError as err:
            log.error("IDS rules not reloaded: %s", err)
            return None

    def _files(self) -> list[Path]:
        user_files = sorted(self._dir.glob("*.yaml")) if self._dir.is_dir() else []
        return [default_rules_path(), *user_files]

    def _current_stamp(self) -> Stamp:
        stamp = []
        for path in self._files():
            try:
                stamp.append((str(path), path.stat().st_mtime))
            except FileNotFoundError:
                continue
        return tuple(stamp)


class Revokes(Protocol):
    """Who drops connections whose certificate was revoked (the connection table)."""

    def set_revoked(self, serials: frozenset[int]) -> int: ...


class Revocations:
    """The CA's CRL (``ca/crl.pem``), adopted by the connection table when it changed."""

    def __init__(self, *, data_dir: Path, connections: Revokes) -> None:
        self._data_dir = data_dir
        self._connections = connections
        self._mtime: float | None = None

    def check(self) -> None:
        """Adopt the CA's CRL when it changed; drop connections it revokes."""
        path = self._data_dir / "ca" / "crl.pem"
        try:
            mtime: float | None = path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            serials = read_crl_serials(path, CaPaths.in_dir(self._data_dir))
        except ValueError as err:
            log.error("ignoring CRL: %s", err)
            return
        closed = self._connections.set_revoked(serials)
        log.info(
            "CRL loaded: %d revoked certificate(s), %d connection(s) closed", len(serials), closed
        )
