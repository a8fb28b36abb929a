"""The one canonical encoding and hash of the chain.

Everything that is hashed, signed or sent to a peer is an *item*: a byte string or a list of
items, serialised with the length-prefix rules of RLP. The decoder accepts exactly one byte
string per item -- the shortest length prefix, single bytes below 0x80 written bare, integers
without leading zeros, no trailing bytes -- so two different encodings of one object cannot
exist, and a hash commits to the object, not to a choice the encoder made. There are no floats.

Every decoder takes a size limit and a nesting limit, checked before any work, and raises
:class:`DecodeError` (never another exception) on anything malformed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import blake3

from derelayl_chain.exceptions import DecodeError, SizeLimitExceeded

Item: TypeAlias = bytes | list["Item"]
"""A decoded value: bytes, or a list of items."""

HASH_SIZE = 32
MAX_NESTING = 8
MAX_UINT_BYTES = 32


# --- hashing -----------------------------------------------------------------------------------


def hash_domain(domain: bytes, data: bytes) -> bytes:
    """BLAKE2b-256 of ``data`` personalised with ``domain``.

    A different personalisation per object kind (transaction, header, ...) means a byte string
    hashed as one kind can never collide with the hash of another kind.
    """
    return hashlib.blake2b(data, digest_size=HASH_SIZE, person=domain).digest()


def bulk_hasher(domain: bytes) -> blake3.blake3:
    """A BLAKE3 hasher for megabytes of tensor bytes (deltas, weights), keyed by ``domain``.

    Every block carries two hashes over its whole model; BLAKE3 computes them several times faster
    than BLAKE2b, with the same digest on any machine. It runs on one thread: the other core is
    busy evaluating or writing. The key-derivation context keeps these domains apart.
    """
    context = "derelayl-chain 2026-12 " + domain.decode("ascii")
    return blake3.blake3(derive_key_context=context, max_threads=1)


def bulk_hash(domain: bytes, data: bytes) -> bytes:
    """:func:`bulk_hasher` over one byte string."""
    hasher = bulk_hasher(domain)
    hasher.update(data)
    return hasher.digest()


# --- encoding ----------------------------------------------------------------------------------


_SHORT_STRING_PREFIX = tuple(bytes((0x80 + length,)) for length in range(56))
_SHORT_LIST_PREFIX = tuple(bytes((0xC0 + length,)) for length in range(56))


def _length_prefix(length: int, short_base: int, long_base: int) -> bytes:
    if length < 56:
        return bytes((short_base + length,))
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((long_base + len(length_bytes),)) + length_bytes


def _encode_bytes(data: bytes) -> bytes:
    length = len(data)
    if length == 1 and data[0] < 0x80:
        return data
    if length < 56:
        return _SHORT_STRING_PREFIX[length] + data
    return _length_prefix(length, 0x80, 0xB7) + data


def encode(item: Item) -> bytes:
    """Serialise an item to its canonical bytes."""
    # Exact type checks first: this runs for every field of everything hashed or signed.
    if type(item) is bytes:
        return _encode_bytes(item)
    if type(item) is list or isinstance(item, list | tuple):
        return encode_list_payload(
            b"".join(
                [_encode_bytes(child) if type(child) is bytes else encode(child) for child in item]
            )
        )
    if isinstance(item, bytes | bytearray | memoryview):
        return _encode_bytes(bytes(item))
    raise TypeError(f"cannot encode {type(item).__name__}; only bytes and lists are items")


def encode_list_payload(payload: bytes) -> bytes:
    """The list item whose children, already encoded, are concatenated in ``payload``."""
    if len(payload) < 56:
        return _SHORT_LIST_PREFIX[len(payload)] + payload
    return _length_prefix(len(payload), 0xC0, 0xF7) + payload


def encode_uint(value: int) -> bytes:
    """An unsigned integer as minimal big-endian bytes (zero is the empty string)."""
    if value < 0:
        raise ValueError(f"cannot encode negative integer {value}")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


_SMALL_UINT_ITEMS = (b"\x80", *(bytes((value,)) for value in range(1, 0x80)))


def encode_uints(values: Iterable[int]) -> bytes:
    """A list of unsigned integers: ``encode([encode_uint(v) for v in values])``, faster.

    Ledger accounts are encoded twice per change for the state commitment; this is that path.
    """
    return encode_list_payload(
        b"".join(
            [
                _SMALL_UINT_ITEMS[value] if 0 <= value < 0x80 else _encode_bytes(encode_uint(value))
                for value in values
            ]
        )
    )


# --- decoding ----------------------------------------------------------------------------------


def _read_length(data: bytes, pos: int, size_len: int, end: int) -> int:
    if pos + size_len > end:
        raise DecodeError(f"truncated length prefix at offset {pos}")
    length_bytes = data[pos : pos + size_len]
    if length_bytes[0] == 0:
        raise DecodeError(f"length prefix with a leading zero at offset {pos}")
    length = int.from_bytes(length_bytes, "big")
    if length < 56:
        raise DecodeError(f"long length form used for short length {length} at offset {pos}")
    return length


def _decode_at(data: bytes, pos: int, end: int, depth: int) -> tuple[Item, int]:
    if pos >= end:
        raise DecodeError(f"truncated input: expected an item at offset {pos}")
    prefix = data[pos]
    if prefix < 0x80:
        return data[pos : pos + 1], pos + 1
    if prefix < 0xB8:
        length = prefix - 0x80
        start = pos + 1
        if start + length > end:
            raise DecodeError(f"truncated byte string of length {length} at offset {pos}")
        if length == 1 and data[start] < 0x80:
            raise DecodeError(f"single byte {data[start]:#x} must be encoded bare at offset {pos}")
        return data[start : start + length], start + length
    if prefix < 0xC0:
        size_len = prefix - 0xB7
        length = _read_length(data, pos + 1, size_len, end)
        start = pos + 1 + size_len
        if start + length > end:
            raise DecodeError(f"truncated byte string of length {length} at offset {pos}")
        return data[start : start + length], start + length
    if depth >= MAX_NESTING:
        raise DecodeError(f"lists nested deeper than {MAX_NESTING}")
    if prefix < 0xF8:
        length = prefix - 0xC0
        start = pos + 1
    else:
        size_len = prefix - 0xF7
        length = _read_length(data, pos + 1, size_len, end)
        start = pos + 1 + size_len
    stop = start + length
    if stop > end:
        raise DecodeError(f"truncated list of length {length} at offset {pos}")
    children: list[Item] = []
    cursor = start
    while cursor < stop:
        child, cursor = _decode_at(data, cursor, stop, depth + 1)
        children.append(child)
    return children, stop


def decode(data: bytes, max_size: int) -> Item:
    """Decode exactly one item from ``data``; reject oversize, non-canonical or trailing bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise SizeLimitExceeded(f"input of {len(data)} bytes exceeds the limit of {max_size}")
    raw = bytes(data)
    item, end = _decode_at(raw, 0, len(raw), 0)
    if end != len(raw):
        raise DecodeError(f"{len(raw) - end} trailing bytes after the item")
    return item


# --- typed accessors used by the object decoders -----------------------------------------------


def as_list(item: Item, length: int | None = None, what: str = "item") -> list[Item]:
    """The item as a list, optionally of an exact length."""
    if not isinstance(item, list):
        raise DecodeError(f"{what} must be a list, got a byte string")
    if length is not None and len(item) != length:
        raise DecodeError(f"{what} must have {length} fields, got {len(item)}")
    return item


def as_bytes(item: Item, length: int | None = None, what: str = "field", max_len: int = 0) -> bytes:
    """The item as bytes, of an exact length or at most ``max_len`` when given."""
    if not isinstance(item, bytes):
        raise DecodeError(f"{what} must be a byte string, got a list")
    if length is not None and len(item) != length:
        raise DecodeError(f"{what} must be {length} bytes, got {len(item)}")
    if max_len and len(item) > max_len:
        raise DecodeError(f"{what} is {len(item)} bytes, more than {max_len}")
    return item


def as_uint(item: Item, what: str = "integer", max_bytes: int = 8) -> int:
    """The item as an unsigned integer of at most ``max_bytes``, without leading zeros."""
    if not isinstance(item, bytes):
        raise DecodeError(f"{what} must be an integer, got a list")
    if len(item) > max_bytes:
        raise DecodeError(f"{what} is {len(item)} bytes long, more than {max_bytes}")
    if item[:1] == b"\x00":
        raise DecodeError(f"{what} has a leading zero byte (non-canonical)")
    return int.from_bytes(item, "big")


def as_items(item: Item, max_count: int, what: str = "list") -> Sequence[Item]:
    """The item as a list of at most ``max_count`` elements."""
    children = as_list(item, what=what)
    if len(children) > max_count:
        raise DecodeError(f"{what} has {len(children)} elements, more than {max_count}")
    return children
