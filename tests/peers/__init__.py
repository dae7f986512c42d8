"""Harnesses that start and drive real peer programs (SIPp, stunnel, baresip, openssl).

Shared by the integration tests and by the benchmarks in ``bench/``. Every wait is a
condition with a deadline, never a bare sleep.
"""
