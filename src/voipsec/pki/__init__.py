"""Built-in CA and TLS policy."""

from .ca import CaPaths, ServerPaths, create_ca, create_server_certificate, issue_certificate
from .tls import TLS12_CIPHERS, server_context

__all__ = [
    "TLS12_CIPHERS",
    "CaPaths",
    "ServerPaths",
    "create_ca",
    "create_server_certificate",
    "issue_certificate",
    "server_context",
]
