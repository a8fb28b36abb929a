"""Tests for block headers, bodies and the transactions root (derelayl_chain/block.py).

The proof-of-learning rules that judge a block live in consensus.py and are tested there; this
file covers the encoding, the hash, the proposer's signature and the Merkle root.
"""

from __future__ import annotations

import contextlib
from dataclasses import fields, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.block import (
    BLOCK_VERSION,
    MAX_BLOCK_TXS,
    MAX_HEADER_BYTES,
    ZERO_HASH,
    Block,
    BlockHeader,
    decode_block,
    decode_header,
    decode_transactions,
    encode_transactions,
    max_body_bytes,
    merkle_root,
    transactions_root,
)
from derelayl_chain.crypto import KeyPair
from derelayl_chain.encoding import Item, decode, encode, hash_domain
from derelayl_chain.exceptions import (
    BlockSignatureError,
    DecodeError,
    InvalidSignature,
    SizeLimitExceeded,
)
from derelayl_chain.transaction import make_access, make_transfer

CHAIN = 7
PROPOSER = KeyPair.from_seed(b"\x33" * 32)
SENDER = KeyPair.from_seed(b"\x44" * 32)
MAX_DELTA = 4096

TXS = (
    make_transfer(SENDER, CHAIN, 0, PROPOSER.account, 10**9, 1000),
    make_access(SENDER, CHAIN, 1, 10**9, 1000),
)
UNSIGNED = BlockHeader(
    version=BLOCK_VERSION,
    chain_id=CHAIN,
    height=12,
    parent=b"\x01" * 32,
    timestamp_ms=1_700_000_000_000,
    tx_root=transactions_root(TXS),
    state_root=b"\x02" * 32,
    delta_hash=b"\x03" * 32,
    model_hash=b"\x04" * 32,
    claimed_loss=812_345,
    difficulty=20_000,
    reward=50 * 10**9 + 2000,
    reward_to=PROPOSER.account,
    proposer=PROPOSER.public_key,
)
HEADER = UNSIGNED.signed(PROPOSER)
BLOCK = Block(HEADER, TXS, b"delta-bytes")

CHANGED_VALUES: dict[str, object] = {
    "version": BLOCK_VERSION + 1,
    "chain_id": CHAIN + 1,
    "height": 13,
    "parent": b"\x09" * 32,
    "timestamp_ms": 1_700_000_000_001,
    "tx_root": b"\x09" * 32,
    "state_root": b"\x09" * 32,
    "delta_hash": b"\x09" * 32,
    "model_hash": b"\x09" * 32,
    "claimed_loss": 812_344,
    "difficulty": 20_001,
    "reward": 1,
    "reward_to": SENDER.account,
    "proposer": SENDER.public_key,
}
"""A different value for every signed header field."""

leaves = st.lists(st.binary(min_size=32, max_size=32), max_size=12)


def header_item() -> list[Item]:
    """The decoded item of HEADER, for building malformed variants."""
    item = decode(HEADER.encode(), MAX_HEADER_BYTES)
    assert isinstance(item, list)
    return item


def test_every_signed_field_has_a_changed_value() -> None:
    """CHANGED_VALUES covers every header field except the signature."""
    names = {f.name for f in fields(BlockHeader) if f.init} - {"signature"}
    assert names == set(CHANGED_VALUES)


# --- header encoding and hash ------------------------------------------------------------------


def test_header_round_trip() -> None:
    """A signed header decodes to an equal header with the same encoding and hash."""
    decoded = decode_header(HEADER.encode())
    assert decoded == HEADER
    assert decoded.encode() == HEADER.encode()
    assert decoded.hash == HEADER.hash


def test_header_hash_is_the_domain_hash_of_the_signed_encoding() -> None:
    """The block id is BLAKE2b('drl-header') of the signed header bytes."""
    assert HEADER.hash == hash_domain(b"drl-header", HEADER.encode())
    assert BLOCK.hash == HEADER.hash
    assert BLOCK.height == 12


@pytest.mark.parametrize("name", sorted(CHANGED_VALUES))
def test_hash_changes_with_any_field(name: str) -> None:
    """Changing any one header field gives another block hash."""
    changed = replace(HEADER, **{name: CHANGED_VALUES[name]})  # type: ignore[arg-type]
    assert changed.hash != HEADER.hash


def test_hash_changes_with_the_signature() -> None:
    """The hash covers the signature too, so it names one exact signed header."""
    assert replace(HEADER, signature=b"\x00" * 64).hash != HEADER.hash


def test_oversized_header_is_rejected_before_parsing() -> None:
    """Input above MAX_HEADER_BYTES raises SizeLimitExceeded."""
    with pytest.raises(SizeLimitExceeded):
        decode_header(encode([b"\x00" * MAX_HEADER_BYTES]))


@pytest.mark.parametrize("count", [14, 16])
def test_header_with_wrong_field_count_is_rejected(count: int) -> None:
    """A header has exactly 15 fields."""
    item = (header_item() + [b""])[:count]
    with pytest.raises(DecodeError, match=f"block header must have 15 fields, got {count}"):
        decode_header(encode(item))


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, b"\x01\x00\x00", "version is 3 bytes long"),
        (2, b"\x00\x0c", "height has a leading zero"),
        (3, b"\x01" * 31, "parent hash must be 32 bytes"),
        (5, [b"\x01"], "transactions root must be a byte string"),
        (9, [], "claimed loss must be an integer"),
        (12, b"\x01" * 32, "reward account must be 20 bytes"),
        (13, b"\x01" * 20, "proposer key must be 32 bytes"),
        (14, b"", "signature must be 64 bytes"),
    ],
)
def test_malformed_header_fields_are_rejected_with_the_field_named(
    index: int, value: Item, message: str
) -> None:
    """Wrong lengths, types and non-canonical integers in a header are named in the error."""
    item = header_item()
    item[index] = value
    with pytest.raises(DecodeError, match=message):
        decode_header(encode(item))


def test_every_truncation_of_a_header_is_a_decode_error() -> None:
    """No proper prefix of a header encoding decodes."""
    data = HEADER.encode()
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_header(data[:cut])


@given(st.binary(max_size=1100))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    """Untrusted header bytes decode or raise DecodeError, nothing else."""
    with contextlib.suppress(DecodeError):
        decode_header(data)


# --- proposer signature ------------------------------------------------------------------------


def test_signed_header_verifies() -> None:
    """The proposer's signature over the header verifies, also after a round trip."""
    HEADER.verify_signature()
    decode_header(HEADER.encode()).verify_signature()


@pytest.mark.parametrize("name", sorted(set(CHANGED_VALUES) - {"proposer"}))
def test_tampered_header_fails_signature_verification(name: str) -> None:
    """Changing any signed field after signing breaks the proposer's signature."""
    tampered = replace(HEADER, **{name: CHANGED_VALUES[name]})  # type: ignore[arg-type]
    with pytest.raises(BlockSignatureError, match="height"):
        tampered.verify_signature()


def test_flipped_signature_bits_fail_verification() -> None:
    """A header whose signature has one bit flipped does not verify (sampled bits)."""
    for bit in range(0, 512, 5):
        signature = bytearray(HEADER.signature)
        signature[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BlockSignatureError):
            replace(HEADER, signature=bytes(signature)).verify_signature()


def test_header_signed_by_another_key_fails_as_an_invalid_signature() -> None:
    """Substituting the proposer key is caught; the error is also an InvalidSignature."""
    stolen = replace(UNSIGNED, proposer=SENDER.public_key).signed(SENDER)
    stolen.verify_signature()
    with pytest.raises(InvalidSignature):
        replace(stolen, proposer=PROPOSER.public_key).verify_signature()


def test_unsigned_header_fails_verification() -> None:
    """An empty signature is a BlockSignatureError, not a library error."""
    with pytest.raises(BlockSignatureError, match="height 12"):
        UNSIGNED.verify_signature()


def test_signing_with_a_key_other_than_the_proposer_is_refused() -> None:
    """signed() refuses a key that does not match the proposer field."""
    with pytest.raises(ValueError, match="does not match"):
        UNSIGNED.signed(SENDER)


def test_signing_bytes_are_domain_tagged() -> None:
    """The proposer signs a domain tag plus the header without the signature."""
    message = HEADER.signing_bytes()
    assert message.startswith(b"DRL-BLOCK-SIGN\x00")
    assert message == UNSIGNED.signing_bytes()


# --- block body --------------------------------------------------------------------------------


def test_block_round_trip() -> None:
    """A block with transactions and a delta decodes to an equal block."""
    decoded = decode_block(BLOCK.encode(), MAX_DELTA)
    assert decoded == BLOCK
    assert decoded.encode() == BLOCK.encode()
    assert transactions_root(decoded.transactions) == HEADER.tx_root


def test_block_without_transactions_round_trips() -> None:
    """A block may carry no transactions."""
    block = Block(HEADER, (), b"\x01")
    assert decode_block(block.encode(), MAX_DELTA) == block


def test_transaction_list_round_trip() -> None:
    """The body stored apart from the delta decodes back to the same transactions."""
    assert decode_transactions(BLOCK.encode_body()) == TXS
    assert decode_transactions(encode_transactions([])) == ()


def test_delta_over_the_limit_is_rejected() -> None:
    """A delta one byte above max_delta_bytes is refused, naming the delta."""
    block = Block(HEADER, TXS, b"\x01" * (MAX_DELTA + 1))
    with pytest.raises(DecodeError, match=f"delta is {MAX_DELTA + 1} bytes, more than {MAX_DELTA}"):
        decode_block(block.encode(), MAX_DELTA)


def test_delta_at_the_limit_is_accepted() -> None:
    """A delta of exactly max_delta_bytes decodes."""
    block = Block(HEADER, TXS, b"\x01" * MAX_DELTA)
    assert decode_block(block.encode(), MAX_DELTA).delta == block.delta


def test_empty_delta_is_rejected() -> None:
    """Every block carries a delta (a zero delta is still a non-empty safetensors file)."""
    with pytest.raises(DecodeError, match="empty delta"):
        decode_block(Block(HEADER, TXS, b"").encode(), MAX_DELTA)


def test_block_larger_than_the_body_limit_is_rejected_before_parsing() -> None:
    """Input above max_body_bytes raises SizeLimitExceeded."""
    data = b"\xff" * (max_body_bytes(MAX_DELTA) + 1)
    with pytest.raises(SizeLimitExceeded):
        decode_block(data, MAX_DELTA)


def test_too_many_transactions_are_rejected() -> None:
    """More than MAX_BLOCK_TXS transactions is a decode error naming the count."""
    txs = [TXS[0].to_item()] * (MAX_BLOCK_TXS + 1)
    data = encode([HEADER.to_item(), txs, b"\x01"])
    with pytest.raises(DecodeError, match=f"{MAX_BLOCK_TXS + 1} elements, more than"):
        decode_block(data, MAX_DELTA)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([HEADER.to_item(), []], "block must have 3 fields, got 2"),
        ([HEADER.to_item(), b"", b"\x01"], "block transactions must be a list"),
        ([HEADER.to_item(), [], [b"\x01"]], "delta must be a byte string"),
        ([b"header", [], b"\x01"], "block header must be a list"),
        ([HEADER.to_item(), [[b"tx"]], b"\x01"], "transaction must have 7 fields"),
    ],
)
def test_malformed_blocks_are_rejected(item: Item, message: str) -> None:
    """Wrong shapes anywhere in a block are decode errors naming the part."""
    with pytest.raises(DecodeError, match=message):
        decode_block(encode(item), MAX_DELTA)


@given(st.binary(max_size=400))
def test_random_block_bytes_raise_only_decode_error(data: bytes) -> None:
    """Untrusted block bytes decode or raise DecodeError, nothing else."""
    with contextlib.suppress(DecodeError):
        decode_block(data, MAX_DELTA)


# --- transactions root -------------------------------------------------------------------------


def test_duplicated_last_leaf_gives_another_root() -> None:
    """[a, b, c] and [a, b, c, c] differ (the CVE-2012-2459 ambiguity does not exist here)."""
    a, b, c = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a, b, c, c, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a]) != merkle_root([a, a])


def test_order_of_leaves_matters() -> None:
    """The root commits to the order of the transactions."""
    a, b = b"\x0a" * 32, b"\x0b" * 32
    assert merkle_root([a, b]) != merkle_root([b, a])


def test_empty_list_has_a_fixed_root_distinct_from_a_zero_leaf() -> None:
    """No transactions give a deterministic root that no non-empty list shares."""
    empty = merkle_root([])
    assert empty == merkle_root([]) == transactions_root(())
    assert len(empty) == 32
    assert empty != merkle_root([ZERO_HASH])
    assert empty != ZERO_HASH


def test_single_leaf_root_is_not_the_leaf() -> None:
    """Even one transaction is hashed under the leaf and root domains."""
    leaf = b"\x0a" * 32
    assert merkle_root([leaf]) != leaf


def test_inner_node_cannot_pose_as_a_leaf() -> None:
    """A two-leaf tree's inner hash used as a single leaf does not reproduce the root."""
    a, b = b"\x0a" * 32, b"\x0b" * 32
    inner = hash_domain(b"drl-mnode", hash_domain(b"drl-mleaf", a) + hash_domain(b"drl-mleaf", b))
    assert merkle_root([inner]) != merkle_root([a, b])


@given(leaves, leaves)
def test_distinct_lists_have_distinct_roots(first: list[bytes], second: list[bytes]) -> None:
    """Two different lists of leaves never share a root."""
    if first != second:
        assert merkle_root(first) != merkle_root(second)


@given(leaves.filter(bool))
def test_appending_a_copy_of_the_last_leaf_changes_the_root(items: list[bytes]) -> None:
    """For every list, duplicating its last leaf gives a different root."""
    assert merkle_root(items) != merkle_root([*items, items[-1]])


def test_transactions_root_is_the_merkle_root_of_the_txids() -> None:
    """The header's tx_root is merkle_root over the transaction ids in block order."""
    assert transactions_root(TXS) == merkle_root([tx.txid for tx in TXS])
    assert transactions_root(TXS) != transactions_root(TXS[::-1])
