"""Tests for transactions (derelayl_chain/transaction.py)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derelayl_chain.crypto import KeyPair
from derelayl_chain.encoding import Item, decode, encode, encode_uint
from derelayl_chain.exceptions import (
    DecodeError,
    InvalidSignature,
    InvalidTransaction,
    SizeLimitExceeded,
)
from derelayl_chain.transaction import (
    MAX_AMOUNT,
    MAX_TX_BYTES,
    Access,
    Transaction,
    Transfer,
    TxKind,
    decode_transaction,
    make_access,
    make_transfer,
    txid_of,
    verify_transaction,
)

CHAIN = 7
KEY = KeyPair.from_seed(b"\x11" * 32)
OTHER = KeyPair.from_seed(b"\x22" * 32)
TRANSFER = make_transfer(KEY, CHAIN, 3, OTHER.account, 5 * 10**9, 1000)
ACCESS = make_access(KEY, CHAIN, 4, 10**9, 2000)


def item_of(tx: Transaction) -> list[Item]:
    """The decoded item of a transaction's encoding, for building malformed variants."""
    item = decode(tx.encode(), MAX_TX_BYTES)
    assert isinstance(item, list)
    return item


def decode_item(item: Item) -> Transaction:
    """Encode ``item`` and decode it as a transaction."""
    return decode_transaction(encode(item))


def resigned(tx: Transaction, **changes: object) -> Transaction:
    """A copy of ``tx`` with ``changes``, re-signed by KEY when its fields still encode."""
    return replace(tx, **changes).signed(KEY)  # type: ignore[arg-type]


# --- round trips and ids -----------------------------------------------------------------------


@pytest.mark.parametrize("tx", [TRANSFER, ACCESS], ids=["transfer", "access"])
def test_encode_decode_round_trip(tx: Transaction) -> None:
    """Both kinds decode back to an equal transaction that re-encodes to the same bytes."""
    decoded = decode_transaction(tx.encode())
    assert decoded == tx
    assert decoded.encode() == tx.encode()
    assert decoded.kind == tx.kind


def test_kinds_are_numbered_in_the_encoding() -> None:
    """The kind number is field 1 of the encoding: 1 for transfer, 2 for access."""
    assert item_of(TRANSFER)[1] == encode_uint(TxKind.TRANSFER) == b"\x01"
    assert item_of(ACCESS)[1] == encode_uint(TxKind.ACCESS) == b"\x02"


def test_txid_is_stable_and_is_the_hash_of_the_encoding() -> None:
    """The id is the same before and after a round trip and equals txid_of(encoding)."""
    decoded = decode_transaction(TRANSFER.encode())
    assert TRANSFER.txid == decoded.txid == txid_of(TRANSFER.encode())
    assert len(TRANSFER.txid) == 32
    assert TRANSFER.txid != ACCESS.txid


@pytest.mark.parametrize(
    "changes",
    [{"chain_id": CHAIN + 1}, {"nonce": 4}, {"fee": 1001}, {"payload": Transfer(b"\x00" * 20, 1)}],
    ids=["chain", "nonce", "fee", "payload"],
)
def test_txid_changes_with_every_field(changes: dict[str, object]) -> None:
    """Any changed field gives another id (and another signature)."""
    changed = resigned(TRANSFER, **changes)
    assert changed.txid != TRANSFER.txid
    assert changed.signature != TRANSFER.signature


def test_signing_bytes_are_domain_tagged_and_exclude_the_signature() -> None:
    """The signed message starts with the domain tag and does not depend on the signature."""
    message = TRANSFER.signing_bytes()
    assert message.startswith(b"DRL-TX-SIGN\x00")
    assert replace(TRANSFER, signature=b"").signing_bytes() == message
    assert TRANSFER.signature not in message


@settings(max_examples=40, deadline=None)
@given(
    chain=st.integers(0, 2**64 - 1),
    nonce=st.integers(0, 2**64 - 1),
    fee=st.integers(0, MAX_AMOUNT),
    amount=st.integers(1, MAX_AMOUNT),
    access=st.booleans(),
)
def test_decoded_transaction_signs_the_same_bytes_as_a_built_one(
    chain: int, nonce: int, fee: int, amount: int, access: bool
) -> None:
    """A decoded transaction's signing bytes, encoding and id equal those of a fresh copy."""
    payload = Access(amount) if access else Transfer(OTHER.account, amount)
    built = Transaction(chain, KEY.public_key, nonce, fee, payload).signed(KEY)
    decoded = decode_transaction(built.encode())
    rebuilt = replace(decoded)
    assert decoded.signing_bytes() == rebuilt.signing_bytes() == built.signing_bytes()
    assert decoded.encode() == rebuilt.encode() == built.encode()
    assert decoded.txid == built.txid
    verify_transaction(decoded, chain)


def test_a_modified_copy_of_a_decoded_transaction_is_re_encoded() -> None:
    """replace() on a decoded transaction encodes the new fields, never the old bytes."""
    decoded = decode_transaction(TRANSFER.encode())
    raised = replace(decoded, fee=decoded.fee + 1)
    assert raised.encode() != TRANSFER.encode()
    assert raised.signing_bytes() != TRANSFER.signing_bytes()
    with pytest.raises(InvalidSignature):
        verify_transaction(raised, CHAIN)


# --- malformed encodings -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [0, 3, 255, 65535])
def test_unknown_kind_is_a_decode_error_naming_the_number(kind: int) -> None:
    """A kind number this version does not know is refused, quoting the number."""
    item = item_of(TRANSFER)
    item[1] = encode_uint(kind)
    with pytest.raises(DecodeError, match=f"unknown transaction kind {kind}"):
        decode_item(item)


def test_kind_number_longer_than_two_bytes_is_rejected() -> None:
    """The kind field is at most two bytes."""
    item = item_of(TRANSFER)
    item[1] = b"\x01\x00\x01"
    with pytest.raises(DecodeError, match="transaction kind is 3 bytes"):
        decode_item(item)


@pytest.mark.parametrize("count", [0, 6, 8])
def test_wrong_field_count_is_rejected(count: int) -> None:
    """A transaction has exactly 7 fields."""
    item = (item_of(TRANSFER) + [b""])[:count]
    with pytest.raises(DecodeError, match=f"transaction must have 7 fields, got {count}"):
        decode_item(item)


def test_transaction_that_is_a_byte_string_is_rejected() -> None:
    """The top-level item must be a list."""
    with pytest.raises(DecodeError, match="transaction must be a list"):
        decode_item(b"\x01\x02")


@pytest.mark.parametrize(
    ("tx", "fields", "message"),
    [
        (TRANSFER, [b"\x00" * 20], "transfer must have 2 fields, got 1"),
        (TRANSFER, [b"\x00" * 20, b"\x01", b""], "transfer must have 2 fields, got 3"),
        (ACCESS, [], "access must have 1 field, got 0"),
        (ACCESS, [b"\x01", b"\x01"], "access must have 1 field, got 2"),
    ],
)
def test_payload_with_wrong_field_count_is_rejected(
    tx: Transaction, fields: list[Item], message: str
) -> None:
    """Each kind's payload has its own fixed field count."""
    item = item_of(tx)
    item[5] = fields
    with pytest.raises(DecodeError, match=message):
        decode_item(item)


def test_payload_that_is_a_byte_string_is_rejected() -> None:
    """The kind-specific fields are a nested list."""
    item = item_of(ACCESS)
    item[5] = b"\x05"
    with pytest.raises(DecodeError, match="transaction payload must be a list"):
        decode_item(item)


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (2, b"\x01" * 31, "sender public key must be 32 bytes"),
        (2, [], "sender public key must be a byte string"),
        (3, b"\x00\x05", "nonce has a leading zero"),
        (3, b"\x01" * 9, "nonce is 9 bytes long"),
        (4, [b"\x01"], "fee must be an integer"),
        (0, b"\x00", "chain id has a leading zero"),
        (6, b"\x01" * 63, "signature must be 64 bytes"),
        (6, b"", "signature must be 64 bytes, got 0"),
    ],
)
def test_malformed_fields_are_rejected_with_the_field_named(
    index: int, value: Item, message: str
) -> None:
    """Wrong lengths, types and non-canonical integers are named in the error."""
    item = item_of(TRANSFER)
    item[index] = value
    with pytest.raises(DecodeError, match=message):
        decode_item(item)


@pytest.mark.parametrize(
    ("value", "message"),
    [(b"\x01" * 19, "transfer recipient must be 20 bytes"), (b"", "recipient must be 20")],
)
def test_malformed_recipient_is_rejected(value: bytes, message: str) -> None:
    """The recipient is a 20-byte account id."""
    item = item_of(TRANSFER)
    item[5] = [value, b"\x05"]
    with pytest.raises(DecodeError, match=message):
        decode_item(item)


def test_amount_longer_than_eight_bytes_is_a_decode_error() -> None:
    """Amounts are 8-byte fields; a ninth byte is refused before any arithmetic."""
    item = item_of(ACCESS)
    item[5] = [b"\x01" * 9]
    with pytest.raises(DecodeError, match="access amount is 9 bytes long"):
        decode_item(item)


def test_oversized_transaction_is_rejected_before_parsing() -> None:
    """More than MAX_TX_BYTES raises SizeLimitExceeded, whatever the content."""
    padded = encode([b"x" * MAX_TX_BYTES])
    with pytest.raises(SizeLimitExceeded, match=f"exceeds the limit of {MAX_TX_BYTES}"):
        decode_transaction(padded)


def test_trailing_byte_after_a_transaction_is_rejected() -> None:
    """A valid transaction followed by one byte is not a transaction."""
    with pytest.raises(DecodeError, match="trailing"):
        decode_transaction(TRANSFER.encode() + b"\x00")


def test_every_truncation_of_a_transaction_is_a_decode_error() -> None:
    """No prefix of a valid encoding decodes, and none raises anything but DecodeError."""
    data = TRANSFER.encode()
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_transaction(data[:cut])


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    """Untrusted input decodes or raises DecodeError; no other exception escapes."""
    with contextlib.suppress(DecodeError):
        decode_transaction(data)


@given(st.data())
def test_random_field_values_raise_only_decode_error(data: st.DataObject) -> None:
    """A well-formed list with random field contents decodes or raises DecodeError."""
    item = item_of(TRANSFER if data.draw(st.booleans()) else ACCESS)
    index = data.draw(st.integers(0, 6))
    leaf = st.binary(max_size=70)
    item[index] = data.draw(st.one_of(leaf, st.lists(leaf, max_size=3)))
    with contextlib.suppress(DecodeError):
        decode_item(item)


# --- stateless validity ------------------------------------------------------------------------


@pytest.mark.parametrize("tx", [TRANSFER, ACCESS], ids=["transfer", "access"])
def test_valid_transactions_verify(tx: Transaction) -> None:
    """A correctly signed transaction for this chain passes the stateless checks."""
    verify_transaction(decode_transaction(tx.encode()), CHAIN)


def test_wrong_chain_id_is_rejected_naming_both_chains() -> None:
    """A transaction for another network is refused before its signature is checked."""
    with pytest.raises(InvalidTransaction, match=f"for chain {CHAIN}, this is chain 8"):
        verify_transaction(TRANSFER, 8)


def test_zero_amount_is_rejected() -> None:
    """A transfer or access of nothing is refused."""
    for tx in (
        resigned(TRANSFER, payload=Transfer(OTHER.account, 0)),
        resigned(ACCESS, payload=Access(0)),
    ):
        with pytest.raises(InvalidTransaction, match="amount must be positive, got 0"):
            verify_transaction(tx, CHAIN)


def test_amount_above_the_maximum_is_rejected() -> None:
    """An amount that fits 8 bytes but exceeds MAX_AMOUNT is refused."""
    tx = resigned(TRANSFER, payload=Transfer(OTHER.account, MAX_AMOUNT + 1))
    assert decode_transaction(tx.encode()) == tx
    with pytest.raises(InvalidTransaction, match=f"exceeds {MAX_AMOUNT}"):
        verify_transaction(tx, CHAIN)


def test_amount_at_the_maximum_is_accepted() -> None:
    """MAX_AMOUNT itself is a valid amount."""
    verify_transaction(resigned(ACCESS, payload=Access(MAX_AMOUNT)), CHAIN)


def test_fee_above_the_maximum_is_rejected() -> None:
    """Fees have the same ceiling as amounts."""
    with pytest.raises(InvalidTransaction, match=f"fee {MAX_AMOUNT + 1} exceeds"):
        verify_transaction(resigned(TRANSFER, fee=MAX_AMOUNT + 1), CHAIN)


def test_negative_amount_built_in_memory_is_rejected() -> None:
    """A negative amount (which has no encoding) is a rule violation, not a crash."""
    tx = replace(TRANSFER, payload=Transfer(OTHER.account, -5))
    with pytest.raises(InvalidTransaction, match="amount must be positive, got -5"):
        verify_transaction(tx, CHAIN)


def test_negative_fee_built_in_memory_is_rejected() -> None:
    """A negative fee is refused with the project's error before anything is encoded."""
    tx = replace(TRANSFER, fee=-1)
    with pytest.raises(InvalidTransaction, match="fee must not be negative, got -1"):
        verify_transaction(tx, CHAIN)


def test_flipped_signature_bits_in_the_encoding_are_rejected() -> None:
    """Flipping any bit of the signature on the wire gives InvalidSignature after decoding."""
    data = TRANSFER.encode()
    start = len(data) - 64
    for bit in range(0, 512, 7):
        mutated = bytearray(data)
        mutated[start + bit // 8] ^= 1 << (bit % 8)
        tx = decode_transaction(bytes(mutated))
        with pytest.raises(InvalidSignature):
            verify_transaction(tx, CHAIN)


def test_flipped_bits_in_the_signed_fields_are_rejected() -> None:
    """Flipping a bit in the nonce, fee, recipient or amount invalidates the signature."""
    for changes in (
        {"nonce": 2},
        {"fee": 1001},
        {"payload": Transfer(OTHER.account, 5 * 10**9 + 1)},
    ):
        with pytest.raises(InvalidSignature):
            verify_transaction(replace(TRANSFER, **changes), CHAIN)  # type: ignore[arg-type]


def test_signature_from_another_key_is_rejected() -> None:
    """Signing KEY's transaction with OTHER's key does not verify for KEY."""
    forged = replace(TRANSFER, signature=OTHER.sign(TRANSFER.signing_bytes()))
    with pytest.raises(InvalidSignature):
        verify_transaction(forged, CHAIN)


def test_claiming_another_sender_is_rejected() -> None:
    """Swapping in another sender key while keeping the signature fails verification."""
    with pytest.raises(InvalidSignature):
        verify_transaction(replace(TRANSFER, sender=OTHER.public_key), CHAIN)


def test_replay_on_another_chain_fails_verification() -> None:
    """Relabelling a transaction for chain 8 keeps a signature that only covers chain 7."""
    replayed = replace(TRANSFER, chain_id=8)
    with pytest.raises(InvalidSignature):
        verify_transaction(replayed, 8)


def test_unsigned_transaction_does_not_verify() -> None:
    """A transaction without a signature is refused as InvalidSignature."""
    with pytest.raises(InvalidSignature, match="malformed key or signature"):
        verify_transaction(replace(TRANSFER, signature=b""), CHAIN)


def test_signing_with_a_key_that_is_not_the_sender_is_refused() -> None:
    """signed() checks the key against the sender field instead of producing a bad signature."""
    with pytest.raises(ValueError, match="does not match"):
        replace(TRANSFER, signature=b"").signed(OTHER)


def test_sender_account_is_the_account_id_of_the_sender_key() -> None:
    """The sender's account is derived from the public key carried in the transaction."""
    assert TRANSFER.sender_account == KEY.account
    assert TRANSFER.amount == 5 * 10**9
    assert ACCESS.amount == 10**9
