"""Decisions (sans-IO): who sent a request, registrations, calls, the dial plan.

Nothing here touches a socket, a file, a database or the clock; the shell
(``voipsec.server``, ``voipsec.calls``) feeds these modules and carries out what they
return. ``make lint`` enforces it (import-linter contracts in pyproject.toml).
"""
