"""Durable records: the SQLite store, the CDR database (SQLite or PostgreSQL) and the
writer that keeps CDR writes off the event loop.

``records`` holds the frozen dataclasses, ``store`` the ``voipsec.db`` file (users,
bindings, bans, alerts, certificates), ``cdr`` the ``cdrs`` table in either database,
and ``writer`` one bounded queue drained by a thread (docs/storage.md).
"""

from ..records import (
    BAN_SCOPES,
    CDR_FIELDS,
    DISPOSITIONS,
    HANGUP_BY,
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
from .writer import CdrWriter, WriterStatistics

__all__ = [
    "BAN_SCOPES",
    "CDR_FIELDS",
    "DB_NAME",
    "DEFAULT_CLASS",
    "DISPOSITIONS",
    "HANGUP_BY",
    "MAX_ALERTS",
    "MAX_CDR_FIELD",
    "MAX_CDR_MEDIA",
    "RESTART_DISPOSITION",
    "RESTART_HANGUP_BY",
    "RESTART_REASON",
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
    "WriterStatistics",
    "cdr_text",
    "check_class",
    "check_url",
    "check_user_name",
    "open_cdr_database",
    "open_writer_database",
    "redact_url",
]
