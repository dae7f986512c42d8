"""A SIP message as a peer's own log printed it (baresip's trace, linphonec's log)."""

from __future__ import annotations


class SipText:
    """What tests read of a logged SIP message: its start line and header values.
    Subclasses are dataclasses with a ``text`` field holding the message."""

    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0]

    def headers(self, name: str) -> list[str]:
        """Values of header ``name`` (case-insensitive; no compact forms)."""
        head = self.text.split("\n\n", 1)[0].split("\n")[1:]
        prefix = name.lower() + ":"
        return [h.split(":", 1)[1].strip() for h in head if h.lower().startswith(prefix)]
