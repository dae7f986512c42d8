"""The endpoint policy at REGISTER and the device inventory (issue 18).

How this works: after a REGISTER authenticated, :meth:`DeviceGate.check` gathers what
the request and its connection say about the device — its User-Agent identified by
the fingerprints (``endpoints/useragent.py``), the advisories of its firmware
(``endpoints/advisories.py``), the digest algorithm, the TLS version, cipher and client
certificate of the connection — and ``endpoints/policy.py`` decides. The registration
shell answers a ``refuse`` with 403 and the decision's Warning header and stores no
binding; anything else registers. :meth:`DeviceGate.record` then carries the decision
out: the device's sighting queued for the inventory (written by the store writer's
thread on :meth:`flush`, never on the event loop), and for ``warn``, ``restrict`` and
``refuse`` one :class:`~voipsec.events.AlertRaised` per device per day (the monitor
stores, logs and delivers it); every refusal is also logged.

``restrict`` registers the device and marks it ``restricted`` in the inventory; the gate
also remembers, in memory, the devices whose last REGISTER it restricted, and
:meth:`DeviceGate.restriction` answers the call shell for each INVITE (no database read
on the call path): routing then lets the device call internal users and emergency
numbers only (core/routing.py, core/emergency.py ``restricted_allows``).

The policy of one device is the global ``[endpoints]`` made stricter by its zone's and
its user's class's tables (:meth:`DeviceGate.settings_for`, ``effective_settings``),
cached per (zone, class). At INVITE :meth:`DeviceGate.srtp_offer` reads the offer once
(``endpoints/offer.py``): the SRTP suites it offers go to the device's inventory row
(``srtp_suites``, queued with the sightings, in order, and only when they changed for
that device: an in-memory memory of the last suites per device, MAX_OFFER_MEMORY),
and it grades the offer (``no_srtp_offer``) with the same settings and alerts once per
device a day.

Failure mode: the policy fails closed at start (bad fingerprint or advisory files stop
``serve`` with one error line, endpoints/loader.py) and is a pure function while
serving; the inventory fails open (a write that cannot be made is the store writer's
to retry, drop and alert; the REGISTER never waits for it). The restriction memory
fails open: a device it forgot (past MAX_RESTRICTED_MEMORY, a restart, another
signaling worker) calls unrestricted until its next REGISTER is graded again. The
offer memory fails open too: after a restart each device's next offer is written once
more; an offer that names no row (an INVITE on another signaling worker than the
device's REGISTER, whose Contact lacks the REGISTER's ``+sip.instance``; a row the
inventory's bounds removed) updates nothing until the suites change.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..config import EndpointsOverrideSection, EndpointsSection
from ..core.auth import Authenticated
from ..endpoints.advisories import Advisory, matching
from ..endpoints.loader import load_advisories, load_fingerprints
from ..endpoints.offer import srtp_offer_of
from ..endpoints.policy import (
    CHECKS,
    MAX_WARNING_UA,
    Action,
    DeviceFacts,
    PolicyDecision,
    PolicyOverride,
    PolicyReason,
    PolicySettings,
    decide,
    effective_settings,
    srtp_offer_reason,
)
from ..endpoints.useragent import MAX_USER_AGENT, DeviceFingerprint, identify
from ..events import AlertRaised, DeviceRestrictionChanged, Event, EventBus, RemoteEvent
from ..records import DeviceSighting, DeviceSrtpOffer, DeviceWrite
from ..rulefile import RuleFileError
from ..sip.errors import SipParseError
from ..sip.message import Request
from ..sip.uri import SipUri
from ..transport.connections import Flow
from ..transport.stream import TlsInfo
from .replies import flow_text

log = logging.getLogger("voipsec.endpoints")

#: Devices whose last alert day is remembered; past it the memory starts afresh (at
#: worst one more alert per device that day). A site has thousands of devices.
MAX_ALERT_MEMORY = 100_000

#: Sightings queued between two flushes (0.2 s apart); past it they are dropped and
#: counted: the inventory is a record, never a reason to hold memory under a flood.
MAX_PENDING_SIGHTINGS = 10_000

#: Restricted devices remembered for INVITE (each under its key and its User-Agent at
#: its address: at most two entries); past it the least recently registered are
#: forgotten. Every device of a large site fits (its inventory holds MAX_DEVICES).
MAX_RESTRICTED_MEMORY = 200_000

#: Devices whose last SRTP offer is remembered (an INVITE writes only when its device's
#: suites changed), and devices whose REGISTER key differs from their User-Agent at
#: their address (a Contact with ``+sip.instance``); past it the least recently seen
#: are forgotten (at worst one more write when such a device calls). As
#: MAX_RESTRICTED_MEMORY: every device of a large site fits.
MAX_OFFER_MEMORY = 200_000

#: The inventory status of each action.
STATUS = {"allow": "ok", "warn": "warn", "restrict": "restricted", "refuse": "refused"}

_DAY = 86_400.0


class EndpointDataError(Exception):
    """The fingerprint or advisory files cannot be used: ``serve`` stops with this one
    line (the policy fails closed rather than run without its data)."""


def policy_settings(section: EndpointsSection, certificate_days: int = 30) -> PolicySettings:
    """The policy's settings from the ``[endpoints]`` section."""
    return PolicySettings(
        kev_advisory=section.kev_advisory,
        advisory=section.advisory,
        unknown_user_agent=section.unknown_user_agent,
        md5_digest=section.md5_digest,
        tls12=section.tls12,
        below_minimum=section.below_minimum,
        minimum_firmware=dict(section.minimum_firmware),
        missing_certificate=section.missing_certificate,
        expiring_certificate=section.expiring_certificate,
        certificate_days=certificate_days,
        no_srtp_offer=section.no_srtp_offer,
    )


def policy_override(section: EndpointsOverrideSection) -> PolicyOverride:
    """One ``[endpoints.zones.*]`` or ``[endpoints.classes.*]`` table: the keys given."""
    actions: dict[str, Action] = {}
    for check in CHECKS:
        action: Action | None = getattr(section, check)
        if action is not None:
            actions[check] = action
    return PolicyOverride(actions=actions, minimum_firmware=dict(section.minimum_firmware))


def build_device_gate(
    *,
    section: EndpointsSection,
    certificate_days: int = 30,
    data_dir: Path | None,
    zone_of: Callable[[str], str],
    writes: DeviceWrites,
    events: EventBus,
) -> DeviceGate | None:
    """The gate with the shipped and ``DIR/endpoints`` data files, or None when
    ``endpoints.enabled`` is off. Raises :class:`EndpointDataError`."""
    if not section.enabled:
        return None
    try:
        fingerprints = load_fingerprints(data_dir)
        advisories = load_advisories(data_dir)
    except RuleFileError as err:
        raise EndpointDataError(str(err)) from None
    return DeviceGate(
        settings=policy_settings(section, certificate_days),
        zone_overrides={k: policy_override(v) for k, v in section.zones.items()},
        class_overrides={k: policy_override(v) for k, v in section.classes.items()},
        fingerprints=fingerprints,
        advisories=advisories,
        zone_of=zone_of,
        writes=writes,
        events=events,
    )


class DeviceWrites(Protocol):
    """Where sightings go (the StoreWriter while serving, the Store in tests)."""

    def save_devices(self, sightings: Iterable[DeviceWrite]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceGateStatistics:
    ok: int
    warn: int
    restricted: int
    refused: int
    alerts: int
    dropped: int
    fingerprints: int
    advisories: int
    #: Entries in the restriction memory (at most two per restricted device).
    restricted_remembered: int = 0
    #: Devices whose last SRTP offer is remembered.
    offers_remembered: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCheck:
    """One REGISTER's decision and the sighting to record with it."""

    decision: PolicyDecision
    sighting: DeviceSighting
    #: The address the REGISTER came from (the alert's source).
    source_ip: str


class DeviceGate:
    """The endpoint policy at REGISTER and the queue of inventory writes."""

    def __init__(
        self,
        *,
        settings: PolicySettings,
        fingerprints: Sequence[DeviceFingerprint],
        advisories: Sequence[Advisory],
        zone_of: Callable[[str], str],
        writes: DeviceWrites,
        events: EventBus,
        zone_overrides: Mapping[str, PolicyOverride] | None = None,
        class_overrides: Mapping[str, PolicyOverride] | None = None,
    ) -> None:
        self.settings = settings
        self._zone_overrides = dict(zone_overrides or {})
        self._class_overrides = dict(class_overrides or {})
        #: A user's class of service (the call shell's cached table, server.py); only
        #: asked when a class override is configured.
        self.class_of: Callable[[str], str] = lambda user: ""
        #: (zone, class) -> the effective settings (at most zones x classes entries).
        self._effective: dict[tuple[str, str], PolicySettings] = {}
        self.fingerprints = fingerprints
        self.advisories = advisories
        self._zone_of = zone_of
        self._writes = writes
        self._events = events
        self._pending: list[DeviceWrite] = []
        #: (user, device key) -> the SRTP suites last queued for its row.
        self._offers: OrderedDict[tuple[str, str], str] = OrderedDict()
        #: (user, User-Agent @ address) -> the key its REGISTER was recorded under,
        #: for an INVITE whose Contact lacks the REGISTER's ``+sip.instance``.
        self._row_keys: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._alerted: dict[tuple[str, str], int] = {}
        #: (user, device key) -> why its last REGISTER was restricted.
        self._restricted: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Another signaling worker's REGISTERs (sip.workers > 1, app/handoff.py).
        events.subscribe(self._adopt, RemoteEvent)
        self._decided = dict.fromkeys(STATUS.values(), 0)
        self._alerts = 0
        #: Sightings dropped because the queue was full.
        self.dropped = 0

    def statistics(self) -> DeviceGateStatistics:
        """REGISTERs decided by status, alerts raised, sightings dropped."""
        return DeviceGateStatistics(
            ok=self._decided["ok"],
            warn=self._decided["warn"],
            restricted=self._decided["restricted"],
            refused=self._decided["refused"],
            alerts=self._alerts,
            dropped=self.dropped,
            fingerprints=len(self.fingerprints),
            advisories=len(self.advisories),
            restricted_remembered=len(self._restricted),
            offers_remembered=len(self._offers),
        )

    def reload(self, data_dir: Path | None) -> bool:
        """SIGHUP: read the fingerprint and advisory files again (after an import). A
        file with a problem keeps the data in use, logged as an error; returns whether
        the new data was taken."""
        try:
            fingerprints = load_fingerprints(data_dir)
            advisories = load_advisories(data_dir)
        except RuleFileError as err:
            log.error("endpoint data not reloaded, keeping the previous: %s", err)
            return False
        self.fingerprints, self.advisories = fingerprints, advisories
        log.info(
            "endpoint data reloaded: %d fingerprints, %d advisories",
            len(fingerprints),
            len(advisories),
        )
        return True

    def check(self, flow: Flow, request: Request, auth: Authenticated, now: float) -> DeviceCheck:
        """The policy's decision for the device behind ``request`` (authenticated as
        ``auth``), and its sighting."""
        user_agent = (request.headers.get("user-agent") or "")[:MAX_USER_AGENT]
        device = identify(user_agent, self.fingerprints)
        tls = _tls(flow)
        identity = flow.identity
        facts = DeviceFacts(
            user_agent=user_agent,
            device=device,
            advisories=matching(device, self.advisories) if device is not None else (),
            digest_algorithm=auth.algorithm or None,
            tls_version=tls.version if tls is not None else None,
            certificate=identity is not None,
            certificate_expiry=tls.cert_not_after
            if tls is not None
            else (identity.not_after if identity is not None else None),
            now=now,
        )
        zone = self._zone_of(flow.peer[0])
        decision = decide(facts, self.settings_for(auth.user, zone))
        sighting = DeviceSighting(
            user=auth.user,
            key=_device_key(request, user_agent, flow.peer[0]),
            aor=_aor(request),
            contact=_contact(request),
            source=flow_text(flow),
            zone=zone,
            transport=flow.transport,
            tls_version=tls.version if tls is not None else "",
            tls_cipher=tls.cipher if tls is not None else "",
            cert_subject=identity.subject if identity is not None else "",
            cert_serial=f"{identity.serial:x}" if identity is not None else "",
            cert_expiry=tls.cert_not_after if tls is not None and identity is not None else None,
            digest_algorithm=auth.algorithm,
            user_agent=user_agent,
            vendor=device.vendor if device is not None else "",
            model=device.model if device is not None else "",
            version=(device.version or "") if device is not None else "",
            status=STATUS[decision.action],
            reasons=tuple(r.text for r in decision.reasons),
            time=now,
        )
        return DeviceCheck(decision=decision, sighting=sighting, source_ip=flow.peer[0])

    def settings_for(self, user: str, zone: str) -> PolicySettings:
        """The policy for ``user``'s device in ``zone``: the global settings with the
        zone's and the user's class's overrides, the stricter of them."""
        if not self._zone_overrides and not self._class_overrides:
            return self.settings
        cos = self.class_of(user) if self._class_overrides else ""
        settings = self._effective.get((zone, cos))
        if settings is None:
            applying = [
                o
                for o in (self._zone_overrides.get(zone), self._class_overrides.get(cos))
                if o is not None
            ]
            settings = effective_settings(self.settings, *applying)
            self._effective[(zone, cos)] = settings
        return settings

    def srtp_offer(
        self, user: str, request: Request, source_ip: str, now: float, *, graded: bool = True
    ) -> PolicyReason | None:
        """The SRTP an INVITE from ``user``'s device offers: its suites queued for the
        device's inventory row when they changed, and, when ``graded``, the
        ``no_srtp_offer`` check: None when the offer carries SRTP (or there is none, or
        it is allowed); else the reason, alerted once per device a day. The call shell
        refuses (488), restricts or lets the call go."""
        offer = srtp_offer_of(request.body)
        if offer is None:
            return None
        user_agent = (request.headers.get("user-agent") or "")[:MAX_USER_AGENT]
        device_key = _device_key(request, user_agent, source_ip)
        self._note_offer(user, device_key, offer.suites, now)
        if not graded:
            return None
        reason = srtp_offer_reason(offer.secure, self.settings_for(user, self._zone_of(source_ip)))
        if reason is None:
            return None
        key = "no_srtp_offer " + device_key
        if self._first_today((user, key), now):
            self._events.publish(
                AlertRaised(
                    what=f"device policy: no SRTP offer ({reason.action})",
                    who=user,
                    why=f"{user_agent[:MAX_WARNING_UA] or '(no User-Agent)'}: {reason.text}",
                    action=reason.action,
                    rule="endpoint_policy",
                    time=now,
                    source=source_ip,
                )
            )
        return reason

    def _note_offer(self, user: str, device_key: str, suites: str, now: float) -> None:
        """Queue ``suites`` for the row of ``user``'s device when they are not what was
        last queued for it: one write per device and change, not per INVITE. The row
        is found under the key its REGISTER had (``_row_keys``)."""
        key = self._row_keys.get((user, device_key), device_key)
        entry = (user, key)
        if self._offers.get(entry) == suites:
            self._offers.move_to_end(entry)
            return
        if len(self._pending) >= MAX_PENDING_SIGHTINGS:
            self.dropped += 1  # not remembered: the next INVITE tries again
            return
        self._pending.append(DeviceSrtpOffer(user=user, key=key, suites=suites, time=now))
        self._offers[entry] = suites
        self._offers.move_to_end(entry)
        while len(self._offers) > MAX_OFFER_MEMORY:
            self._offers.popitem(last=False)

    def _remember_key(self, seen: DeviceSighting, source_ip: str) -> None:
        """Where an INVITE without the REGISTER's ``+sip.instance`` finds its row."""
        fallback = _fallback_key(seen.user_agent, source_ip)
        if fallback == seen.key:
            return
        entry = (seen.user, fallback)
        self._row_keys[entry] = seen.key
        self._row_keys.move_to_end(entry)
        while len(self._row_keys) > MAX_OFFER_MEMORY:
            self._row_keys.popitem(last=False)

    def _first_today(self, key: tuple[str, str], now: float) -> bool:
        """Whether ``key`` was not alerted yet today (and remember it was)."""
        day = int(now // _DAY)
        if self._alerted.get(key) == day:
            return False
        if len(self._alerted) >= MAX_ALERT_MEMORY:
            self._alerted.clear()
        self._alerted[key] = day
        self._alerts += 1
        return True

    def record(self, check: DeviceCheck) -> None:
        """Queue the sighting for the inventory; alert and log once per device a day."""
        seen = check.sighting
        self._decided[seen.status] += 1
        if seen.status == "refused":
            # Every refusal, like a failed authentication (the alert is once a day).
            # Control characters a User-Agent may hold are escaped by logfmt.
            log.info(
                "REGISTER of %s from %s refused: %s",
                seen.user,
                seen.source,
                "; ".join(r.text for r in check.decision.grave()),
            )
        if len(self._pending) >= MAX_PENDING_SIGHTINGS:
            self.dropped += 1
        else:
            self._pending.append(check.sighting)
        self._remember_key(seen, check.source_ip)
        if check.decision.action != "allow":
            self._alert(check)
        self._remember(check)

    def _remember(self, check: DeviceCheck) -> None:
        """Keep the restriction of a device (or forget it when its REGISTER is no longer
        restricted), under its key and under its User-Agent at its address: an INVITE's
        Contact does not always carry the ``+sip.instance`` its REGISTER had. A change
        is published for the other signaling workers. A refused REGISTER changes
        nothing: it stores no binding, and must not lift a restriction."""
        seen = check.sighting
        if seen.status == "refused":
            return
        keys = tuple(sorted({seen.key, _fallback_key(seen.user_agent, check.source_ip)}))
        reason = ""
        if seen.status == "restricted":
            reason = "; ".join(r.text for r in check.decision.grave())
        if self._apply(seen.user, keys, reason):
            self._events.publish(DeviceRestrictionChanged(user=seen.user, keys=keys, reason=reason))

    def _adopt(self, event: Event) -> None:
        if isinstance(event, RemoteEvent) and isinstance(event.event, DeviceRestrictionChanged):
            changed = event.event
            self._apply(changed.user, changed.keys, changed.reason)

    def _apply(self, user: str, keys: Iterable[str], reason: str) -> bool:
        """Restrict (``reason``) or lift ("") the device's keys; whether anything changed."""
        changed = False
        for key in keys:
            entry = (user, key)
            if not reason:
                changed |= self._restricted.pop(entry, None) is not None
                continue
            changed |= self._restricted.get(entry) != reason
            self._restricted[entry] = reason
            self._restricted.move_to_end(entry)
        while len(self._restricted) > MAX_RESTRICTED_MEMORY:
            self._restricted.popitem(last=False)
        return changed

    def restriction(self, user: str, request: Request, source_ip: str) -> str | None:
        """Why the device placing ``request`` (an INVITE authenticated as ``user`` from
        ``source_ip``) is restricted by the policy, as its last REGISTER was graded;
        None when it is not (or is unknown here). Found the way REGISTER keys devices:
        the Contact's ``+sip.instance``, else its User-Agent at its address."""
        user_agent = (request.headers.get("user-agent") or "")[:MAX_USER_AGENT]
        for key in (
            _device_key(request, user_agent, source_ip),
            _fallback_key(user_agent, source_ip),
        ):
            why = self._restricted.get((user, key))
            if why is not None:
                return why
        return None

    def _alert(self, check: DeviceCheck) -> None:
        seen = check.sighting
        if not self._first_today((seen.user, seen.key), seen.time):
            return
        why = "; ".join(r.text for r in check.decision.reasons)
        device = f"{seen.vendor} {seen.model} {seen.version}".strip() or seen.user_agent
        self._events.publish(
            AlertRaised(
                what=f"device policy: {seen.status}",
                who=seen.user,
                why=f"{device}: {why}",
                action=seen.status,
                rule="endpoint_policy",
                time=seen.time,
                source=check.source_ip,
            )
        )

    def flush(self) -> None:
        """Hand the queued sightings to the writer (one batch)."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._writes.save_devices(batch)


def _tls(flow: Flow) -> TlsInfo | None:
    # Only TLS connections accepted here carry it (transport/stream.py); UDP, TCP and
    # connections owned by another worker have none.
    tls = getattr(flow, "tls", None)
    return tls if isinstance(tls, TlsInfo) else None


def _aor(request: Request) -> str:
    uri = request.to.uri
    return f"{uri.user}@{uri.host}" if isinstance(uri, SipUri) else str(uri)


def _contact(request: Request) -> str:
    contacts = request.contacts
    return str(contacts[0].uri) if contacts else ""


def _device_key(request: Request, user_agent: str, source_ip: str) -> str:
    """RFC 5626 §4.1 ``+sip.instance`` when the device sends one (stable across
    addresses); else its User-Agent at its source address."""
    try:
        contacts = request.contacts
    except SipParseError:
        # An unparsable Contact is the call layer's to refuse, with its own reason
        # (400 "unterminated <URI>"...): here it only means no instance id.
        contacts = ()
    for contact in contacts:
        instance = contact.param("+sip.instance")
        if instance:
            return instance.strip('"<>')
    return _fallback_key(user_agent, source_ip)


def _fallback_key(user_agent: str, source_ip: str) -> str:
    return f"{user_agent} @ {source_ip}"
