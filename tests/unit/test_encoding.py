"""Tests for the canonical encoding (derelayl_chain/encoding.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.encoding import (
    HASH_SIZE,
    MAX_NESTING,
    Item,
    as_bytes,
    as_items,
    as_list,
    as_uint,
    decode,
    encode,
    encode_list_payload,
    encode_uint,
    encode_uints,
    hash_domain,
)
from derelayl_chain.exceptions import DecodeError, SizeLimitExceeded

LIMIT = 1 << 20

items: st.SearchStrategy[Item] = st.recursive(
    st.binary(max_size=80),
    lambda children: st.lists(children, max_size=6),
    max_leaves=25,
)
"""Random items: byte strings (short and long forms) nested in lists."""

SAMPLES: list[Item] = [
    b"",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"x" * 55,
    b"y" * 56,
    b"z" * 300,
    [],
    [b"cat", b"dog"],
    [[], [[]], [[], [[]]]],
    [b"a" * 60, [b"", b"\x01", [b"b" * 56]]],
]
"""Valid items covering every prefix range, used where a test walks every byte position."""


def nested(depth: int) -> Item:
    """``depth`` lists nested in each other around an empty byte string."""
    item: Item = b""
    for _ in range(depth):
        item = [item]
    return item


# --- canonical forms ---------------------------------------------------------------------------


def test_short_byte_strings_match_the_rlp_reference_encodings() -> None:
    """Empty, single-byte and short strings and lists encode as RLP defines them."""
    assert encode(b"") == b"\x80"
    assert encode(b"\x00") == b"\x00"
    assert encode(b"\x7f") == b"\x7f"
    assert encode(b"\x80") == b"\x81\x80"
    assert encode(b"dog") == b"\x83dog"
    assert encode([]) == b"\xc0"
    assert encode([b"cat", b"dog"]) == b"\xc8\x83cat\x83dog"


def test_length_56_switches_to_the_long_form() -> None:
    """55 bytes take a one-byte prefix; 56 bytes take 0xb8 followed by the length."""
    assert encode(b"a" * 55)[:1] == bytes([0x80 + 55])
    assert encode(b"a" * 56)[:2] == b"\xb8\x38"
    assert encode([b"a" * 54])[:1] == bytes([0xC0 + 55])
    assert encode([b"a" * 55])[:2] == b"\xf8\x38"


def test_encode_accepts_bytearray_memoryview_and_tuple_like_bytes_and_list() -> None:
    """Other byte and sequence types encode exactly as bytes and lists do."""
    assert encode(bytearray(b"abc")) == encode(b"abc")
    assert encode(memoryview(b"x" * 70)) == encode(b"x" * 70)
    assert encode((b"a", (b"b",))) == encode([b"a", [b"b"]])  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [5, "text", None, 1.5, {b"a": b"b"}])
def test_encode_rejects_values_that_are_not_items(value: object) -> None:
    """Integers, text, floats and maps must be converted explicitly; encode refuses them."""
    with pytest.raises(TypeError, match="cannot encode"):
        encode(value)  # type: ignore[arg-type]


def test_single_byte_below_0x80_with_a_prefix_is_rejected() -> None:
    """0x81 0x05 is a second spelling of 0x05 and must not decode."""
    with pytest.raises(DecodeError, match="must be encoded bare"):
        decode(b"\x81\x05", LIMIT)


def test_long_length_form_for_a_short_string_is_rejected() -> None:
    """A 5-byte string written with the long form (0xb8 0x05) is non-canonical."""
    with pytest.raises(DecodeError, match="long length form used for short length 5"):
        decode(b"\xb8\x05hello", LIMIT)


def test_long_length_form_for_a_short_list_is_rejected() -> None:
    """A 2-byte list payload written with the long form (0xf8 0x02) is non-canonical."""
    with pytest.raises(DecodeError, match="long length form used for short length 2"):
        decode(b"\xf8\x02\x01\x02", LIMIT)


def test_length_with_a_leading_zero_byte_is_rejected() -> None:
    """0xb9 0x00 0x38 spells length 56 with two bytes; only 0xb8 0x38 is accepted."""
    with pytest.raises(DecodeError, match="leading zero"):
        decode(b"\xb9\x00\x38" + b"a" * 56, LIMIT)


def test_trailing_bytes_after_the_item_are_rejected() -> None:
    """One item per input: anything after it is an error that counts the extra bytes."""
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        decode(encode([b"a"]) + b"\x00\x00", LIMIT)


def test_empty_input_is_rejected() -> None:
    """No bytes is not an item."""
    with pytest.raises(DecodeError, match="truncated input"):
        decode(b"", LIMIT)


@pytest.mark.parametrize("item", SAMPLES, ids=range(len(SAMPLES)))
def test_truncation_at_every_position_is_rejected(item: Item) -> None:
    """Every proper prefix of a valid encoding fails with DecodeError, never another error."""
    data = encode(item)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut], LIMIT)


def test_claimed_length_beyond_the_input_is_truncation_not_allocation() -> None:
    """An 8-byte length claiming 2**63 bytes is reported as truncated, cheaply."""
    with pytest.raises(DecodeError, match="truncated byte string"):
        decode(b"\xbf\x7f" + b"\xff" * 7 + b"abc", LIMIT)
    with pytest.raises(DecodeError, match="truncated list"):
        decode(b"\xff\x7f" + b"\xff" * 7 + b"abc", LIMIT)


def test_nesting_up_to_the_limit_decodes() -> None:
    """MAX_NESTING levels of lists are accepted."""
    assert decode(encode(nested(MAX_NESTING)), LIMIT) == nested(MAX_NESTING)


def test_nesting_beyond_the_limit_is_rejected() -> None:
    """One more level than MAX_NESTING is refused with a message naming the limit."""
    with pytest.raises(DecodeError, match=f"nested deeper than {MAX_NESTING}"):
        decode(encode(nested(MAX_NESTING + 1)), LIMIT)


def test_deep_nesting_attack_is_a_decode_error_not_a_recursion_error() -> None:
    """Ten thousand opening list prefixes fail on the nesting limit, not the Python stack."""
    with pytest.raises(DecodeError):
        decode(b"\xc1" * 10_000 + b"\x80", LIMIT)


def test_size_limit_is_checked_before_parsing() -> None:
    """Oversized input raises SizeLimitExceeded even when it is also malformed."""
    with pytest.raises(SizeLimitExceeded, match="101 bytes exceeds the limit of 100"):
        decode(b"\xff" * 101, 100)


def test_input_exactly_at_the_size_limit_is_accepted() -> None:
    """The limit is inclusive."""
    data = encode(b"a" * 98)
    assert len(data) == 100
    assert decode(data, 100) == b"a" * 98


@pytest.mark.parametrize("value", ["\x80", None, 17, [b"a"]])
def test_decode_of_a_non_bytes_value_is_a_decode_error(value: object) -> None:
    """Text, None, integers and lists are not input bytes."""
    with pytest.raises(DecodeError, match="expected bytes"):
        decode(value, LIMIT)  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    """Buffers from sockets and files decode like bytes, into bytes."""
    data = encode([b"abc", b"d" * 60])
    assert decode(bytearray(data), LIMIT) == [b"abc", b"d" * 60]
    assert decode(memoryview(data), LIMIT) == [b"abc", b"d" * 60]


# --- typed accessors ---------------------------------------------------------------------------


def test_as_uint_reads_minimal_big_endian() -> None:
    """Zero is the empty string; other values are big-endian without leading zeros."""
    assert as_uint(b"") == 0
    assert as_uint(b"\x01\x00") == 256
    assert as_uint(b"\xff" * 8) == 2**64 - 1


def test_as_uint_rejects_a_leading_zero_byte() -> None:
    """b'\\x00\\x01' is a second spelling of 1, and b'\\x00' of 0."""
    with pytest.raises(DecodeError, match="nonce has a leading zero"):
        as_uint(b"\x00\x01", "nonce")
    with pytest.raises(DecodeError, match="leading zero"):
        as_uint(b"\x00")


def test_as_uint_rejects_values_longer_than_the_field() -> None:
    """Nine bytes do not fit an 8-byte field; the message names the field."""
    with pytest.raises(DecodeError, match="fee is 9 bytes long, more than 8"):
        as_uint(b"\x01" * 9, "fee")


def test_as_uint_rejects_a_list() -> None:
    """An integer field holding a list is a type error in the input."""
    with pytest.raises(DecodeError, match="height must be an integer"):
        as_uint([], "height")


def test_as_bytes_checks_type_exact_length_and_maximum() -> None:
    """Hash fields have an exact length; other fields may have a maximum."""
    assert as_bytes(b"abc", 3) == b"abc"
    with pytest.raises(DecodeError, match="parent must be a byte string"):
        as_bytes([b"a"], what="parent")
    with pytest.raises(DecodeError, match="parent must be 32 bytes, got 31"):
        as_bytes(b"a" * 31, HASH_SIZE, "parent")
    with pytest.raises(DecodeError, match="delta is 5 bytes, more than 4"):
        as_bytes(b"a" * 5, what="delta", max_len=4)


def test_as_list_and_as_items_check_type_and_count() -> None:
    """Objects are lists of a fixed field count; collections have a maximum count."""
    assert as_list([b"a", b"b"], 2) == [b"a", b"b"]
    with pytest.raises(DecodeError, match="header must be a list"):
        as_list(b"ab", what="header")
    with pytest.raises(DecodeError, match="header must have 3 fields, got 2"):
        as_list([b"a", b"b"], 3, "header")
    with pytest.raises(DecodeError, match="txs has 3 elements, more than 2"):
        as_items([b"", b"", b""], 2, "txs")


def test_encode_uint_rejects_negative_values() -> None:
    """Negative integers have no encoding; the encoder refuses instead of wrapping."""
    with pytest.raises(ValueError, match="negative"):
        encode_uint(-1)


@given(st.integers(min_value=0, max_value=2**256))
def test_encode_uint_round_trips_through_as_uint(value: int) -> None:
    """Every unsigned integer survives encode_uint then as_uint unchanged."""
    assert as_uint(encode_uint(value), max_bytes=33) == value


@given(st.lists(st.integers(min_value=0, max_value=2**200), max_size=8))
def test_encode_uints_matches_the_general_encoder(values: list[int]) -> None:
    """The fast integer-list encoder produces exactly the general encoder's bytes."""
    assert encode_uints(values) == encode([encode_uint(v) for v in values])


def test_encode_uints_refuses_negative_values() -> None:
    """The fast path must not turn a negative integer into bytes."""
    with pytest.raises(ValueError, match="negative"):
        encode_uints([1, -1])


@given(st.lists(st.binary(max_size=70), max_size=5))
def test_encode_list_payload_matches_encoding_a_list(children: list[bytes]) -> None:
    """Prefixing an encoded payload gives the same bytes as encoding the list."""
    payload = b"".join(encode(child) for child in children)
    assert encode_list_payload(payload) == encode(list(children))  # type: ignore[arg-type]


# --- hashing -----------------------------------------------------------------------------------


def test_hash_domain_separates_domains() -> None:
    """The same bytes hashed under two domains give two unrelated 32-byte digests."""
    first = hash_domain(b"drl-txid", b"data")
    second = hash_domain(b"drl-header", b"data")
    assert len(first) == len(second) == HASH_SIZE
    assert first != second
    assert hash_domain(b"drl-txid", b"data") == first


# --- properties --------------------------------------------------------------------------------


@given(items)
def test_decode_inverts_encode(item: Item) -> None:
    """Any item survives an encode/decode round trip."""
    assert decode(encode(item), LIMIT) == item


@given(items, items)
def test_distinct_items_have_distinct_encodings(first: Item, second: Item) -> None:
    """The encoding is injective: two different items never share bytes."""
    if first != second:
        assert encode(first) != encode(second)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    """Arbitrary input either decodes or raises DecodeError; nothing else escapes."""
    with contextlib.suppress(DecodeError):
        decode(data, 150)


@given(st.binary(max_size=200))
def test_every_accepted_input_is_the_canonical_encoding_of_its_item(data: bytes) -> None:
    """Re-encoding whatever decodes gives back the input: one byte string per item."""
    try:
        item = decode(data, LIMIT)
    except DecodeError:
        return
    assert encode(item) == data


@given(items, st.data())
def test_a_mutated_encoding_never_decodes_to_the_same_item(item: Item, data: st.DataObject) -> None:
    """Changing one byte of a valid encoding is rejected or yields a different item."""
    encoded = bytearray(encode(item))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    try:
        mutated = decode(bytes(encoded), LIMIT)
    except DecodeError:
        return
    assert mutated != item
