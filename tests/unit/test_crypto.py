"""Tests for keys, signatures and addresses (derelayl_chain/crypto.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.crypto import (
    ACCOUNT_ID_SIZE,
    ADDRESS_LENGTH,
    ADDRESS_PREFIX,
    KeyPair,
    account_id,
    address_of,
    decode_address,
    encode_address,
    verify_signature,
)
from derelayl_chain.exceptions import InvalidAddress, InvalidSignature

KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))
MESSAGE = b"DRL-TX-SIGN\x00" + bytes(range(150))
SIGNATURE = KEY.sign(MESSAGE)
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit number ``bit`` (0 = lowest bit of the first byte) inverted."""
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# --- addresses ---------------------------------------------------------------------------------


@given(st.binary(min_size=ACCOUNT_ID_SIZE, max_size=ACCOUNT_ID_SIZE))
def test_address_round_trips_to_the_account_id(account: bytes) -> None:
    """decode_address inverts encode_address for every 20-byte id."""
    assert decode_address(encode_address(account)) == account


def test_address_has_prefix_fixed_length_and_lowercase_hex() -> None:
    """The text form is drl1 + 48 lowercase hex characters (id and checksum)."""
    address = KEY.address
    assert address.startswith(ADDRESS_PREFIX)
    assert len(address) == ADDRESS_LENGTH == 4 + 48
    assert address[4:] == address[4:].lower()
    assert address[4:44] == KEY.account.hex()


def test_address_of_a_key_is_the_address_of_its_account_id() -> None:
    """address_of, KeyPair.address and encode_address(account_id(...)) agree."""
    assert address_of(KEY.public_key) == KEY.address == encode_address(account_id(KEY.public_key))


def test_every_single_character_mutation_fails_the_checksum() -> None:
    """Each of the 48 hex positions, changed to each of the 15 other digits, is rejected."""
    address = KEY.address
    for position in range(len(ADDRESS_PREFIX), len(address)):
        for digit in "0123456789abcdef":
            if digit == address[position]:
                continue
            mutated = address[:position] + digit + address[position + 1 :]
            with pytest.raises(InvalidAddress, match="bad checksum"):
                decode_address(mutated)


def test_swapping_two_adjacent_characters_fails_the_checksum() -> None:
    """Transposed digits, the other common typo, are rejected too."""
    address = KEY.address
    for position in range(len(ADDRESS_PREFIX), len(address) - 1):
        a, b = address[position], address[position + 1]
        if a == b:
            continue
        swapped = address[:position] + b + a + address[position + 2 :]
        with pytest.raises(InvalidAddress, match="bad checksum"):
            decode_address(swapped)


@pytest.mark.parametrize("prefix", ["drl2", "DRL1", "drx1", "btc1", ""])
def test_wrong_prefix_is_rejected(prefix: str) -> None:
    """An address from another network or scheme is named as a prefix problem."""
    with pytest.raises(InvalidAddress, match="does not start with 'drl1'"):
        decode_address(prefix + KEY.address[4:])


@pytest.mark.parametrize("change", ["drop_last", "add_digit", "empty_body"])
def test_wrong_length_is_rejected(change: str) -> None:
    """Too short or too long addresses are refused with the expected length in the message."""
    address = {
        "drop_last": KEY.address[:-1],
        "add_digit": KEY.address + "0",
        "empty_body": ADDRESS_PREFIX,
    }[change]
    with pytest.raises(InvalidAddress, match=f"expected {ADDRESS_LENGTH}"):
        decode_address(address)


def test_uppercase_hex_is_rejected() -> None:
    """Only lowercase is canonical, so an uppercased body is refused even with a good checksum."""
    address = KEY.address
    with pytest.raises(InvalidAddress, match="lowercase hex"):
        decode_address(ADDRESS_PREFIX + address[4:].upper())


def test_non_hex_characters_are_rejected() -> None:
    """Letters outside a-f and non-ASCII digits are refused before any hex parsing."""
    address = KEY.address
    for bad in ("g", " ", "\u0663"):
        with pytest.raises(InvalidAddress, match="lowercase hex"):
            decode_address(address[:-1] + bad)


@pytest.mark.parametrize("value", [None, b"drl1", 42])
def test_non_string_address_is_rejected(value: object) -> None:
    """Bytes, numbers and None are not addresses."""
    with pytest.raises(InvalidAddress, match="must be a string"):
        decode_address(value)  # type: ignore[arg-type]


def test_encode_address_requires_a_20_byte_id() -> None:
    """A public key or hash passed by mistake is refused, not silently truncated."""
    with pytest.raises(InvalidAddress, match="20 bytes, got 32"):
        encode_address(KEY.public_key)


def test_account_ids_are_20_bytes_and_differ_per_key() -> None:
    """The account id is a 20-byte hash of the public key, distinct for distinct keys."""
    assert len(KEY.account) == ACCOUNT_ID_SIZE
    assert KEY.account != OTHER.account
    assert account_id(KEY.public_key) == KEY.account


# --- keys --------------------------------------------------------------------------------------


def test_key_pair_from_seed_is_deterministic() -> None:
    """The same seed always gives the same public key and signatures."""
    again = KeyPair.from_seed(bytes(range(32)))
    assert again.public_key == KEY.public_key
    assert again.sign(MESSAGE) == SIGNATURE


def test_seed_of_the_wrong_length_is_refused() -> None:
    """A 31-byte seed is a programming error, reported as such."""
    with pytest.raises(ValueError, match="seed must be 32 bytes"):
        KeyPair.from_seed(b"\x01" * 31)


def test_generated_keys_are_distinct() -> None:
    """Fresh keys come from the system's randomness."""
    assert KeyPair.generate().public_key != KeyPair.generate().public_key


def test_repr_shows_the_address_and_never_the_seed() -> None:
    """Logging a key pair must not leak its secret."""
    text = repr(KEY)
    assert KEY.address in text
    assert KEY.seed.hex() not in text
    assert repr(KEY.seed) not in text


# --- signatures --------------------------------------------------------------------------------


def test_signature_verifies_for_its_key_and_message() -> None:
    """A signature made by the key verifies for that key and message."""
    assert len(SIGNATURE) == 64
    verify_signature(KEY.public_key, MESSAGE, SIGNATURE)


def test_every_flipped_signature_bit_is_rejected() -> None:
    """Changing any one of the 512 signature bits makes verification fail."""
    for bit in range(512):
        with pytest.raises(InvalidSignature, match="does not verify"):
            verify_signature(KEY.public_key, MESSAGE, flip_bit(SIGNATURE, bit))


def test_flipped_message_bits_are_rejected() -> None:
    """Changing any bit of the message (every byte, low and high bit) fails verification."""
    for byte in range(len(MESSAGE)):
        for bit in (8 * byte, 8 * byte + 7):
            with pytest.raises(InvalidSignature):
                verify_signature(KEY.public_key, flip_bit(MESSAGE, bit), SIGNATURE)


def test_every_flipped_public_key_bit_is_rejected() -> None:
    """The signature does not verify for any key one bit away from the signer's."""
    for bit in range(256):
        with pytest.raises(InvalidSignature):
            verify_signature(flip_bit(KEY.public_key, bit), MESSAGE, SIGNATURE)


def test_signature_from_another_key_is_rejected() -> None:
    """A valid signature by a different key does not verify for this key."""
    with pytest.raises(InvalidSignature):
        verify_signature(KEY.public_key, MESSAGE, OTHER.sign(MESSAGE))


def test_non_canonical_signature_scalar_is_rejected() -> None:
    """S + L (the group order) is another spelling of S; it must not verify (no malleability)."""
    scalar = int.from_bytes(SIGNATURE[32:], "little") + ED25519_ORDER
    assert scalar < 2**256
    malleated = SIGNATURE[:32] + scalar.to_bytes(32, "little")
    with pytest.raises(InvalidSignature):
        verify_signature(KEY.public_key, MESSAGE, malleated)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [(b"\x01" * 31, SIGNATURE), (KEY.public_key, SIGNATURE[:63]), (b"", b"")],
    ids=["short key", "short signature", "empty"],
)
def test_malformed_key_or_signature_length_is_invalid_signature(
    public_key: bytes, signature: bytes
) -> None:
    """Wrong sizes are reported as InvalidSignature with both lengths, not a library error."""
    with pytest.raises(InvalidSignature, match="malformed key or signature"):
        verify_signature(public_key, MESSAGE, signature)


def test_all_zero_key_and_signature_are_rejected() -> None:
    """The identity point as a key with a zero signature must not verify every message."""
    with pytest.raises(InvalidSignature):
        verify_signature(bytes(32), MESSAGE, bytes(64))
