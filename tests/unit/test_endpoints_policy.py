"""The endpoint policy (voipsec.endpoints.policy): safe defaults, the gravest action
wins, minimum firmware, certificates, and the Warning header's quoting."""

from __future__ import annotations

from voipsec.endpoints.advisories import Advisory
from voipsec.endpoints.policy import (
    MAX_REASON_TEXT,
    MAX_WARNING_UA,
    DeviceFacts,
    PolicyDecision,
    PolicyReason,
    PolicySettings,
    decide,
    minimum_for,
    quote_warning_text,
    warning_value,
)
from voipsec.endpoints.useragent import Device

DAY = 86_400.0
NOW = 1_800_000_000.0


def _device(version: str | None = "1.0.2.25", model: str = "GXP1625") -> Device:
    return Device(
        vendor="Grandstream",
        family="GXP",
        model=model,
        version=version,
        kind="phone",
        fingerprint="grandstream",
    )


def _advisory(*, kev: bool, fixed: str | None = "1.0.7.81", **more: object) -> Advisory:
    return Advisory(
        id="CVE-2026-2329",
        vendor="Grandstream",
        models=("GXP16??",),
        cves=("CVE-2026-2329",),
        fixed=fixed,
        kev=kev,
        **more,  # type: ignore[arg-type]
    )


def _facts(**fields: object) -> DeviceFacts:
    base: dict[str, object] = {
        "user_agent": "Grandstream GXP1625 1.0.2.25",
        "device": _device(),
        "digest_algorithm": "SHA-256",
        "tls_version": "TLSv1.3",
        "certificate": True,
        "certificate_expiry": NOW + 365 * DAY,
        "now": NOW,
    }
    return DeviceFacts(**{**base, **fields})  # type: ignore[arg-type]


def test_policy_clean_device_allowed_without_reasons() -> None:
    assert decide(_facts(), PolicySettings()) == PolicyDecision(action="allow", reasons=())


def test_policy_kev_advisory_refused_by_default_with_fix() -> None:
    decision = decide(_facts(advisories=(_advisory(kev=True),)), PolicySettings())
    text = "firmware 1.0.2.25 affected by CVE-2026-2329 (KEV); upgrade to 1.0.7.81"
    assert decision == PolicyDecision(
        action="refuse", reasons=(PolicyReason(check="kev_advisory", action="refuse", text=text),)
    )
    assert warning_value(decision) == f'399 voipsec "{text}"'


def test_policy_other_advisory_warns_by_default() -> None:
    decision = decide(_facts(advisories=(_advisory(kev=False),)), PolicySettings())
    assert decision.action == "warn"
    assert decision.reasons[0].text == (
        "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81"
    )


def test_policy_advisory_without_fix_says_replace() -> None:
    decision = decide(
        _facts(advisories=(_advisory(kev=False, fixed=None, last_affected=None),)),
        PolicySettings(),
    )
    assert decision.reasons[0].text.endswith(
        "; no fixed firmware published: replace or isolate the device"
    )


def test_policy_advisory_with_last_affected_says_upgrade_past() -> None:
    decision = decide(
        _facts(advisories=(_advisory(kev=False, fixed=None, last_affected="1.0.4.152"),)),
        PolicySettings(),
    )
    assert decision.reasons[0].text.endswith("; upgrade past 1.0.4.152")


def test_policy_gravest_action_wins_and_every_reason_kept() -> None:
    settings = PolicySettings(md5_digest="restrict")
    decision = decide(_facts(advisories=(_advisory(kev=False),), digest_algorithm="MD5"), settings)
    assert decision.action == "restrict"
    assert [(r.check, r.action) for r in decision.reasons] == [
        ("advisory", "warn"),
        ("md5_digest", "restrict"),
    ]
    assert [r.check for r in decision.grave()] == ["md5_digest"]


def test_policy_unknown_user_agent_warns_and_is_cut() -> None:
    ua = "X" * (MAX_WARNING_UA + 10)
    decision = decide(_facts(user_agent=ua, device=None), PolicySettings())
    assert decision.action == "warn"
    assert decision.reasons[0].text == (
        f"unknown User-Agent {'X' * MAX_WARNING_UA}; add a fingerprint to "
        "endpoints/fingerprints.yaml"
    )


def test_policy_md5_sess_counts_as_md5() -> None:
    decision = decide(_facts(digest_algorithm="MD5-sess"), PolicySettings())
    assert [r.check for r in decision.reasons] == ["md5_digest"]


def test_policy_tls12_allowed_by_default_and_gradable() -> None:
    assert decide(_facts(tls_version="TLSv1.2"), PolicySettings()).action == "allow"
    graded = decide(_facts(tls_version="TLSv1.2"), PolicySettings(tls12="warn"))
    assert graded.reasons == (
        PolicyReason(check="tls12", action="warn", text="TLS 1.2; enable TLS 1.3 on the device"),
    )


def test_policy_missing_certificate_allowed_by_default() -> None:
    facts = _facts(certificate=False, certificate_expiry=None)
    assert decide(facts, PolicySettings()).action == "allow"
    assert decide(facts, PolicySettings(missing_certificate="warn")).reasons[0].check == (
        "missing_certificate"
    )


def test_policy_expiring_certificate_warns_within_days() -> None:
    decision = decide(_facts(certificate_expiry=NOW + 10.5 * DAY), PolicySettings())
    assert decision.reasons == (
        PolicyReason(
            check="expiring_certificate",
            action="warn",
            text="client certificate expires in 10 days; renew it (voipsec ca renew)",
        ),
    )
    assert decide(_facts(certificate_expiry=NOW + 31 * DAY), PolicySettings()).action == "allow"


def test_policy_minimum_firmware_most_specific_key_wins() -> None:
    minimums = {"Grandstream": "1.0.0", "Grandstream/GXP16??": "1.0.7.81", "grandstream/GXP1*": "2"}
    assert minimum_for(_device(), minimums) == "1.0.7.81"
    assert minimum_for(_device(model="GRP2612"), minimums) == "1.0.0"
    assert minimum_for(_device(), {"Yealink": "1"}) is None


def test_policy_below_minimum_firmware_warns() -> None:
    settings = PolicySettings(minimum_firmware={"Grandstream/GXP16??": "1.0.7.81"})
    decision = decide(_facts(), settings)
    assert decision.reasons == (
        PolicyReason(
            check="below_minimum",
            action="warn",
            text="firmware 1.0.2.25 below the minimum 1.0.7.81 for Grandstream GXP1625; upgrade",
        ),
    )
    fixed = _facts(device=_device("1.0.7.81"), user_agent="Grandstream GXP1625 1.0.7.81")
    assert decide(fixed, settings).action == "allow"


def test_policy_below_minimum_unreadable_version() -> None:
    settings = PolicySettings(minimum_firmware={"Grandstream": "1.0.7.81"})
    decision = decide(_facts(device=_device(None)), settings)
    assert decision.reasons[0].text == (
        "Grandstream GXP1625 names no readable firmware version; minimum is 1.0.7.81"
    )


def test_policy_reason_text_over_limit_is_cut() -> None:
    cves = tuple(f"CVE-2026-{n:05d}" for n in range(100))
    long = Advisory(id="X", vendor="Grandstream", models=("*",), cves=cves, fixed="9")
    cut = decide(_facts(advisories=(long,)), PolicySettings())
    assert len(cut.reasons[0].text) == MAX_REASON_TEXT


def test_policy_warning_text_quoted_per_rfc3261() -> None:
    assert quote_warning_text('say "hi" \\ now\r\nX') == '"say \\"hi\\" \\\\ now  X"'


def test_policy_warning_names_every_grave_reason() -> None:
    decision = PolicyDecision(
        action="refuse",
        reasons=(
            PolicyReason(check="a", action="refuse", text="one"),
            PolicyReason(check="b", action="warn", text="two"),
            PolicyReason(check="c", action="refuse", text="three"),
        ),
    )
    assert warning_value(decision) == '399 voipsec "one", 399 voipsec "three"'
