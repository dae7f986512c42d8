"""Edge protection: zones, the guard before the parser, sanity checks, the VoIP IDS."""

from .guard import Ban, BanAdded, Guard, GuardStatistics, GuardVerdict
from .ids import IdsEngine, Observation
from .ids_loader import RuleError, default_rules_path, load_rules
from .sanity import Sanity, SanityFailure
from .zones import Zone, ZoneMap

__all__ = [
    "Ban",
    "BanAdded",
    "Guard",
    "GuardStatistics",
    "GuardVerdict",
    "IdsEngine",
    "Observation",
    "RuleError",
    "Sanity",
    "SanityFailure",
    "Zone",
    "ZoneMap",
    "default_rules_path",
    "load_rules",
]
