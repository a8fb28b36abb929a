"""Ed25519 keys, signatures and checksummed addresses.

An account is identified by a 20-byte id hashed from its public key. Its text form is
``drl1`` followed by the id and a 4-byte checksum in lowercase hex, so a mistyped character
is caught (with probability 1 - 2^-32) before a wallet signs anything.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

from derelayl_chain.encoding import hash_domain
from derelayl_chain.exceptions import InvalidAddress, InvalidSignature

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
ACCOUNT_ID_SIZE = 20
ADDRESS_PREFIX = "drl1"
_CHECKSUM_SIZE = 4
ADDRESS_LENGTH = len(ADDRESS_PREFIX) + 2 * (ACCOUNT_ID_SIZE + _CHECKSUM_SIZE)
_HEX_DIGITS = frozenset("0123456789abcdef")


def account_id(public_key: bytes) -> bytes:
    """The 20-byte account id of a public key."""
    return hash_domain(b"drl-account", public_key)[:ACCOUNT_ID_SIZE]


def _checksum(account: bytes) -> bytes:
    return hashlib.blake2b(
        ADDRESS_PREFIX.encode() + account, digest_size=_CHECKSUM_SIZE, person=b"drl-address"
    ).digest()


def encode_address(account: bytes) -> str:
    """The text address of a 20-byte account id."""
    if len(account) != ACCOUNT_ID_SIZE:
        raise InvalidAddress(f"account id must be {ACCOUNT_ID_SIZE} bytes, got {len(account)}")
    return ADDRESS_PREFIX + (account + _checksum(account)).hex()


def decode_address(text: str) -> bytes:
    """The account id of a text address; raise :class:`InvalidAddress` naming the problem."""
    if not isinstance(text, str):
        raise InvalidAddress(f"address must be a string, got {type(text).__name__}")
    if not text.startswith(ADDRESS_PREFIX):
        raise InvalidAddress(f"address {text[:60]!r} does not start with {ADDRESS_PREFIX!r}")
    if len(text) != ADDRESS_LENGTH:
        raise InvalidAddress(
            f"address {text[:60]!r} has {len(text)} characters, expected {ADDRESS_LENGTH}"
        )
    body = text[len(ADDRESS_PREFIX) :]
    if not _HEX_DIGITS.issuperset(body):
        raise InvalidAddress(f"address {text!r} has characters other than lowercase hex")
    raw = bytes.fromhex(body)
    account, checksum = raw[:ACCOUNT_ID_SIZE], raw[ACCOUNT_ID_SIZE:]
    if not hmac.compare_digest(checksum, _checksum(account)):
        raise InvalidAddress(f"address {text!r} has a bad checksum (mistyped?)")
    return account


def address_of(public_key: bytes) -> str:
    """The text address of a public key."""
    return encode_address(account_id(public_key))


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`InvalidSignature` unless ``signature`` signs ``message`` for the key."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature(
            f"malformed key or signature ({len(public_key)} and {len(signature)} bytes)"
        )
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise InvalidSignature(f"signature does not verify for key {public_key.hex()}") from exc


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 signing key; the seed is the only secret."""

    seed: bytes
    """32 secret bytes from which the key pair is derived."""
    public_key: bytes
    """32-byte Ed25519 public key."""

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair."""
        return cls.from_seed(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair of a 32-byte seed."""
        if len(seed) != SEED_SIZE:
            raise ValueError(f"seed must be {SEED_SIZE} bytes, got {len(seed)}")
        signing = nacl.signing.SigningKey(seed)
        return cls(seed=seed, public_key=bytes(signing.verify_key))

    @property
    def account(self) -> bytes:
        """The 20-byte account id."""
        return account_id(self.public_key)

    @property
    def address(self) -> str:
        """The text address."""
        return address_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte signature of ``message``."""
        return nacl.signing.SigningKey(self.seed).sign(message).signature

    def __repr__(self) -> str:
        return f"KeyPair(address={self.address!r})"
