"""STUN and TURN server (RFC 8489, RFC 8656) for phones and softphones behind NAT.

Two layers: :mod:`.stun` (message codec), :mod:`.turn` (the TURN state machine) and
:mod:`.turnmodel` (its limits, actions, events and state records) are sans-IO;
:mod:`.service` is the asyncio shell with the UDP/TCP listeners and relay sockets.
:mod:`.peerfilter` keeps the relay out of internal networks and :mod:`.credentials`
makes and checks TURN REST credentials.

Import the modules themselves (``from voipsec.nat import stun``): the package imports
nothing, so a relay worker that needs only :mod:`.peerfilter` does not load the TURN
server with it (issue 15: a worker process starts in half the time).
"""
