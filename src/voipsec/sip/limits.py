"""Named input limits for untrusted SIP bytes.

Each limit is a constant with the reasoning behind its number; every one has a test
that exceeds it (tests/unit/test_sip_limits.py).
"""

from __future__ import annotations

#: Whole message, headers and body. RFC 3261 §18.1.1 keeps UDP messages under the
#: path MTU (1300 bytes) and real INVITEs with SDP and certificates stay under 10 KiB;
#: 64 KiB leaves room for large multipart bodies and is the UDP datagram maximum.
MAX_MESSAGE_SIZE = 65_535

#: Header section (start line + headers). Kamailio's default BUF_SIZE is 64 KiB for
#: the whole message; phones' REGISTERs are under 2 KiB.
MAX_HEADER_BYTES = 32_768

#: Number of header fields. Real messages carry 10-40; 256 is generous and bounds the
#: work a single message can cause.
MAX_HEADERS = 256

#: One header field after unfolding. Long Route sets and certificates in Identity
#: headers stay well below 8 KiB.
MAX_HEADER_LENGTH = 8_192

#: Via header values in one message. Each Via is one hop; Max-Forwards starts at 70
#: (RFC 3261 §8.1.1.6), so more than 70 Vias means a loop or an attack.
MAX_VIA = 70

#: Request-URI and any URI we parse. RFC 3261 gives no limit; 2 KiB matches what
#: HTTP servers accept and is far beyond any dialable address.
MAX_URI_LENGTH = 2_048

#: Body size (Content-Length). SDP offers are 1-4 KiB; 16 KiB is enough for
#: multipart SDP plus ISUP or a PIDF document.
MAX_BODY_SIZE = 16_384

#: Largest CSeq sequence number: RFC 3261 §8.1.1.5 says it MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1

#: Largest Expires / Max-Forwards / Content-Length value accepted as a number
#: (RFC 3261 §20.19: delta-seconds up to 2**32-1).
MAX_DELTA_SECONDS = 2**32 - 1
