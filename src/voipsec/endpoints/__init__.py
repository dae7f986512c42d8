"""Endpoint security data: which device sent a request and which advisories its
firmware falls under.

* :mod:`.useragent` (sans-IO): :func:`identify` a User-Agent with the fingerprints;
* :mod:`.versions` (sans-IO): firmware versions compared as versions;
* :mod:`.advisories` (sans-IO): :func:`matching` advisories for a :class:`Device`;
* :mod:`.feeds` (sans-IO): CISA KEV and NVD CVE API 2.0 files turned into advisories;
* :mod:`.report` (sans-IO): :func:`compliance_report`, every device's posture and
  what to do, by severity (the CLI, the dashboard and the audit read it);
* :mod:`.loader` (shell): the shipped and admin data files, read and written;
* :mod:`.cli` (shell): ``voipsec endpoints import-kev|import-nvd``.

The inventory, the firmware policy and the compliance report build on these
(docs/endpoints.md).
"""

from .advisories import Advisory, affects_version, covers_model, matching
from .report import SEVERITIES, DevicePosture, Finding, compliance_report
from .useragent import MAX_USER_AGENT, Device, DeviceFingerprint, FingerprintError, identify
from .versions import VersionError, VersionKey, compare_versions, parse_version, try_parse_version

__all__ = [
    "MAX_USER_AGENT",
    "SEVERITIES",
    "Advisory",
    "Device",
    "DeviceFingerprint",
    "DevicePosture",
    "Finding",
    "FingerprintError",
    "VersionError",
    "VersionKey",
    "affects_version",
    "compare_versions",
    "compliance_report",
    "covers_model",
    "identify",
    "matching",
    "parse_version",
    "try_parse_version",
]
