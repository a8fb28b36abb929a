"""Transactions: the signed messages that move value.

A transaction names its chain id (so it cannot be replayed on another network), its kind and
kind-specific fields in a nested list (so new kinds can be added without changing the encoding
of old ones), the sender's public key, nonce and fee. The signature covers the canonical
encoding of everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from derelayl_chain import encoding
from derelayl_chain.crypto import (
    ACCOUNT_ID_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    KeyPair,
    account_id,
    verify_signature,
)
from derelayl_chain.encoding import Item, as_bytes, as_list, as_uint, encode, encode_uint
from derelayl_chain.exceptions import DecodeError, InvalidTransaction

MAX_TX_BYTES = 512
"""Upper bound on an encoded transaction; checked before decoding."""

MAX_AMOUNT = 2**63 - 1
"""Largest amount or fee a transaction may carry (base units)."""

_SIGNING_DOMAIN = b"DRL-TX-SIGN\x00"
_SIGNATURE_ITEM_BYTES = 2 + SIGNATURE_SIZE
"""Encoded size of the signature field: a long-form prefix of 2 bytes, then 64 bytes."""


class TxKind(IntEnum):
    """The closed set of transaction kinds; the number is part of the encoding."""

    TRANSFER = 1
    ACCESS = 2


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move ``amount`` from the sender to account ``to``."""

    to: bytes
    """20-byte account id of the recipient."""
    amount: int
    """Base units moved; positive."""

    kind = TxKind.TRANSFER

    def to_item(self) -> list[Item]:
        return [self.to, encode_uint(self.amount)]

    @classmethod
    def from_item(cls, fields: list[Item]) -> Transfer:
        if len(fields) != 2:
            raise DecodeError(f"transfer must have 2 fields, got {len(fields)}")
        return cls(
            to=as_bytes(fields[0], ACCOUNT_ID_SIZE, "transfer recipient"),
            amount=as_uint(fields[1], "transfer amount"),
        )


@dataclass(frozen=True, slots=True)
class Access:
    """Pay ``amount`` into the model's royalty pool and receive a model licence."""

    amount: int
    """Base units paid into the royalty pool; positive."""

    kind = TxKind.ACCESS

    def to_item(self) -> list[Item]:
        return [encode_uint(self.amount)]

    @classmethod
    def from_item(cls, fields: list[Item]) -> Access:
        if len(fields) != 1:
            raise DecodeError(f"access must have 1 field, got {len(fields)}")
        return cls(amount=as_uint(fields[0], "access amount"))


Payload = Transfer | Access
_PAYLOAD_TYPES: dict[int, type[Transfer] | type[Access]] = {
    TxKind.TRANSFER: Transfer,
    TxKind.ACCESS: Access,
}


@dataclass(frozen=True, slots=True)
class Transaction:
    """A signed transaction."""

    chain_id: int
    """Network the transaction is valid on."""
    sender: bytes
    """32-byte Ed25519 public key of the sender."""
    nonce: int
    """The sender's transaction count before this one; orders and de-duplicates."""
    fee: int
    """Base units paid to the block proposer."""
    payload: Payload
    """Kind-specific fields."""
    signature: bytes = b""
    """64-byte Ed25519 signature over :meth:`signing_bytes`."""
    _encoded: bytes = field(default=b"", init=False, repr=False, compare=False)
    """The canonical bytes this transaction was decoded from, kept to skip re-encoding it."""

    @property
    def kind(self) -> TxKind:
        return self.payload.kind

    @property
    def sender_account(self) -> bytes:
        """20-byte account id of the sender."""
        return account_id(self.sender)

    def unsigned_item(self) -> list[Item]:
        return [
            encode_uint(self.chain_id),
            encode_uint(int(self.kind)),
            self.sender,
            encode_uint(self.nonce),
            encode_uint(self.fee),
            self.payload.to_item(),
        ]

    def signing_bytes(self) -> bytes:
        """What the sender signs: a domain tag plus the canonical unsigned encoding."""
        if self._encoded:
            return _SIGNING_DOMAIN + _unsigned_encoding(self._encoded)
        return _SIGNING_DOMAIN + encode(self.unsigned_item())

    def to_item(self) -> list[Item]:
        return [*self.unsigned_item(), self.signature]

    def encode(self) -> bytes:
        """The canonical bytes of the signed transaction."""
        return self._encoded or encode(self.to_item())

    @property
    def txid(self) -> bytes:
        """32-byte id: the hash of the canonical signed encoding."""
        return txid_of(self.encode())

    def signed(self, key: KeyPair) -> Transaction:
        """A copy signed with ``key`` (which must own :attr:`sender`)."""
        if key.public_key != self.sender:
            raise ValueError("signing key does not match the transaction's sender")
        return Transaction(
            self.chain_id, self.sender, self.nonce, self.fee, self.payload,
            key.sign(self.signing_bytes()),
        )  # fmt: skip

    @property
    def amount(self) -> int:
        return self.payload.amount


def _unsigned_encoding(encoded: bytes) -> bytes:
    """The unsigned encoding inside a canonical signed one, without re-encoding the fields.

    The signed list is the unsigned list's fields followed by the 64-byte signature, so its
    payload minus the signature item is the unsigned list's payload.
    """
    prefix = 1 if encoded[0] < 0xF8 else 1 + encoded[0] - 0xF7
    return encoding.encode_list_payload(encoded[prefix:-_SIGNATURE_ITEM_BYTES])


def txid_of(encoded: bytes) -> bytes:
    """The id of an encoded transaction."""
    return encoding.hash_domain(b"drl-txid", encoded)


def transaction_from_item(item: Item) -> Transaction:
    """Build a transaction from a decoded item, checking every field's form."""
    fields = as_list(item, 7, "transaction")
    kind_number = as_uint(fields[1], "transaction kind", max_bytes=2)
    payload_type = _PAYLOAD_TYPES.get(kind_number)
    if payload_type is None:
        raise DecodeError(f"unknown transaction kind {kind_number}")
    return Transaction(
        chain_id=as_uint(fields[0], "chain id"),
        sender=as_bytes(fields[2], PUBLIC_KEY_SIZE, "sender public key"),
        nonce=as_uint(fields[3], "nonce"),
        fee=as_uint(fields[4], "fee"),
        payload=payload_type.from_item(as_list(fields[5], what="transaction payload")),
        signature=as_bytes(fields[6], SIGNATURE_SIZE, "signature"),
    )


def decode_transaction(data: bytes) -> Transaction:
    """Decode one transaction from untrusted bytes (size limit first)."""
    tx = transaction_from_item(encoding.decode(data, MAX_TX_BYTES))
    # The decoder accepts only canonical bytes, so they are exactly what encode() would return.
    object.__setattr__(tx, "_encoded", bytes(data))
    return tx


def check_transaction_form(tx: Transaction, chain_id: int) -> None:
    """Cheap stateless checks, run before the signature: chain id and amount ranges."""
    if tx.chain_id != chain_id:
        raise InvalidTransaction(
            f"transaction is for chain {tx.chain_id}, this is chain {chain_id}"
        )
    if tx.amount <= 0:
        raise InvalidTransaction(f"{tx.kind.name.lower()} amount must be positive, got {tx.amount}")
    if tx.fee < 0:
        raise InvalidTransaction(f"fee must not be negative, got {tx.fee}")
    if tx.amount > MAX_AMOUNT or tx.fee > MAX_AMOUNT:
        raise InvalidTransaction(f"amount {tx.amount} or fee {tx.fee} exceeds {MAX_AMOUNT}")


def verify_transaction(tx: Transaction, chain_id: int) -> None:
    """Stateless validity: form first, then the signature (the expensive part)."""
    check_transaction_form(tx, chain_id)
    verify_signature(tx.sender, tx.signing_bytes(), tx.signature)


def make_transfer(
    key: KeyPair, chain_id: int, nonce: int, to: bytes, amount: int, fee: int
) -> Transaction:
    """A signed transfer."""
    return Transaction(chain_id, key.public_key, nonce, fee, Transfer(to, amount)).signed(key)


def make_access(key: KeyPair, chain_id: int, nonce: int, amount: int, fee: int) -> Transaction:
    """A signed payment into the royalty pool."""
    return Transaction(chain_id, key.public_key, nonce, fee, Access(amount)).signed(key)
