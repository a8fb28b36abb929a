"""Exact DRL <-> base-unit conversion (wallet/amounts.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.exceptions import InvalidAmount
from wallet.amounts import (
    BASE_UNITS_PER_DRL,
    MAX_UNITS,
    annotate_amounts,
    format_drl,
    format_ratio,
    parse_drl,
    parse_units,
    units_json,
)

units = st.integers(min_value=1, max_value=MAX_UNITS)


def assert_refused(text: object, match: str, **options: object) -> None:
    """parse_drl raises InvalidAmount with a one-line message matching ``match``."""
    with pytest.raises(InvalidAmount, match=match) as info:
        parse_drl(text, **options)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# --- parse_drl ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 10**9),
        ("1.5", 1_500_000_000),
        ("0.000000001", 1),
        ("0.1", 100_000_000),
        ("123.456789012", 123_456_789_012),
        ("007.50", 7_500_000_000),
        ("1.000000000", 10**9),
        ("21000000", 21_000_000 * 10**9),
    ],
)
def test_parse_is_exact(text: str, expected: int) -> None:
    """Decimal DRL text converts to the exact number of base units."""
    assert parse_drl(text) == expected


def test_one_drl_is_a_billion_base_units() -> None:
    """The unit is the protocol's: 1 DRL = 10^9 base units."""
    assert BASE_UNITS_PER_DRL == 10**9


def test_parse_avoids_float_rounding() -> None:
    """Amounts that a float cannot hold exactly still convert exactly."""
    assert parse_drl("0.3") == 300_000_000
    assert parse_drl("9007199254.740993001") == 9_007_199_254_740_993_001


@pytest.mark.parametrize("text", [" 1.5", "1.5 ", "\t1.5\n", "  1.5  "])
def test_parse_ignores_surrounding_whitespace(text: str) -> None:
    """Whitespace around the number (a pasted value, a line from a file) is ignored."""
    assert parse_drl(text) == 1_500_000_000


@pytest.mark.parametrize("text", ["0.0000000001", "1.0000000000", "1.1234567891"])
def test_parse_refuses_more_than_nine_decimals(text: str) -> None:
    """A tenth decimal place is refused, even a zero: the input is not what it seems."""
    assert_refused(text, "more than 9 decimal places")


@pytest.mark.parametrize("text", ["-1", "-0.5", "-0"])
def test_parse_refuses_negative_amounts(text: str) -> None:
    """A negative amount is refused as such."""
    assert_refused(text, "must be positive")


@pytest.mark.parametrize("text", ["0", "0.0", "0.000000000", "000"])
def test_parse_refuses_zero_amounts(text: str) -> None:
    """An amount must be positive."""
    assert_refused(text, "must be positive")


def test_parse_zero_fee_when_allowed() -> None:
    """A fee may be zero; a negative fee is still refused."""
    assert parse_drl("0", what="fee", allow_zero=True) == 0
    assert_refused("-1", "fee '-1' must not be negative", what="fee", allow_zero=True)


@pytest.mark.parametrize(
    "text",
    [
        "1e3",
        "1E3",
        "1e-3",
        "1.5e2",
        "inf",
        "Infinity",
        "nan",
        "NaN",
        "0x10",
        "1_000",
        "+1",
        "1,5",
        "1.",
        ".5",
        "1 000",
        "1.2.3",
        "one",
        "\u0661",
        "\uff11",
        "1\u00a0000",
    ],
)
def test_parse_refuses_anything_but_plain_decimals(text: str) -> None:
    """Exponents, signs, separators, special values and non-ASCII digits are refused."""
    assert_refused(text, "is not a decimal number of DRL")


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_parse_refuses_empty_text(text: str) -> None:
    """Empty input is refused with its own message."""
    assert_refused(text, "amount is empty")


def test_parse_accepts_the_maximum() -> None:
    """The largest amount a transaction can carry is accepted."""
    assert parse_drl(format_drl(MAX_UNITS)) == MAX_UNITS


def test_parse_refuses_beyond_the_maximum() -> None:
    """One base unit more than a transaction can carry is refused, naming the maximum."""
    assert_refused(format_drl(MAX_UNITS + 1), "exceeds the maximum of 9223372036.854775807 DRL")


def test_parse_refuses_huge_numbers() -> None:
    """Numbers far beyond the supply are refused without trouble."""
    assert_refused("9" * 60, "exceeds the maximum")
    assert_refused("1" + "0" * 30 + ".5", "exceeds the maximum")


def test_parse_refuses_overlong_text_before_parsing() -> None:
    """Text longer than any amount is refused before it is parsed, and not echoed in full."""
    with pytest.raises(InvalidAmount, match="longer than 64 characters") as info:
        parse_drl("1" * 10_000)
    assert len(str(info.value)) < 200


def test_parse_respects_a_lower_maximum() -> None:
    """A caller can cap amounts below the transaction maximum."""
    assert parse_drl("2", maximum=2 * 10**9) == 2 * 10**9
    assert_refused("2.000000001", "exceeds the maximum of 2 DRL", maximum=2 * 10**9)


@pytest.mark.parametrize("value", [1.5, 1, None, b"1"])
def test_parse_refuses_non_text(value: object) -> None:
    """Only text is parsed; a float never is."""
    assert_refused(value, "must be text")


def test_parse_names_what_is_wrong() -> None:
    """The message names the field and quotes the offending input."""
    assert_refused("1e3", "fee '1e3' is not", what="fee")


@given(units)
def test_format_then_parse_round_trips(value: int) -> None:
    """Every amount a transaction can carry survives formatting and parsing unchanged."""
    assert parse_drl(format_drl(value)) == value


# --- format_drl ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (1, "0.000000001"),
        (1_000, "0.000001"),
        (10**9, "1"),
        (1_500_000_000, "1.5"),
        (123_456_789_012, "123.456789012"),
        (-1_500_000_000, "-1.5"),
        (MAX_UNITS, "9223372036.854775807"),
    ],
)
def test_format_is_exact_without_trailing_zeros(value: int, expected: str) -> None:
    """Base units print as plain decimal DRL with no trailing zeros and no exponent."""
    assert format_drl(value) == expected


@pytest.mark.parametrize("value", [True, 1.5, "1"])
def test_format_refuses_non_integers(value: object) -> None:
    """Only integers are formatted: a float or bool is a bug upstream."""
    with pytest.raises(InvalidAmount):
        format_drl(value)  # type: ignore[arg-type]


# --- parse_units (node answers) -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("1500", 1500), (42, 42)])
def test_parse_units_reads_node_amounts(value: object, expected: int) -> None:
    """The node's decimal strings (or JSON integers) of base units are read exactly."""
    assert parse_units(value) == expected


@pytest.mark.parametrize("value", ["-1", "01", "1.5", "1e3", "", " 1", 1.5, True, None, -3])
def test_parse_units_refuses_malformed_values(value: object) -> None:
    """Signs, leading zeros, fractions, floats and booleans are not base units."""
    with pytest.raises(InvalidAmount):
        parse_units(value)


# --- JSON helpers -------------------------------------------------------------------------------


def test_units_json_gives_both_forms() -> None:
    """JSON output carries base units and DRL, both as decimal strings."""
    assert units_json("fee", 10_000) == {"fee": "10000", "fee_drl": "0.00001"}


def test_annotate_amounts_adds_drl_twins() -> None:
    """Amount fields of a node answer, nested or not, get a ``_drl`` twin; others do not."""
    answer = {
        "items": [{"amount": "1500000000", "height": 3}, {"fees": "1000", "kind": "fees"}],
        "totals": {"emission": 2_000_000_000},
        "amount": "garbage",
    }
    assert annotate_amounts(answer) == {
        "items": [
            {"amount": "1500000000", "amount_drl": "1.5", "height": 3},
            {"fees": "1000", "fees_drl": "0.000001", "kind": "fees"},
        ],
        "totals": {"emission": 2_000_000_000, "emission_drl": "2"},
        "amount": "garbage",
    }


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(1, 4, "0.25"), (1, 3, "0.333333333"), (2, 3, "0.666666666"), (5, 5, "1"), (0, 7, "0")],
)
def test_format_ratio_rounds_down_exactly(numerator: int, denominator: int, expected: str) -> None:
    """Shares of the model print as exact decimals rounded down, never through a float."""
    assert format_ratio(numerator, denominator) == expected
