"""Media plane: SDP parsing and rewriting (RFC 8866) and SDES keys for SRTP (RFC 4568)."""
