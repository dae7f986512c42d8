"""Edge protection: zones, the guard before the parser, sanity checks, the VoIP IDS."""

from .guard import Ban, BanAdded, Guard, GuardStatistics, Verdict
from .ids import IdsEngine, Observation, RuleError, default_rules_path, load_rules
from .sanity import Sanity, SanityFailure
from .zones import Zone, ZoneMap

__all__ = [
    "Ban",
    "BanAdded",
    "Guard",
    "GuardStatistics",
    "IdsEngine",
    "Observation",
    "RuleError",
    "Sanity",
    "SanityFailure",
    "Verdict",
    "Zone",
    "ZoneMap",
    "default_rules_path",
    "load_rules",
]
