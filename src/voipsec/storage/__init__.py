"""Durable records: the SQLite store, the CDR database (SQLite or PostgreSQL) and the
writers that keep database writes off the event loop.

``records`` holds the frozen dataclasses, ``store`` the ``voipsec.db`` file (users,
bindings, bans, alerts, certificates), ``cdr`` the ``cdrs`` table in either database,
``writer`` the CDR writer and ``storewriter`` the writer of bans, bindings and alerts:
each one bounded queue drained by a thread (``batchwriter``, docs/storage.md).
"""

from ..records import (
    BAN_SCOPES,
    CDR_FIELDS,
    DISPOSITIONS,
    HANGUP_BY,
    MAX_CDR_ENCRYPTION,
    MAX_CDR_FIELD,
    MAX_CDR_MEDIA,
    RESTART_DISPOSITION,
    RESTART_HANGUP_BY,
    RESTART_REASON,
    AlertRecord,
    BanRecord,
    Binding,
    CdrRecord,
    CdrStart,
    CertificateRecord,
    StoreError,
    StoreUnavailable,
    cdr_text,
)
from .cdr import CdrDatabase, check_url, open_cdr_database, open_writer_database, redact_url
from .store import DB_NAME, DEFAULT_CLASS, MAX_ALERTS, Store, check_class, check_user_name
from .storewriter import STORE_MAX_PENDING, StoreWriter, StoreWrites
from .writer import CdrWriter, WriterStatistics

__all__ = [
    "BAN_SCOPES",
    "CDR_FIELDS",
    "DB_NAME",
    "DEFAULT_CLASS",
    "DISPOSITIONS",
    "HANGUP_BY",
    "MAX_ALERTS",
    "MAX_CDR_ENCRYPTION",
    "MAX_CDR_FIELD",
    "MAX_CDR_MEDIA",
    "RESTART_DISPOSITION",
    "RESTART_HANGUP_BY",
    "RESTART_REASON",
    "STORE_MAX_PENDING",
    "AlertRecord",
    "BanRecord",
    "Binding",
    "CdrDatabase",
    "CdrRecord",
    "CdrStart",
    "CdrWriter",
    "CertificateRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoreWriter",
    "StoreWrites",
    "WriterStatistics",
    "cdr_text",
    "check_class",
    "check_url",
    "check_user_name",
    "open_cdr_database",
    "open_writer_database",
    "redact_url",
]
