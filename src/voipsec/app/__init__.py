"""The asyncio shell's parts that ``voipsec.server`` builds and wires.

Each module owns one job of the running server and gets its collaborators passed in
(``typing.Protocol`` where two parts would otherwise know each other):
:mod:`.bans` keeps the guard's bans and their storage, :mod:`.intrusion` feeds the
IDS and carries out its actions, :mod:`.authn` carries out the authentication
decisions, :mod:`.registration` the registrar's, :mod:`.transactions` the
transaction layer's actions (sends, timers), :mod:`.listeners` opens and closes the
SIP and TURN listeners, :mod:`.periodic` owns every periodic job, and
:mod:`.watch` notices changed rule files and CRLs.
"""
