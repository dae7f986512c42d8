"""The monitoring shell: SIP log, HEP export, alert delivery and /metrics, wired together.

The cores (redaction, HEP encoding, alert formatting, metrics) live in their own
modules. This one owns their lifetimes and gives the SIP service two small hooks:
:meth:`MonitorService.message` for every SIP message in or out (after TLS), and
:meth:`MonitorService.alert` for every alert (IDS, bans, fraud). Metrics follow the
events stream, plus gauges refreshed once a second; so do the HEP call-quality
reports (one per leg of each call, from its ``MediaStats``).

With several signaling workers, worker 0's monitor stores, counts and delivers every
worker's alerts and serves /metrics with the sum over the workers; the others' only
forward (app/shared/monitor.py sets :attr:`MonitorService.delivers_alerts` and
:attr:`MonitorService.serves_metrics`).

Monitoring fails open: a log file that cannot be written, a collector that is down or
a webhook that does not answer is counted and logged, and never slows a call.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from pathlib import Path

from ..config import Config, parse_listen
from ..events import AlertRaised, Event, EventBus, MediaStats, MessageSeen
from ..pki.ca import ServerPaths
from ..pki.tls import server_context
from ..storage import Store, StoreError, StoreWrites
from .alerts import Alert, AlertDispatcher, EmailSettings
from .hep import HepExporter
from .metrics import METRIC_EVENTS, Metrics, MetricsServer
from .siplog import SipLog, redact

log = logging.getLogger("voipsec.monitor")

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]{1,256})", re.IGNORECASE)


def call_id_of(data: bytes) -> str | None:
    """The Call-ID of a raw SIP message, cheaply (no full parse)."""
    match = _CALL_ID.search(data, 0, 8192)
    return match.group(1).strip().decode("utf-8", "replace") if match else None


def quality_report(stats: MediaStats) -> bytes:
    """The JSON of a HEP call-quality report: what the relay received on one leg."""
    report = {
        "type": "voipsec.media",
        "call_id": stats.call_id,
        "cdr_id": stats.cdr_id,
        "leg": stats.leg,
        "suite": stats.suite,
        "packets": stats.packets,
        "lost": stats.lost,
        "jitter_ms": round(stats.jitter_ms, 2),
        "mos": round(stats.mos, 2) if stats.packets else None,
        "auth_failures": stats.auth_failures,
        "replays": stats.replays,
        "wrong_source": stats.wrong_source,
        "malformed": stats.malformed,
        "stun_answered": stats.stun_answered,
        "stun_dropped": stats.stun_dropped,
    }
    return json.dumps(report, separators=(",", ":")).encode()


def _unknown_peer(local_host: str) -> tuple[str, int]:
    """The "any" address of ``local_host``'s family: a leg whose peer was never known."""
    return ("::", 0) if ":" in local_host else ("0.0.0.0", 0)  # noqa: S104 (not a bind)


class MonitorService:
    """SIP log, HEP, alerts and metrics of one ``voipsec serve``."""

    def __init__(
        self,
        *,
        config: Config,
        data_dir: Path,
        store: Store,
        events: EventBus,
        writes: StoreWrites | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.store = store
        #: Where alerts are written: the server's StoreWriter, or the Store itself.
        self.writes: StoreWrites = writes if writes is not None else store
        self.metrics = Metrics()
        events.subscribe(self.metrics.on_event, *METRIC_EVENTS)
        # Every alert is stored and counted, delivered where a sink is configured.
        events.subscribe(self._on_alert, AlertRaised)
        section = config.siplog
        self.siplog = (
            SipLog(data_dir / section.path, max_bytes=section.max_bytes, backups=section.backups)
            if section.enabled
            else None
        )
        hep = config.hep
        self.hep = (
            HepExporter(
                hep.target,
                capture_id=hep.capture_id,
                auth_key=hep.auth_key or None,
                redact=hep.redact,
            )
            if hep.target
            else None
        )
        if self.hep is not None:
            events.subscribe(self._on_event, MediaStats)
        alerts = config.alerts
        email = (
            EmailSettings(
                sender=alerts.email_from,
                recipients=tuple(alerts.email_to),
                smtp=alerts.smtp,
                tls=alerts.smtp_tls,
                ca=data_dir / alerts.smtp_ca if alerts.smtp_ca else None,
                user=alerts.smtp_user,
                password=alerts.smtp_password,
            )
            if alerts.email_to
            else None
        )
        self.dispatcher = (
            AlertDispatcher(
                webhook_url=alerts.webhook or None, syslog=alerts.syslog or None, email=email
            )
            if alerts.webhook or alerts.syslog or email is not None
            else None
        )
        self.metrics_server: MetricsServer | None = None
        #: False on a signaling worker other than 0: its alerts go to worker 0, which
        #: stores and delivers them (once), and worker 0 serves /metrics.
        self.delivers_alerts = True
        self.serves_metrics = True
        #: True when there is something to do with each SIP message (checked once:
        #: without it nobody subscribes to MessageSeen and none is ever built).
        self.tapping = self.siplog is not None or self.hep is not None
        if self.tapping:
            events.subscribe(self._on_message, MessageSeen)
        #: True when a message must be redacted (for the SIP log, HEP or both: once).
        self._redacting = self.siplog is not None or (self.hep is not None and self.hep.redact)

    async def start(self) -> None:
        if self.hep is not None:
            if not self.hep.redact:
                log.warning(
                    "HEP export carries secrets (digest responses, nonces, SDP keys) in"
                    " clear: hep.redact = false is for labs only"
                )
            await self.hep.start()
        if self.dispatcher is not None and self.delivers_alerts:
            await self.dispatcher.start()
        listen = self.config.metrics.listen
        if listen and self.serves_metrics:
            address = parse_listen(f"tls:{listen}")
            paths = ServerPaths.in_dir(self.data_dir)
            context = server_context(
                cert=paths.cert,
                key=paths.key,
                client_ca=None,
                client_cert="off",
                min_version=self.config.tls.min_version,
                session_tickets=self.config.tls.session_tickets,
            )
            self.metrics_server = MetricsServer(
                self.metrics,
                host=address.host,
                port=address.port,
                ssl_context=context,
                token=self.config.metrics.token or None,
            )
            await self.metrics_server.start()
            log.info("metrics on https://%s:%d/metrics", address.host, address.port)

    async def stop(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.hep is not None:
            await self.hep.stop()
        if self.siplog is not None:
            self.siplog.close()

    # -- hooks ------------------------------------------------------------------------

    def message(self, seen: MessageSeen) -> None:
        """One SIP message received or sent (decrypted bytes): SIP log and HEP."""
        data = seen.data
        call_id = call_id_of(data)
        now = time.time()
        # One redaction for both outputs: the hot path does it at most once.
        redacted = redact(data) if self._redacting else None
        if self.siplog is not None:
            self.siplog.write(
                direction=seen.direction,
                local=seen.local,
                remote=seen.peer,
                transport=seen.transport,
                tls_identity=seen.tls_identity,
                call_id=call_id,
                message=data,
                time=now,
                redacted=redacted,
            )
        if self.hep is not None:
            inbound = seen.direction == "in"
            self.hep.send(
                direction=seen.direction,
                src=seen.peer if inbound else seen.local,
                dst=seen.local if inbound else seen.peer,
                transport=seen.transport,
                payload=data,
                call_id=call_id,
                time=now,
                redacted=redacted,
            )

    def _on_message(self, event: Event) -> None:
        if isinstance(event, MessageSeen):
            self.message(event)

    def _on_alert(self, event: Event) -> None:
        if isinstance(event, AlertRaised) and self.delivers_alerts:
            self.alert(event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, MediaStats) and self.hep is not None:
            self.hep.send_report(
                src=event.remote or _unknown_peer(event.local[0]),
                dst=event.local,
                report=quality_report(event),
                call_id=event.call_id,
                mos=event.mos if event.packets else None,
                time=event.time,
            )

    def alert(self, alert: Alert) -> None:
        """Store, deliver and count one alert."""
        log.warning("alert %s: %s", alert.rule, alert.detail())
        try:
            self.writes.add_alert(alert.rule, alert.source or alert.who, alert.detail(), alert.time)
        except (sqlite3.Error, StoreError):
            log.exception("could not store an alert")
        if self.dispatcher is not None:
            self.dispatcher.dispatch(alert)
        self.metrics.on_alert(alert.rule)
