"""The commented configuration file ``voipsec init`` writes: every key with its
secure default (kept apart from the settings model so each stays short)."""

DEFAULT_TOML = """\
# voipsec configuration. Every key has a secure default; delete a key to get it back.
# Change with `voipsec config set KEY VALUE` (VALUE is a TOML literal) or by hand.

[sip]
# The SIP domain: AORs are user@domain and it is the digest realm.
# Changing it invalidates stored password digests (set passwords again).
domain = "localhost"
# Where SIP listens. Only TLS by default; add "udp:127.0.0.1:5060" or
# "tcp:127.0.0.1:5060" to open plaintext SIP (for a trusted zone only).
# A TLS listener may override tls.client_cert: "tls:127.0.0.1:5062;client_cert=required".
listen = ["tls:127.0.0.1:5061"]
# Other host names or addresses that mean this server in Request-URIs and AORs.
aliases = []
# DSCP on SIP packets: 24 = CS3 (signaling). 0 leaves the default.
dscp = 24
# Signaling processes sharing the listeners: 0 = one per core, 1 = a single process.
workers = 0
# Bytes of receive and send buffer each UDP listener asks for (131072..268435456).
# The kernel grants at most net.core.rmem_max / wmem_max (more as root); the log
# says what it granted. Too small a buffer drops datagrams under load.
udp_buffer = 4194304
# Pages ("https://host:port") that may use a "wss:" listener; none: 403 (docs/webrtc.md).
websocket_origins = []

[tls]
# Client certificates: "required" | "optional" | "off"; checked against voipsec's CA.
client_cert = "optional"
# Lowest TLS version accepted: "1.2" or "1.3". Only ECDHE with AEAD ciphers are offered.
min_version = "1.2"
# TLS 1.3 session tickets sent after each handshake (0-8). 0: none, so no TLS 1.3
# resumption; PJSIP/GnuTLS phones (Jami) lose the next message after tickets, and
# phones keep their connection open anyway. TLS 1.2 resumption is not affected.
session_tickets = 0
# Seconds a client has to finish the TLS handshake.
handshake_timeout = 10.0
# Seconds a connection may stay silent before it is closed (phones send keep-alives).
idle_timeout = 900.0
# Seconds a message may take from its first byte to its last (byte-at-a-time senders).
message_timeout = 30.0
# Connections from one IP address, and in all.
max_connections_per_ip = 256
max_connections = 20000

[pki]
# Device certificates expiring within this many days (1-365) are listed as expiring by
# `voipsec ca list` and raise an alert once a day; renew with `voipsec ca renew NAME`.
expiry_warning_days = 30

[auth]
# "digest" (always ask for the password; a device certificate, when presented, must
# match the AOR), "cert_or_digest" (a device certificate for the AOR is enough) or
# "cert_and_digest" (both factors).
policy = "digest"
# Digest algorithms offered, strongest first. MD5 is for legacy phones only:
# ["SHA-256", "MD5"] lets in those that pick the MD5 challenge; phones that read
# only the first challenge and know only MD5 (baresip 1.0, SIPp 3.6) need ["MD5"].
algorithms = ["SHA-256"]
# Seconds a nonce is valid before the client is asked again with stale=true.
nonce_lifetime = 300

[registrar]
# Registrations shorter than min_expires get 423 Interval Too Brief; longer than
# max_expires are shortened; default_expires applies when the phone gives none.
min_expires = 60
max_expires = 7200
default_expires = 3600
max_contacts_per_aor = 10

[media]
# SRTP: "required" (RTP/AVP offers get 488 with a Warning) | "optional" (an RTP leg is
# bridged to an SRTP leg) | "off" (plain RTP on both legs, still relayed).
srtp = "required"
# How SRTP is offered to callees: "savp" (RTP/SAVP with a=crypto) | "avp-crypto" (best
# effort: RTP/AVP with a=crypto; a phone that ignores the keys answers plain RTP, which
# only "optional" accepts).
srtp_offer = "savp"
# UDP ports of the media relay (a pair per call leg: RTP even, RTCP odd).
ports = "20000-20999"
# Address the relay binds and writes into SDP.
address = "127.0.0.1"
# SDES suites accepted and offered, most preferred first.
suites = [
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
]
# Seconds without a valid media packet from a leg that must be sending (calls on hold
# are not timed out) before an answered call is ended (BYE both legs).
timeout = 30.0
# DSCP on media packets: 46 = EF (expedited forwarding). 0 leaves the default.
dscp = 46
# Before a leg latches, media goes only to the address its SIP came from (docs/media.md
# "Media relay destinations"), or into a zone's networks (zones: media_in_zone = true)
# or a trunk's sources, where these deny-listed (internal) CIDRs are still allowed.
allowed_peers = []
# Media relay processes (each takes an equal share of the ports): 0 = one per core.
workers = 0
# SDP attributes let through to the other leg besides the built-in allow-list (rtpmap,
# fmtp, ptime, maxptime, direction, rtcp-fb, mid, framerate...; docs/media.md "What
# crosses in SDP"), e.g. ["extmap", "ssrc"]. Addresses, ICE and keys never cross.
sdp_allow_attributes = []
# Media streams (m= lines: audio, video...) one call may have relayed, 1-8; further
# streams are refused with port 0. Each stream takes a port pair per leg.
max_streams = 4
# Seconds a browser's DTLS-SRTP handshake may take (1-60); then the call ends.
dtls_timeout = 10.0

[turn]
listen = ["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"]
# CIDRs a TURN client may relay to even though they are internal addresses.
allowed_peers = []

[log]
level = "info"

[sanity]
# Checks on every request beyond what the parser refuses; remove one to let a peer
# that needs it through. action: "reply" (400/483/416) or "drop" (silent).
checks = ["max_forwards", "from_tag", "via_branch", "uri_scheme", "lengths"]
action = "reply"

[ids]
# The VoIP IDS: the shipped rules plus *.yaml files in this directory (relative to
# the data directory), re-read when they change.
enabled = true
rules_dir = "rules"
# A Server header for responses; empty (the default) reveals no software version.
server_header = ""

# Network zones: the most specific CIDR match applies. Trusted zones are never rate
# limited or banned. Untrusted zones get a per-source token bucket (rate_requests per
# rate_window seconds, then a ban of rate_ban seconds: Kamailio pike's 16 per 2 s).
[[zones]]
name = "loopback"
cidrs = ["127.0.0.0/8", "::1/128"]
trust = "trusted"

[[zones]]
name = "internet"
cidrs = ["0.0.0.0/0", "::/0"]
trust = "untrusted"
rate_requests = 16
rate_window = 2.0
rate_ban = 300
methods = []          # empty: every method
may_register = true
transports = ["tls", "tcp", "udp", "wss"]
media_in_zone = false  # true: SDP may name any address of the zone, not only the phone's

[calls]
# Calls at once; more get 503 Service Unavailable.
max_calls = 10000
# Seconds a call may ring before the caller gets 408 and the callee a CANCEL.
ring_timeout = 60
# Seconds any call may last; then both legs get a BYE (a safeguard, not billing).
max_duration = 14400
# Seconds between in-dialog OPTIONS probes to both legs of an answered call; a leg
# that answers 408/481 or nothing ends the call and closes its CDR. 0 turns it off.
probe_interval = 300
# Emergency numbers: dialled exactly (separators aside), they reach a trunk for every
# authenticated caller whatever its class of service, fraud limits or device
# restriction, and each call raises an alert. They MUST be your country's own
# (docs/calls.md "Emergency calls"); [] turns the bypass off (serve warns).
emergency_numbers = ["112", "911", "999", "000"]
# The trunk they go to; "": the dial plan's route of +<country_code><number>.
emergency_trunk = ""

[dialplan]
# Dialled numbers become E.164: "+..." stays, the international prefix becomes "+",
# the national prefix becomes "+<country_code>", other digit strings are national.
country_code = "44"
national_prefix = "0"
international_prefix = "00"
# Class of service of users added without --class: "internal" | "national" |
# "international" | "premium-rate" (each allows the ones before it).
default_class = "national"
# Prefix files here (relative to the data directory) replace the shipped ones.
prefixes_dir = "dialplan"

[fraud]
# The fraud engine checks every user's call before it is routed (rates, concurrency,
# duration, sequential dialling, spend, high-risk and new destinations, Wangiri,
# unusual patterns). Rule files (*.yaml) here, relative to the data directory,
# replace shipped rules of the same id (docs/monitor.md).
enabled = true
rules_dir = "fraud"

[alerts]
# Alerts are stored (`voipsec alerts list`) and, when set, POSTed as JSON to this
# URL (retried) and sent to syslog ("udp:HOST:PORT" or "unix:/dev/log").
webhook = ""
syslog = ""
# E-mail (retried): to these addresses, from email_from, through the SMTP server
# "HOST[:PORT]" (587 with starttls, 465 with implicit by default). Never plaintext:
# smtp_tls = "starttls" (required; a server without it gets no mail) or "implicit".
# The server's certificate must chain to the system CAs, or to smtp_ca (a CA file,
# relative to the data directory), and name the host. With smtp_password set, keep
# this file 0600. With `config set`: email_from and smtp before email_to.
email_to = []
email_from = ""
smtp = ""
smtp_tls = "starttls"
smtp_ca = ""
smtp_user = ""
smtp_password = ""

[siplog]
# A JSON-lines log of every SIP message, secrets redacted, size-rotated, 0600.
enabled = false
path = "sip.log"
max_bytes = 50000000
backups = 5

[hep]
# HEPv3 export of the decrypted SIP to a Homer collector: "udp:HOST:PORT" or
# "tcp:HOST:PORT". Empty: off.
target = ""
capture_id = 2001
auth_key = ""
# Digest responses and nonces and SDP keys (a=crypto inline:, k=) are replaced by
# "<redacted>", as in the SIP log. false exports them in clear: for labs only.
redact = true

[metrics]
# Prometheus metrics at https://LISTEN/metrics (voipsec's server certificate).
# Empty: off. A token, when set, is required as "Authorization: Bearer TOKEN".
# An address that is not loopback needs a token, or allow_no_token = true (warned).
listen = "127.0.0.1:8443"
token = ""
allow_no_token = false

[cdr]
# Where call detail records are stored. "" (the default): voipsec.db in the data
# directory. "postgresql://USER@HOST:PORT/DATABASE": a PostgreSQL server (the same
# table and behaviour; `voipsec cdr list` reads it too). A password is better kept in
# ~/.pgpass or PGPASSWORD than here; if it is in the URL, keep this file 0600.
url = ""
# CDR rows are written by a background thread. While the database is locked or down,
# calls go on and up to this many writes wait in memory; more are dropped, counted and
# alerted (docs/storage.md).
max_pending = 100000

[endpoints]
# What to do with a device at REGISTER (docs/endpoints.md "Policy"). Per check, one of
# "allow", "warn" (alert once a day, registers), "restrict" (registers, marked
# restricted in the inventory, calls internal users and emergency numbers only) or
# "refuse" (403 with a Warning naming the reason and the fix). Defaults never lock a
# site out: only KEV-listed advisories refuse.
enabled = true
kev_advisory = "refuse"       # firmware in an advisory CISA lists as exploited
advisory = "warn"             # firmware in any other advisory
unknown_user_agent = "warn"   # no fingerprint matches its User-Agent
md5_digest = "warn"           # answered the challenge with MD5 (auth.algorithms)
tls12 = "allow"               # TLS 1.2 (AEAD suites only); tls.min_version forbids it
below_minimum = "warn"        # firmware below minimum_firmware for its vendor/model
missing_certificate = "allow" # no client certificate
expiring_certificate = "warn" # client certificate expiring within pki.expiry_warning_days
no_srtp_offer = "warn"        # at INVITE, an offer without SRTP (media.srtp optional/off)
# Lowest firmware per "Vendor" or "Vendor/MODEL-PATTERN", e.g.
# minimum_firmware = { "Grandstream/GXP16??" = "1.0.7.81" }
minimum_firmware = {}
# Per zone and per class of service, stricter actions (the stricter always wins):
# [endpoints.zones.internet]
# unknown_user_agent = "refuse"
# [endpoints.classes.premium-rate]
# advisory = "refuse"

# SIP trunks (none by default). Calls whose E.164 number starts with one of a trunk's
# prefixes go to it over TLS; calls from its source CIDRs are mapped by DID to users.
# [[trunks]]
# name = "carrier"
# address = "tls:198.51.100.10:5061"
# domain = "sip.carrier.example"
# username = "account"
# password = "secret"
# registration = false
# prefixes = ["+"]
# sources = ["198.51.100.10/32"]
# dids = { "+442071234567" = "alice" }
# ca = ""              # CA file for the trunk's certificate; empty: voipsec's CA
"""
