"""Reading the dial plan's premium-rate prefix file: the loader the shell calls before it
builds a :class:`~voipsec.core.dialplan.Dialplan`, which itself reads no file.

The site's ``<data dir>/<[dialplan] prefixes_dir>/premium-rate.txt`` replaces the
shipped list whole when it exists; it is read by the one prefix-file reader
(:func:`voipsec.rulefile.load_prefix_file`, with its size and line limits). Fails
closed: a file that is in the way but cannot be used is an error, never a reason to
fall back to the shipped list.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..config import Config
from ..rulefile import RuleFileError, load_prefix_file
from .dialplan import PREMIUM_RATE_FILE, Dialplan, DialplanConfigError

__all__ = ["default_premium_rate_path", "load_dialplan", "premium_rate_path"]


def default_premium_rate_path() -> Path:
    """The shipped list, ``voipsec/core/data/premium-rate.txt``."""
    resource = files("voipsec").joinpath("core").joinpath("data").joinpath(PREMIUM_RATE_FILE)
    return resource if isinstance(resource, Path) else Path(str(resource))


def premium_rate_path(config: Config, data_dir: Path) -> Path:
    """The site's premium-rate file when it exists, else the shipped one."""
    override = data_dir / config.dialplan.prefixes_dir / PREMIUM_RATE_FILE
    # exists(), not is_file(): a directory or unreadable file in the way is an
    # error to report, not a reason to fall back to the shipped list silently.
    return override if override.exists() else default_premium_rate_path()


def load_dialplan(config: Config, data_dir: Path) -> Dialplan:
    """The dial plan of ``config`` with the premium-rate prefixes of ``data_dir``.
    Raises :class:`DialplanConfigError` (one line naming ``file:line``) for an
    unreadable or bad prefix file and for a DID two trunks give to different users."""
    try:
        prefixes = load_prefix_file(premium_rate_path(config, data_dir))
    except RuleFileError as err:
        raise DialplanConfigError(str(err)) from None
    return Dialplan.from_config(config, premium_prefixes=prefixes)
