"""Posture audit: local checks of an installation and live probes of SIP/TURN servers."""
