"""What an audit check is, what it found, and how results score (issue 19).

How this works: every check has a :class:`CheckSpec` — a stable id (``S-plaintext-sip``),
the SAME-FLOW control it belongs to (``docs/audit.md``), a severity, a title and its
references. Running a check gives one :class:`CheckResult` per place it looked (the
local installation, or one ``--target``): passed, failed, not applicable (skipped, with
the reason: no credentials given, say) or error (the check could not run: the target
did not answer). A local check and a live probe of the same property share one id, so
one weakening fails one check (seen from the configuration and from the wire).

Scoring (:func:`score`): each result weighs its severity's :data:`WEIGHTS`; a control's
score is the weight that passed over the weight that passed, failed or erred — a check
that could not run proves nothing, so it counts against the score; a skipped one is left
out. The overall score is the same sum over every control. No result at all is 100 %.

Sans-IO: values in, values out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "CONTROL_TITLES",
    "WEIGHTS",
    "AuditReport",
    "CheckResult",
    "CheckSpec",
    "Control",
    "ControlScore",
    "Outcome",
    "Severity",
    "errored",
    "failed",
    "passed",
    "score",
    "skipped",
    "with_data_dir",
]


class Control(StrEnum):
    """The SAME-FLOW checklist's letters (shared/DESIGN.md)."""

    S = "S"
    A = "A"
    M = "M"
    E = "E"
    F = "F"
    L = "L"
    O = "O"  # noqa: E741 - the checklist's letter
    W = "W"


CONTROL_TITLES: dict[Control, str] = {
    Control.S: "SIPS signaling",
    Control.A: "authentication and authorization",
    Control.M: "media encryption",
    Control.E: "endpoint security",
    Control.F: "firewall and SBC",
    Control.L: "logging and monitoring",
    Control.O: "overlays and NAT",
    Control.W: "segmented network and QoS",
}


class Severity(StrEnum):
    """How much a failed check weakens its control (SARIF levels in report.py)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


#: Weight of each severity in the score: a critical check counts ten low ones.
WEIGHTS: dict[Severity, int] = {
    Severity.CRITICAL: 10,
    Severity.HIGH: 5,
    Severity.MEDIUM: 3,
    Severity.LOW: 1,
}


class Outcome(StrEnum):
    """What running a check gave."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSpec:
    """A check, as docs/audit.md lists it."""

    id: str
    control: Control
    severity: Severity
    title: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One check's outcome at one place (``local`` or a target such as ``sips:h:p``).

    ``observed`` says what was seen (never a secret: a weak password is named by its
    user, not its value); ``fix`` is what to do — for voipsec the exact
    ``voipsec config set ...`` line; empty when passed.
    """

    spec: CheckSpec
    outcome: Outcome
    target: str
    observed: str
    fix: str = ""


#: A voipsec command in a fix line that works on a data directory: ``voipsec GROUP
#: COMMAND`` (``voipsec init`` fixes name their --dir already, and prose such as "voipsec
#: init a new directory" must stay as it is).
_DIR_COMMAND = re.compile(
    r"\bvoipsec (?:config|user|ca|bans|alerts|turn|cdr|endpoints|devices) [a-z][a-z-]*"
    r"(?![a-z-])(?! --dir )"
)


def with_data_dir(results: Iterable[CheckResult], data_dir: str) -> list[CheckResult]:
    """``results`` with ``--dir DATA_DIR`` (shell-quoted, as given) after every voipsec
    command of their fixes: a fix runs on the audited directory from any working
    directory, not on ./voipsec-data (review 3 #8; docs/audit.md, "Fix lines")."""
    option = f" --dir {shlex.quote(data_dir)}"
    return [
        replace(r, fix=_DIR_COMMAND.sub(lambda m: m.group(0) + option, r.fix)) if r.fix else r
        for r in results
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlScore:
    """One control's score: ``percent`` is None when nothing of it was scored."""

    control: Control
    passed: int
    failed: int
    skipped: int
    percent: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReport:
    """A whole audit: the results in order, per-control scores and the overall one."""

    results: tuple[CheckResult, ...]
    controls: tuple[ControlScore, ...]
    overall: float
    started: float
    targets: tuple[str, ...] = field(default=())

    def failures(self) -> tuple[CheckResult, ...]:
        """Results that failed or could not run (what lowers the score)."""
        return tuple(r for r in self.results if r.outcome in (Outcome.FAILED, Outcome.ERROR))


def _percent(won: int, total: int) -> float:
    return round(100.0 * won / total, 1) if total else 100.0


def score(
    results: Sequence[CheckResult], *, started: float, targets: Iterable[str] = ()
) -> AuditReport:
    """The report of ``results``: per-control and overall scores (module docstring)."""
    controls: list[ControlScore] = []
    won_all = total_all = 0
    for control in Control:
        mine = [r for r in results if r.spec.control is control]
        won = sum(WEIGHTS[r.spec.severity] for r in mine if r.outcome is Outcome.PASSED)
        lost = sum(
            WEIGHTS[r.spec.severity] for r in mine if r.outcome in (Outcome.FAILED, Outcome.ERROR)
        )
        won_all += won
        total_all += won + lost
        controls.append(
            ControlScore(
                control=control,
                passed=sum(r.outcome is Outcome.PASSED for r in mine),
                failed=sum(r.outcome in (Outcome.FAILED, Outcome.ERROR) for r in mine),
                skipped=sum(r.outcome is Outcome.SKIPPED for r in mine),
                percent=_percent(won, won + lost) if won + lost else None,
            )
        )
    return AuditReport(
        results=tuple(results),
        controls=tuple(controls),
        overall=_percent(won_all, total_all),
        started=started,
        targets=tuple(targets),
    )


def passed(spec: CheckSpec, target: str, observed: str) -> CheckResult:
    """A passed result."""
    return CheckResult(spec=spec, outcome=Outcome.PASSED, target=target, observed=observed)


def failed(spec: CheckSpec, target: str, observed: str, fix: str) -> CheckResult:
    """A failed result with its fix."""
    return CheckResult(spec=spec, outcome=Outcome.FAILED, target=target, observed=observed, fix=fix)


def skipped(spec: CheckSpec, target: str, why: str) -> CheckResult:
    """A check that does not apply here (``why`` says why)."""
    return CheckResult(spec=spec, outcome=Outcome.SKIPPED, target=target, observed=why)


def errored(spec: CheckSpec, target: str, why: str) -> CheckResult:
    """A check that could not run (counts against the score)."""
    return CheckResult(spec=spec, outcome=Outcome.ERROR, target=target, observed=why)
