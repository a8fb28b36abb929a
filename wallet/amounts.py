"""Exact conversion between decimal DRL text and integer base units.

People type and read amounts as decimal DRL (``1.5``); the chain counts integer base units
(1 DRL = 10^9 base units). The conversion is string arithmetic on ASCII digits only, so no
float ever rounds an amount, and anything that is not a plain decimal -- an exponent, a sign,
a thousands separator, a non-ASCII digit, a tenth decimal place -- is refused rather than
guessed at.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from derelayl_chain.exceptions import InvalidAmount
from derelayl_chain.transaction import MAX_AMOUNT

BASE_UNITS_PER_DRL = 10**9
"""The protocol's unit: base units in one DRL."""
DECIMALS = 9
"""Decimal places of one base unit."""
MAX_UNITS = MAX_AMOUNT
"""Largest amount or fee a transaction can carry, in base units."""
MAX_AMOUNT_TEXT = 64
"""Longer input is refused before any parsing: no amount needs more characters."""

_DRL_PATTERN = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?", re.ASCII)
_UNITS_PATTERN = re.compile(r"0|[1-9][0-9]*", re.ASCII)


def parse_drl(
    text: str, *, what: str = "amount", allow_zero: bool = False, maximum: int = MAX_UNITS
) -> int:
    """The base units of a decimal DRL string such as ``1.5``; raise InvalidAmount otherwise.

    Surrounding whitespace is ignored. ``allow_zero`` admits ``0`` (fees may be zero on a
    network that sets no minimum); amounts are always positive.
    """
    if not isinstance(text, str):
        raise InvalidAmount(f"{what} must be text, got {type(text).__name__}")
    stripped = text.strip()
    shown = _show(stripped)
    if not stripped:
        raise InvalidAmount(f"{what} is empty")
    if len(stripped) > MAX_AMOUNT_TEXT:
        raise InvalidAmount(f"{what} {shown} is longer than {MAX_AMOUNT_TEXT} characters")
    if stripped.startswith("-"):
        sign_rule = "must not be negative" if allow_zero else "must be positive"
        raise InvalidAmount(f"{what} {shown} {sign_rule}")
    match = _DRL_PATTERN.fullmatch(stripped)
    if match is None:
        raise InvalidAmount(f"{what} {shown} is not a decimal number of DRL (like 1.5)")
    fraction = match.group("fraction") or ""
    if len(fraction) > DECIMALS:
        raise InvalidAmount(
            f"{what} {shown} has more than {DECIMALS} decimal places "
            f"(the smallest unit is {format_drl(1)} DRL)"
        )
    units = int(match.group("whole")) * BASE_UNITS_PER_DRL + int(fraction.ljust(DECIMALS, "0"))
    if units == 0 and not allow_zero:
        raise InvalidAmount(f"{what} {shown} must be positive")
    if units > maximum:
        raise InvalidAmount(f"{what} {shown} exceeds the maximum of {format_drl(maximum)} DRL")
    return units


def format_drl(units: int) -> str:
    """Decimal DRL text of an integer number of base units, without trailing zeros."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise InvalidAmount(f"base units must be an integer, got {type(units).__name__}")
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), BASE_UNITS_PER_DRL)
    digits = f"{fraction:0{DECIMALS}d}".rstrip("0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def parse_units(value: object, *, what: str = "amount") -> int:
    """The integer of a base-unit amount as the node's API writes it: a decimal string.

    A JSON integer is accepted too; a float, a boolean, a sign or leading zeros are not.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidAmount(f"{what} {value} is negative")
        return value
    if not isinstance(value, str):
        raise InvalidAmount(f"{what} must be a decimal string, got {type(value).__name__}")
    if len(value) > MAX_AMOUNT_TEXT or not _UNITS_PATTERN.fullmatch(value):
        raise InvalidAmount(f"{what} {_show(value)} is not a decimal string of base units")
    return int(value)


def _show(text: str) -> str:
    """The offending text, quoted and cut short, so a message stays one readable line."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


# --- amounts in JSON output ---------------------------------------------------------------------

AMOUNT_KEYS = frozenset(
    {"amount", "fee", "fees", "emission", "royalty", "royalties", "reward", "balance", "total"}
)
"""Fields of node answers that hold base units; JSON output adds a ``<name>_drl`` twin."""


def units_json(name: str, units: int) -> dict[str, str]:
    """``{name: base units, name_drl: DRL}``, both decimal strings."""
    return {name: str(units), f"{name}_drl": format_drl(units)}


def annotate_amounts(value: Any) -> Any:
    """A copy of a node answer where each amount field gets a ``<name>_drl`` twin."""
    if isinstance(value, list):
        return [annotate_amounts(item) for item in value]
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for key, item in value.items():
        result[key] = annotate_amounts(item)
        if key in AMOUNT_KEYS and f"{key}_drl" not in value:
            with contextlib.suppress(InvalidAmount):
                result[f"{key}_drl"] = format_drl(parse_units(item))
    return result


def format_ratio(numerator: int, denominator: int, places: int = 9) -> str:
    """``numerator / denominator`` as exact decimal text rounded down to ``places`` digits."""
    scaled = numerator * 10**places // denominator
    whole, fraction = divmod(scaled, 10**places)
    digits = f"{fraction:0{places}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)
