"""Blocks: a signed header that commits to the learning step, and a body that carries it.

The header commits to the transactions (a Merkle root), the weight delta (its hash), the
resulting model (hash of the weights), the claimed evaluation loss and the ledger state after
the block. The body carries the transactions and the delta in safetensors bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from derelayl_chain import encoding
from derelayl_chain.crypto import (
    ACCOUNT_ID_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    KeyPair,
    verify_signature,
)
from derelayl_chain.encoding import HASH_SIZE, Item, as_bytes, as_list, as_uint, encode, encode_uint
from derelayl_chain.exceptions import BlockSignatureError, DecodeError
from derelayl_chain.transaction import MAX_TX_BYTES, Transaction, transaction_from_item

BLOCK_VERSION = 1
MAX_HEADER_BYTES = 1024
MAX_BLOCK_TXS = 2000
_HEADER_FIELDS = 15
_SIGNING_DOMAIN = b"DRL-BLOCK-SIGN\x00"
ZERO_HASH = bytes(HASH_SIZE)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """Everything a node needs to place a block and check its proof of learning."""

    version: int
    """Header format version."""
    chain_id: int
    """Network the block belongs to."""
    height: int
    """Parent height + 1; genesis is 0."""
    parent: bytes
    """Hash of the parent header (zeros for genesis)."""
    timestamp_ms: int
    """Proposer's clock at creation, milliseconds since the Unix epoch."""
    tx_root: bytes
    """Merkle root of the transaction ids."""
    state_root: bytes
    """Commitment to the ledger after this block."""
    delta_hash: bytes
    """Hash of the canonical delta bytes in the body."""
    model_hash: bytes
    """Hash of the weights after applying the delta."""
    claimed_loss: int
    """Evaluation loss of the new weights, fixed point (see learning.task.LOSS_SCALE)."""
    difficulty: int
    """Required relative improvement at zero elapsed time, parts per million."""
    reward: int
    """Emission plus fees paid to the reward account, as the protocol computes them."""
    reward_to: bytes
    """20-byte account that receives the reward and the contribution shares."""
    proposer: bytes
    """32-byte public key of the proposer."""
    signature: bytes = b""
    """Proposer's signature over :meth:`signing_bytes`."""
    _hash: bytes = field(default=b"", init=False, repr=False, compare=False)
    """:attr:`hash`, computed once: a node asks for it many times per block."""

    def unsigned_item(self) -> list[Item]:
        return [
            encode_uint(self.version),
            encode_uint(self.chain_id),
            encode_uint(self.height),
            self.parent,
            encode_uint(self.timestamp_ms),
            self.tx_root,
            self.state_root,
            self.delta_hash,
            self.model_hash,
            encode_uint(self.claimed_loss),
            encode_uint(self.difficulty),
            encode_uint(self.reward),
            self.reward_to,
            self.proposer,
        ]

    def signing_bytes(self) -> bytes:
        return _SIGNING_DOMAIN + encode(self.unsigned_item())

    def to_item(self) -> list[Item]:
        return [*self.unsigned_item(), self.signature]

    def encode(self) -> bytes:
        return encode(self.to_item())

    @property
    def hash(self) -> bytes:
        """The block's identity: hash of the signed header."""
        if not self._hash:
            object.__setattr__(self, "_hash", encoding.hash_domain(b"drl-header", self.encode()))
        return self._hash

    def signed(self, key: KeyPair) -> BlockHeader:
        if key.public_key != self.proposer:
            raise ValueError("signing key does not match the header's proposer")
        return replace(self, signature=key.sign(self.signing_bytes()))

    def verify_signature(self) -> None:
        try:
            verify_signature(self.proposer, self.signing_bytes(), self.signature)
        except Exception as exc:
            raise BlockSignatureError(
                f"proposer signature of block at height {self.height} does not verify"
            ) from exc


def header_from_item(item: Item) -> BlockHeader:
    f = as_list(item, _HEADER_FIELDS, "block header")
    return BlockHeader(
        version=as_uint(f[0], "version", 2),
        chain_id=as_uint(f[1], "chain id"),
        height=as_uint(f[2], "height"),
        parent=as_bytes(f[3], HASH_SIZE, "parent hash"),
        timestamp_ms=as_uint(f[4], "timestamp"),
        tx_root=as_bytes(f[5], HASH_SIZE, "transactions root"),
        state_root=as_bytes(f[6], HASH_SIZE, "state root"),
        delta_hash=as_bytes(f[7], HASH_SIZE, "delta hash"),
        model_hash=as_bytes(f[8], HASH_SIZE, "model hash"),
        claimed_loss=as_uint(f[9], "claimed loss"),
        difficulty=as_uint(f[10], "difficulty"),
        reward=as_uint(f[11], "reward"),
        reward_to=as_bytes(f[12], ACCOUNT_ID_SIZE, "reward account"),
        proposer=as_bytes(f[13], PUBLIC_KEY_SIZE, "proposer key"),
        signature=as_bytes(f[14], SIGNATURE_SIZE, "signature"),
    )


def decode_header(data: bytes) -> BlockHeader:
    return header_from_item(encoding.decode(data, MAX_HEADER_BYTES))


@dataclass(frozen=True, slots=True)
class Block:
    """A header with its body: transactions and the delta bytes."""

    header: BlockHeader
    transactions: tuple[Transaction, ...]
    delta: bytes
    """Canonical safetensors bytes of the weight delta."""

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_item(self) -> list[Item]:
        return [self.header.to_item(), [tx.to_item() for tx in self.transactions], self.delta]

    def encode(self) -> bytes:
        return encode(self.to_item())

    def encode_body(self) -> bytes:
        """The transactions alone (the delta is stored separately, compressed)."""
        return encode_transactions(self.transactions)


def encode_transactions(transactions: Sequence[Transaction]) -> bytes:
    return encode([tx.to_item() for tx in transactions])


def decode_transactions(data: bytes) -> tuple[Transaction, ...]:
    items = encoding.as_items(
        encoding.decode(data, max_body_bytes(0)), MAX_BLOCK_TXS, "block transactions"
    )
    return tuple(transaction_from_item(item) for item in items)


def max_body_bytes(max_delta_bytes: int) -> int:
    """Largest encoded block (or transaction list when ``max_delta_bytes`` is 0)."""
    return MAX_HEADER_BYTES + MAX_BLOCK_TXS * (MAX_TX_BYTES + 8) + max_delta_bytes + 64


def decode_block(data: bytes, max_delta_bytes: int) -> Block:
    """Decode a block from untrusted bytes; the size limit is checked before parsing."""
    fields = as_list(encoding.decode(data, max_body_bytes(max_delta_bytes)), 3, "block")
    txs = encoding.as_items(fields[1], MAX_BLOCK_TXS, "block transactions")
    delta = as_bytes(fields[2], what="delta", max_len=max_delta_bytes)
    if not delta:
        raise DecodeError("block has an empty delta")
    return Block(
        header=header_from_item(fields[0]),
        transactions=tuple(transaction_from_item(item) for item in txs),
        delta=delta,
    )


# --- transactions root -------------------------------------------------------------------------


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Merkle root of 32-byte leaves.

    Leaves and inner nodes are hashed under different domains, an odd node is carried up
    unpaired (never duplicated, which would let two lists share a root) and the count is
    hashed into the root, so the root commits to the exact list.
    """
    level = [encoding.hash_domain(b"drl-mleaf", leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [
            encoding.hash_domain(b"drl-mnode", level[i] + level[i + 1])
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    top = level[0] if level else ZERO_HASH
    return encoding.hash_domain(b"drl-mroot", len(leaves).to_bytes(4, "big") + top)


def transactions_root(transactions: Sequence[Transaction]) -> bytes:
    return merkle_root([tx.txid for tx in transactions])
