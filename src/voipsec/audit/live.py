"""Live SIP probes of a target (issue 19 item 3)."""

from __future__ import annotations

from .model import CheckResult, CheckSpec
from .options import ProbeOptions
from .targets import SipTarget

__all__ = ["SPECS", "live_results"]

SPECS: tuple[CheckSpec, ...] = ()


def live_results(target: SipTarget, options: ProbeOptions) -> list[CheckResult]:
    """Every live SIP check's result at ``target``."""
    del target, options
    return []
