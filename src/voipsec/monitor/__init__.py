"""Monitoring: SIP message log, HEP export, alert delivery and Prometheus metrics."""
