"""The TURN probe: which peers does a TURN server grant permissions for (issue 19)."""

from __future__ import annotations

from .model import CheckResult, CheckSpec
from .options import ProbeOptions
from .targets import TurnTarget

__all__ = ["SPECS", "turn_results"]

SPECS: tuple[CheckSpec, ...] = ()


def turn_results(target: TurnTarget, options: ProbeOptions) -> list[CheckResult]:
    """The TURN peer-filter check's result at ``target``."""
    del target, options
    return []
