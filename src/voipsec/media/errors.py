"""The one error the media relay gives the call layer."""

from __future__ import annotations


class MediaRefused(Exception):
    """An SDP voipsec will not carry: the request gets ``status`` with this Warning.

    The text is ours and safe to send and log: it never contains key material.
    """

    def __init__(self, status: int, warning: str) -> None:
        super().__init__(warning)
        self.status = status
        self.warning = warning
