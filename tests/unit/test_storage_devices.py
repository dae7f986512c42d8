"""The device inventory's table (voipsec.storage.devices): upsert counts and keeps the
first sighting, reasons round-trip, per-user and total bounds drop the least recently
seen, long texts are cut, an older voipsec.db gains the table on open (and an older
table the ``srtp_suites`` column), an INVITE's SRTP offer lands on its device's row and
a REGISTER keeps it, and the store writer writes devices off the event loop."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.records import DeviceSighting, DeviceSrtpOffer
from voipsec.storage import Store, StoreWriter
from voipsec.storage.devices import (
    DEVICES_STATEMENTS,
    MAX_DEVICE_REASONS,
    MAX_DEVICE_TEXT,
    MAX_DEVICES_PER_USER,
    write_devices,
)

T0 = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "voipsec.db")
    yield s
    s.close()


def _seen(user: str = "alice", key: str = "k1", time: float = T0, **more: object) -> DeviceSighting:
    base: dict[str, object] = {
        "user": user,
        "key": key,
        "aor": f"{user}@localhost",
        "contact": "<sip:alice@127.0.0.1:5070;transport=tls>",
        "source": "tls:127.0.0.1:5070",
        "zone": "internet",
        "transport": "tls",
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "digest_algorithm": "SHA-256",
        "user_agent": "Grandstream GXP1625 1.0.2.25",
        "vendor": "Grandstream",
        "model": "GXP1625",
        "version": "1.0.2.25",
        "status": "refused",
        "reasons": ("firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81",),
        "time": time,
    }
    return DeviceSighting(**{**base, **more})  # type: ignore[arg-type]


def test_storage_devices_round_trip(store: Store) -> None:
    seen = _seen(cert_subject="CN=alice", cert_serial="1f", cert_expiry=T0 + 86_400)
    store.save_devices([seen])
    [record] = store.devices()
    assert (record.seen, record.first_seen, record.registrations) == (seen, T0, 1)
    assert store.device(record.id) == record
    assert store.device(record.id + 1) is None


def test_storage_devices_upsert_counts_and_keeps_first_seen(store: Store) -> None:
    store.save_devices([_seen()])
    store.save_devices([_seen(time=T0 + 60, status="ok", reasons=())])
    [record] = store.devices()
    assert (record.first_seen, record.seen.time, record.registrations) == (T0, T0 + 60, 2)
    assert (record.seen.status, record.seen.reasons) == ("ok", ())


def test_storage_devices_list_one_user(store: Store) -> None:
    store.save_devices([_seen("alice"), _seen("bob"), _seen("alice", "k2")])
    assert [(d.seen.user, d.seen.key) for d in store.devices("alice")] == [
        ("alice", "k1"),
        ("alice", "k2"),
    ]
    assert [d.seen.user for d in store.devices()] == ["alice", "alice", "bob"]


def test_storage_devices_per_user_bound_drops_least_recently_seen(store: Store) -> None:
    over = MAX_DEVICES_PER_USER + 2
    store.save_devices([_seen(key=f"k{n}", time=T0 + n) for n in range(over)])
    store.save_devices([_seen("bob")])
    kept = [d.seen.key for d in store.devices("alice")]
    assert kept == [f"k{n}" for n in range(2, over)]
    assert len(store.devices("bob")) == 1


def test_storage_devices_total_bound(store: Store) -> None:
    with store.db:
        store.db.execute("BEGIN")
        write_devices(store.db, [_seen(f"u{n}", time=T0 + n) for n in range(5)], max_total=3)
    assert [d.seen.user for d in store.devices()] == ["u2", "u3", "u4"]


def test_storage_devices_texts_and_reasons_cut(store: Store) -> None:
    reasons = tuple(f"reason {n}" for n in range(MAX_DEVICE_REASONS + 5))
    store.save_devices(
        [_seen(user_agent="U" * (MAX_DEVICE_TEXT + 10), contact="a\r\nb", reasons=reasons)]
    )
    [record] = store.devices()
    assert record.seen.user_agent == "U" * MAX_DEVICE_TEXT
    assert record.seen.contact == "a  b"
    assert record.seen.reasons == reasons[:MAX_DEVICE_REASONS]


def test_storage_devices_table_added_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE devices")
    db.commit()
    db.close()
    reopened = Store(path)
    try:
        reopened.save_devices([_seen()])
        assert len(reopened.devices()) == 1
    finally:
        reopened.close()


def test_storage_devices_written_by_the_store_writer(store: Store) -> None:
    writer = StoreWriter(store.path, clock=lambda: T0)
    writer.start()
    offer = DeviceSrtpOffer(user="alice", key="k2", suites="dtls", time=T0)
    writer.save_devices([_seen(), dataclasses.replace(_seen(), key="k2"), offer])
    assert writer.stop() == 0
    assert [(d.seen.key, d.srtp_suites) for d in store.devices()] == [("k1", ""), ("k2", "dtls")]


SUITES = "AES_256_CM_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_80"


def test_storage_devices_srtp_offer_on_the_row_kept_by_register(store: Store) -> None:
    store.save_devices(
        [_seen(), _seen(key="k2"), DeviceSrtpOffer(user="alice", key="k1", suites=SUITES)]
    )
    assert [(d.seen.key, d.srtp_suites) for d in store.devices()] == [("k1", SUITES), ("k2", "")]
    # A re-REGISTER updates the sighting, never the offer; a later offer replaces it.
    store.save_devices([_seen(time=T0 + 60)])
    [k1, _] = store.devices()
    assert (k1.registrations, k1.srtp_suites) == (2, SUITES)
    store.save_devices([DeviceSrtpOffer(user="alice", key="k1", suites="none")])
    assert store.devices()[0].srtp_suites == "none"


def test_storage_devices_srtp_offer_without_a_row_writes_nothing(store: Store) -> None:
    store.save_devices([_seen()])
    store.save_devices(
        [
            DeviceSrtpOffer(user="alice", key="other", suites="dtls"),
            DeviceSrtpOffer(user="bob", key="k1", suites="dtls"),
        ]
    )
    assert [(d.seen.user, d.seen.key, d.srtp_suites) for d in store.devices()] == [
        ("alice", "k1", "")
    ]


def test_storage_devices_srtp_suites_cut(store: Store) -> None:
    store.save_devices(
        [_seen(), DeviceSrtpOffer(user="alice", key="k1", suites="S" * (MAX_DEVICE_TEXT + 1))]
    )
    assert store.devices()[0].srtp_suites == "S" * MAX_DEVICE_TEXT


def test_storage_devices_srtp_column_added_to_an_older_table(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE devices")
    # The table as the inventory made it before the SRTP offers were recorded.
    old = DEVICES_STATEMENTS[0].replace("    srtp_suites TEXT NOT NULL DEFAULT '',\n", "")
    assert "srtp_suites" not in old
    db.execute(old.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", float="REAL"))
    db.execute(
        'INSERT INTO devices ("user", device_key, aor, contact, source, zone, transport, '
        "tls_version, tls_cipher, cert_subject, cert_serial, digest_algorithm, user_agent, "
        "vendor, model, version, status, reasons, first_seen, last_seen, registrations) "
        "VALUES ('alice', 'k1', '', '', '', '', 'udp', '', '', '', '', 'MD5', '', '', '', '', "
        "'ok', '', ?, ?, 4)",
        (T0, T0),
    )
    db.commit()
    db.close()
    reopened = Store(path)
    try:
        [old_row] = reopened.devices()
        assert (old_row.seen.key, old_row.registrations, old_row.srtp_suites) == ("k1", 4, "")
        reopened.save_devices([DeviceSrtpOffer(user="alice", key="k1", suites="dtls")])
        assert reopened.devices()[0].srtp_suites == "dtls"
    finally:
        reopened.close()
    # Opening it again finds the column and changes nothing.
    Store(path).close()
