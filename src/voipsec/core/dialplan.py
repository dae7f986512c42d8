"""Dial plan: dialled numbers to E.164, classes of service and trunk routes, sans-IO.

How this works: the B2BUA hands :meth:`Dialplan.classify` the user part of a
Request-URI. A name of a local user is an internal call. Anything else must be a
telephone number: it is normalised to E.164, classified (premium-rate when a
premium prefix matches, national under our country code, international otherwise)
and given the trunk whose E.164 prefix matches longest. :func:`allows` then says
whether the caller's class of service may make the call; each class allows the
classes before it in ``CLASSES_OF_SERVICE``. Calls that come in from a trunk are
mapped to users by their DID with :meth:`Dialplan.inbound_user`. An emergency number
(core/emergency.py) is recognised before any of this and is of kind ``"emergency"``,
which every class of service allows.

Normalisation (:meth:`Dialplan.normalise`), in this order:

1. A dialled string longer than :data:`MAX_DIALLED_LENGTH` characters is refused.
2. Escapes are decoded: a URI user part carries a space as ``%20`` and may carry
   ``+`` as ``%2B`` (RFC 3261 §19.1.2; §19.1.4: escaped and plain are equal).
3. Only ASCII digits, one leading ``+`` and the visual separators space, ``-``,
   ``.``, ``(`` and ``)`` (ITU-T E.123; RFC 3966 §5.1.1) may appear. The separators
   are removed: ``"020 7123-4567"`` is ``"02071234567"``. Parentheses must pair up
   and not nest.
4. In a ``+`` number, the E.123 trunk-prefix notation ``(0)`` right after the
   country code (1 to 3 digits) is dropped: ``"+44 (0)20 7123 4567"`` is
   ``"+442071234567"``. Any other parenthesised group starting with 0 in a ``+``
   number (``"+44 (020) ..."``, ``"+44 20 (0)7123"``) is refused: where the trunk
   prefix ends cannot be known for certain.
5. ``+digits`` is already international and stays: ``"+33 1 23"`` -> ``"+33123"``.
6. A leading international prefix becomes ``+``: ``"0033123"`` -> ``"+33123"``.
7. A leading national prefix becomes ``+<country code>``:
   ``"02071234567"`` -> ``"+442071234567"``.
8. Any other digit string is a national subscriber number:
   ``"2071234567"`` -> ``"+442071234567"``.

The result must be ``+`` and ASCII digits, start with 1-9 (no E.164 country code
starts with 0), hold at most :data:`MAX_E164_DIGITS` digits, and not carry our own
national prefix after our own country code (``+4409...``: no E.164 number of ours
starts so, and a carrier that strips the 0 would connect ``+449...``, a premium
range the classification never saw). What fails these rules cannot be classified
with certainty and is refused, never guessed: anything that is not a number (a
letter, ``*``, ``#``, ``;``, a second or inner ``+``, a lone or nested
parenthesis, non-ASCII digits, a leading 0 after the rules) is 404 *Not A Number*
(RFC 3261 §21.4.4: no such user here, and no number we could route); a prefix with
nothing after it (``"+"``, ``"00"``, ``"0"``) is 484 *Address Incomplete* (RFC 3261
§21.4.22); too many digits or characters is 404 *Number Too Long*. The error's
``detail`` says which rule failed, for the Warning header (RFC 3261 §20.43).
``tel:`` URI parameters (``;phone-context``) are the caller's business: only the
user part arrives here, and a ``;`` in it is refused like any other character.

Failure mode: fails closed. A string that is not a number is refused, a class of
service it does not know allows nothing, and a prefix file that cannot be read or
has a bad line stops the load instead of falling back to the shipped list. The
premium-rate list is only as good as its ranges: a high-cost destination not in it
is plain international. Under NANP (country code 1) the Caribbean and Canadian
area codes share +1, so they classify as national; list the ones to keep from
national users in the premium-rate file.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from ..config import CLASSES_OF_SERVICE, ClassOfService, Config

__all__ = [
    "EMERGENCY",
    "MAX_DIALLED_LENGTH",
    "MAX_E164_DIGITS",
    "PREMIUM_RATE_FILE",
    "CallKind",
    "Destination",
    "Dialplan",
    "DialplanConfigError",
    "DialplanError",
    "allows",
    "refusal_reason",
]

#: What a destination is: a class of service, or an emergency number, which no class
#: of service may refuse (core/emergency.py).
CallKind = Literal["internal", "national", "international", "premium-rate", "emergency"]
EMERGENCY: Final = "emergency"

#: ITU-T E.164 §6: an international number has at most 15 digits, country code included.
MAX_E164_DIGITS = 15
#: 15 digits plus a 4-digit international prefix and room for E.123 separators; a
#: longer user part is not a telephone number, and is refused before any work.
MAX_DIALLED_LENGTH = 32
#: The premium-rate prefix file, shipped in ``voipsec/core/data`` and replaceable by
#: one of the same name in the ``[dialplan] prefixes_dir`` of the data directory.
PREMIUM_RATE_FILE = "premium-rate.txt"

# ITU-T E.123 visual separators (space, hyphen, full stop, parentheses); RFC 3966
# §5.1.1 has the same minus the space. They carry no digits and are dropped.
_SEPARATORS = str.maketrans("", "", " -.()")
_ASCII_DIGITS = frozenset("0123456789")
# The separators other than parentheses, which must pair up (normalisation rule 3).
_PLAIN_SEPARATORS = frozenset(" -.")
#: The E.123 trunk-prefix notation "(0)" may follow a country code of 1 to 3 digits.
_MAX_COUNTRY_CODE_DIGITS = 3
_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit: that also accepts "²" and "٣"
_COUNTRY_CODE = re.compile(r"[1-9][0-9]{0,2}")
_NATIONAL_PREFIX = re.compile(r"[0-9]{0,3}")
_INTERNATIONAL_PREFIX = re.compile(r"[0-9]{1,4}")
# The patterns config.py checks trunk prefixes and DIDs with.
_TRUNK_PREFIX = re.compile(r"\+[0-9]*")
_DID = re.compile(r"\+[1-9][0-9]{1,14}")
# A premium prefix names at least a country code digit: "+" alone would make every
# call premium, and "+0..." could never match a normalised number.
_PREMIUM_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")


class DialplanError(Exception):
    """A dialled string that is not a callable number.

    ``status`` is the SIP response to answer with (404 or 484); ``reason`` is a short,
    peer-safe reason phrase and ``detail`` the rule that failed (for a Warning); neither
    repeats the dialled string.
    """

    status: int
    reason: str
    detail: str

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.detail = detail or reason.lower()


class DialplanConfigError(ValueError):
    """A dial plan setting or prefix file that cannot be used; one line: where and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where a dialled string leads."""

    #: The user part as received (separators included).
    dialled: str
    #: The E.164 number, ``None`` for a local user.
    e164: str | None
    kind: CallKind
    #: The local user when ``kind`` is ``"internal"``.
    user: str | None
    #: The trunk with the longest matching prefix; ``None`` for a local user or when no
    #: trunk's prefix matches (the caller answers 404).
    trunk: str | None


class Dialplan:
    """Normalises, classifies and routes dialled numbers for one site."""

    __slots__ = (
        "_country_code",
        "_dids",
        "_international_prefix",
        "_national_prefix",
        "_premium",
        "_routes",
    )

    def __init__(
        self,
        *,
        country_code: str,
        national_prefix: str,
        international_prefix: str,
        premium_prefixes: Sequence[str],
        trunk_prefixes: Mapping[str, Sequence[str]],
        dids: Mapping[str, str],
    ) -> None:
        """``trunk_prefixes`` maps trunk names, in configured order, to their E.164
        prefixes; ``dids`` maps inbound E.164 numbers to user names (all trunks')."""
        _check("country_code", country_code, _COUNTRY_CODE)
        _check("national_prefix", national_prefix, _NATIONAL_PREFIX)
        _check("international_prefix", international_prefix, _INTERNATIONAL_PREFIX)
        for prefix in premium_prefixes:
            _check("premium prefix", prefix, _PREMIUM_PREFIX)
        for did in dids:
            _check("DID", did, _DID)
        self._country_code = country_code
        self._national_prefix = national_prefix
        self._international_prefix = international_prefix
        self._premium = frozenset(premium_prefixes)
        self._routes = _route_table(trunk_prefixes)
        self._dids = dict(dids)

    @classmethod
    def from_config(cls, config: Config, *, premium_prefixes: Sequence[str]) -> Dialplan:
        """The dial plan of ``config``: ``[dialplan]``, every trunk's prefixes and DIDs,
        and ``premium_prefixes`` (read by the shell:
        :func:`voipsec.core.dialplan_loader.load_dialplan`).

        Raises :class:`DialplanConfigError` for a DID that two trunks give to
        different users.
        """
        section = config.dialplan
        return cls(
            country_code=section.country_code,
            national_prefix=section.national_prefix,
            international_prefix=section.international_prefix,
            premium_prefixes=premium_prefixes,
            trunk_prefixes={t.name: t.prefixes for t in config.trunks},
            dids=_merge_dids((t.name, t.dids) for t in config.trunks),
        )

    def normalise(self, dialled: str) -> str:
        """The E.164 form (``+`` and digits) of ``dialled``; the rules are in the module
        docstring. Raises :class:`DialplanError` for anything that is not a number."""
        if len(dialled) > MAX_DIALLED_LENGTH:
            raise DialplanError(404, "Number Too Long")
        text = _plain_number(urllib.parse.unquote(dialled))
        if not text:
            raise DialplanError(404, "Not A Number")
        country, rest = self._split_prefix(text)
        if not rest:
            # Only a prefix was dialled: the number is still to come.
            raise DialplanError(484, "Address Incomplete")
        number = country + rest
        if number[0] == "0":
            raise DialplanError(404, "Not A Number", "no country code starts with 0")
        if len(number) > MAX_E164_DIGITS:
            raise DialplanError(404, "Number Too Long")
        if self._national_prefix and number.startswith(self._country_code + self._national_prefix):
            raise DialplanError(404, "Not A Number", "national prefix after the country code")
        return "+" + number

    def _split_prefix(self, text: str) -> tuple[str, str]:
        """(country code to add, digits that follow) for the rules 3 to 6."""
        if text.startswith("+"):
            return "", text[1:]
        if text.startswith(self._international_prefix):
            return "", text[len(self._international_prefix) :]
        if self._national_prefix and text.startswith(self._national_prefix):
            return self._country_code, text[len(self._national_prefix) :]
        return self._country_code, text

    def classify(self, dialled: str, *, is_user: Callable[[str], bool]) -> Destination:
        """Where ``dialled`` leads: a local user when ``is_user(dialled)``, else its
        E.164 number, kind and trunk. Raises :class:`DialplanError` for non-numbers."""
        if is_user(dialled):
            return Destination(
                dialled=dialled, e164=None, kind="internal", user=dialled, trunk=None
            )
        e164 = self.normalise(dialled)
        return Destination(
            dialled=dialled, e164=e164, kind=self._kind(e164), user=None, trunk=self._route(e164)
        )

    def _kind(self, e164: str) -> ClassOfService:
        # Premium first: a premium range inside our own country (UK 09) is premium.
        if any(e164[:n] in self._premium for n in range(2, len(e164) + 1)):
            return "premium-rate"
        if e164.startswith("+" + self._country_code):
            return "national"
        return "international"

    def _route(self, e164: str) -> str | None:
        # Longest prefix first; at most MAX_E164_DIGITS + 1 look-ups whatever the table.
        for n in range(len(e164), 0, -1):
            trunk = self._routes.get(e164[:n])
            if trunk is not None:
                return trunk
        return None

    def national_route(self, digits: str) -> str | None:
        """The trunk of ``+<country code><digits>`` (longest prefix), without the
        normalisation rules: an emergency number such as "000" is no valid national
        number, yet the trunk that takes this country's calls is where it goes."""
        return self._route(f"+{self._country_code}{digits}")

    def inbound_user(self, dialled: str) -> str | None:
        """The user a call from a trunk to ``dialled`` is for, ``None`` when it is not
        one of our DIDs or not a number at all (the caller answers 404).

        The number is normalised like a dialled one; when that finds no DID and the
        string is all digits, it is also tried as E.164 without its ``+``
        (``"442071234567"``), the form many carriers send.
        """
        try:
            user = self._dids.get(self.normalise(dialled))
        except DialplanError:
            return None
        if user is None:
            digits = dialled.translate(_SEPARATORS)
            if _DIGITS.fullmatch(digits) is not None:
                user = self._dids.get("+" + digits)
        return user


def _plain_number(text: str) -> str:
    """``text`` without its notation: ``+`` (if any) and ASCII digits (normalisation
    rules 3 and 4). Raises :class:`DialplanError` for any other character, a misplaced
    ``+``, unpaired or nested parentheses and a trunk prefix that cannot be placed."""
    out: list[str] = []
    group: list[str] | None = None  # the digits of an open "(" group
    dropped = False  # a "(0)" was dropped: a second one is not a notation
    for ch in text:
        if ch in _ASCII_DIGITS:
            (out if group is None else group).append(ch)
        elif ch in _PLAIN_SEPARATORS:
            continue
        elif ch == "+":
            if out or group is not None:
                raise _malformed("'+' after the start")
            out.append(ch)
        elif ch == "(":
            if group is not None:
                raise _malformed("nested '('")
            group = []
        elif ch == ")":
            if group is None:
                raise _malformed("')' without '('")
            digits = _group_digits(out, group, dropped=dropped)
            if group and not digits:
                dropped = True
            out += digits
            group = None
        else:
            raise DialplanError(404, "Not A Number", "not a telephone number")
    if group is not None:
        raise _malformed("'(' not closed")
    return "".join(out)


def _group_digits(before: list[str], group: list[str], *, dropped: bool) -> list[str]:
    """The digits a parenthesised group adds (rule 4): none for the E.123 "(0)" right
    after a ``+`` number's country code, its own digits when they are not a trunk
    prefix; a trunk prefix anywhere else (or a second one) is refused."""
    if not before or before[0] != "+" or not group or group[0] != "0":
        return group
    if group == ["0"] and not dropped and 1 <= len(before) - 1 <= _MAX_COUNTRY_CODE_DIGITS:
        return []
    raise _malformed("trunk prefix inside an international number")


def _malformed(detail: str) -> DialplanError:
    return DialplanError(404, "Not A Number", f"malformed number: {detail}")


def _check(what: str, value: str, pattern: re.Pattern[str]) -> None:
    if pattern.fullmatch(value) is None:
        raise DialplanConfigError(f"{what} {value!r} does not match {pattern.pattern}")


def _route_table(trunk_prefixes: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Prefix to trunk name; a prefix two trunks share goes to the first configured."""
    routes: dict[str, str] = {}
    for trunk, prefixes in trunk_prefixes.items():
        for prefix in prefixes:
            _check(f"trunk {trunk!r} prefix", prefix, _TRUNK_PREFIX)
            routes.setdefault(prefix, trunk)
    return routes


def _merge_dids(
    trunks: Iterable[tuple[str, Mapping[str, str]]],
) -> dict[str, str]:
    """All trunks' DIDs in one map; the same DID for two different users is an error
    (which user a call is for must not depend on trunk order)."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for trunk, dids in trunks:
        for did, user in dids.items():
            if did in merged and merged[did] != user:
                raise DialplanConfigError(
                    f"DID {did} is {merged[did]!r} on trunk {owner[did]!r} "
                    f"but {user!r} on trunk {trunk!r}"
                )
            merged.setdefault(did, user)
            owner.setdefault(did, trunk)
    return merged


def allows(user_class: ClassOfService, kind: CallKind) -> bool:
    """Whether a user of ``user_class`` may call a destination of ``kind``: each class
    allows itself and the classes before it; every class, even one we do not know,
    allows an emergency call (a safety rule, issue 18). An unknown class or kind
    allows nothing else."""
    if kind == EMERGENCY:
        return True
    user_rank = _rank(user_class)
    kind_rank = _rank(kind)
    return user_rank is not None and kind_rank is not None and kind_rank <= user_rank


def refusal_reason(user_class: ClassOfService, destination: Destination) -> str | None:
    """``None`` when ``user_class`` may call ``destination``, else a short reason for
    the 403's reason phrase or Warning (RFC 3261 §20.43), e.g.
    ``"international calls not allowed for class national"``."""
    if allows(user_class, destination.kind):
        return None
    if _rank(user_class) is None:
        return f"unknown class of service {user_class!r}"
    return f"{destination.kind} calls not allowed for class {user_class}"


def _rank(name: str) -> int | None:
    try:
        return CLASSES_OF_SERVICE.index(name)
    except ValueError:
        return None
