"""Local checks of an installation: configuration and files (issue 19 item 2)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .model import CheckResult, CheckSpec

__all__ = ["SPECS", "local_results"]

SPECS: tuple[CheckSpec, ...] = ()


def local_results(data_dir: Path, config: Config, now: float) -> list[CheckResult]:
    """Every local check's result for the installation in ``data_dir``."""
    del data_dir, config, now
    return []
