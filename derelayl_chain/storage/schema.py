"""Every database key of the chain, built in one place, and the schema version check.

A key is a one-byte prefix naming its table followed by fixed-width fields, so that a prefix
scan returns one table (or one account's rows) and nothing else. Heights are 8-byte big-endian
and sequence numbers 4-byte big-endian, so byte order is numeric order. ``docs/storage.md``
lists the value stored under each prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from derelayl_chain.crypto import ACCOUNT_ID_SIZE
from derelayl_chain.encoding import HASH_SIZE, as_uint, decode, encode, encode_uint
from derelayl_chain.exceptions import DecodeError, SchemaVersionMismatch, StorageError
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch
from derelayl_chain.storage.leveldb import LevelDBStore
from derelayl_chain.storage.memory import MemoryStore

SCHEMA_VERSION: Final = 1
"""Bumped whenever a key layout or a stored value changes meaning."""

HEIGHT_SIZE: Final = 8
SEQ_SIZE: Final = 4

PREFIXES: Final[dict[str, bytes]] = {
    "meta": b"m",
    "block_index": b"i",
    "header": b"h",
    "canonical": b"c",
    "body": b"b",
    "delta": b"d",
    "checkpoint": b"k",
    "account": b"a",
    "undo": b"u",
    "tx_index": b"t",
    "history": b"y",
    "invalid": b"x",
    "mempool": b"p",
    "global_state": b"g",
    "reward": b"r",
}
"""Table name to its key prefix; no prefix is a prefix of another."""

# --- fixed-width fields ------------------------------------------------------------------------


def encode_height(height: int) -> bytes:
    """A height as 8 big-endian bytes, so that byte order is numeric order."""
    if not 0 <= height < 1 << (8 * HEIGHT_SIZE):
        raise ValueError(f"height {height} is outside 0 .. 2^64-1")
    return height.to_bytes(HEIGHT_SIZE, "big")


def decode_height(data: bytes) -> int:
    """The height of 8 big-endian bytes."""
    if len(data) != HEIGHT_SIZE:
        raise StorageError(f"a stored height must be {HEIGHT_SIZE} bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def _encode_seq(seq: int) -> bytes:
    if not 0 <= seq < 1 << (8 * SEQ_SIZE):
        raise ValueError(f"sequence number {seq} is outside 0 .. 2^32-1")
    return seq.to_bytes(SEQ_SIZE, "big")


def _checked(value: object, size: int, what: str) -> bytes:
    """``value`` if it is ``size`` bytes; a short id would make one account's scan leak into
    another's, so a wrong length is refused rather than written."""
    if not isinstance(value, bytes) or len(value) != size:
        shown = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ValueError(f"{what} must be {size} bytes, got {shown}")
    return value


def _hash_key(table: str, block_hash: bytes) -> bytes:
    return PREFIXES[table] + _checked(block_hash, HASH_SIZE, "block hash")


# --- key builders ------------------------------------------------------------------------------


def meta_key(name: str) -> bytes:
    """Key of a metadata entry: ``schema_version``, ``genesis_hash``, ``head``."""
    if not name or not name.isascii():
        raise ValueError(f"metadata name {name!r} must be non-empty ASCII")
    return PREFIXES["meta"] + name.encode("ascii")


def block_index_key(block_hash: bytes) -> bytes:
    """Key of a block's index entry (work, status, evaluated loss)."""
    return _hash_key("block_index", block_hash)


def header_key(block_hash: bytes) -> bytes:
    """Key of a block's encoded header."""
    return _hash_key("header", block_hash)


def body_key(block_hash: bytes) -> bytes:
    """Key of a block's encoded transaction list."""
    return _hash_key("body", block_hash)


def delta_key(block_hash: bytes) -> bytes:
    """Key of a block's compressed weight delta."""
    return _hash_key("delta", block_hash)


def undo_key(block_hash: bytes) -> bytes:
    """Key of the undo record written when a block is connected."""
    return _hash_key("undo", block_hash)


def invalid_key(block_hash: bytes) -> bytes:
    """Key of the marker of a block proven invalid."""
    return _hash_key("invalid", block_hash)


def canonical_key(height: int) -> bytes:
    """Key of the hash of the canonical block at ``height``."""
    return PREFIXES["canonical"] + encode_height(height)


def checkpoint_key(height: int, block_hash: bytes) -> bytes:
    """Key of the full weights after the block ``block_hash`` at ``height``."""
    return PREFIXES["checkpoint"] + encode_height(height) + _checked(block_hash, HASH_SIZE, "hash")


def account_key(account_id: bytes) -> bytes:
    """Key of an account's encoded state."""
    return PREFIXES["account"] + _checked(account_id, ACCOUNT_ID_SIZE, "account id")


def global_state_key() -> bytes:
    """Key of the ledger globals (supply, shares, royalty accumulator)."""
    return PREFIXES["global_state"]


def tx_index_key(txid: bytes) -> bytes:
    """Key of the location ``[block hash, position]`` of a confirmed transaction."""
    return PREFIXES["tx_index"] + _checked(txid, HASH_SIZE, "txid")


def mempool_key(txid: bytes) -> bytes:
    """Key of a pending transaction kept across restarts."""
    return PREFIXES["mempool"] + _checked(txid, HASH_SIZE, "txid")


def history_prefix(account_id: bytes) -> bytes:
    """Prefix of all history entries of one account, for a scan by height."""
    return PREFIXES["history"] + _checked(account_id, ACCOUNT_ID_SIZE, "account id")


def history_key(account_id: bytes, height: int, seq: int) -> bytes:
    """Key of the ``seq``-th history entry of an account in the block at ``height``."""
    return history_prefix(account_id) + encode_height(height) + _encode_seq(seq)


def reward_prefix(account_id: bytes) -> bytes:
    """Prefix of all block rewards of one account, for a scan by height."""
    return PREFIXES["reward"] + _checked(account_id, ACCOUNT_ID_SIZE, "account id")


def reward_key(account_id: bytes, height: int) -> bytes:
    """Key of the reward an account earned for the block at ``height``."""
    return reward_prefix(account_id) + encode_height(height)


# --- key parsers (for keys returned by a scan) ------------------------------------------------


def _split(key: bytes, table: str, sizes: tuple[int, ...]) -> list[bytes]:
    prefix = PREFIXES[table]
    if not key.startswith(prefix) or len(key) != len(prefix) + sum(sizes):
        raise StorageError(f"{key.hex()} is not a well-formed {table} key")
    fields, cursor = [], len(prefix)
    for size in sizes:
        fields.append(key[cursor : cursor + size])
        cursor += size
    return fields


def parse_hash_key(key: bytes, table: str) -> bytes:
    """The block hash (or txid) of a key of a table keyed by hash, e.g. ``"header"``."""
    return _split(key, table, (HASH_SIZE,))[0]


def parse_canonical_key(key: bytes) -> int:
    """The height of a canonical key."""
    return decode_height(_split(key, "canonical", (HEIGHT_SIZE,))[0])


def parse_checkpoint_key(key: bytes) -> tuple[int, bytes]:
    """``(height, block hash)`` of a checkpoint key."""
    height, block_hash = _split(key, "checkpoint", (HEIGHT_SIZE, HASH_SIZE))
    return decode_height(height), block_hash


def parse_history_key(key: bytes) -> tuple[bytes, int, int]:
    """``(account id, height, seq)`` of a history key."""
    account, height, seq = _split(key, "history", (ACCOUNT_ID_SIZE, HEIGHT_SIZE, SEQ_SIZE))
    return account, decode_height(height), int.from_bytes(seq, "big")


def parse_reward_key(key: bytes) -> tuple[bytes, int]:
    """``(account id, height)`` of a reward key."""
    account, height = _split(key, "reward", (ACCOUNT_ID_SIZE, HEIGHT_SIZE))
    return account, decode_height(height)


# --- opening a store ---------------------------------------------------------------------------


def encode_schema_version(version: int) -> bytes:
    """The stored form of a schema version: a canonical integer item."""
    return encode(encode_uint(version))


def read_schema_version(store: KeyValueStore) -> int | None:
    """The schema version recorded in ``store``, or ``None`` if it has none."""
    raw = store.get(meta_key("schema_version"))
    if raw is None:
        return None
    try:
        return as_uint(decode(raw, 16), "schema version")
    except DecodeError as exc:
        raise StorageError(f"the stored schema version {raw.hex()} is unreadable: {exc}") from exc


def check_schema_version(store: KeyValueStore, where: str = "the database") -> None:
    """Record :data:`SCHEMA_VERSION` in an empty store; refuse a store of another version.

    A store with keys but no version was not written by this node (or lost its metadata), so
    it is refused too rather than guessed at.
    """
    found = read_schema_version(store)
    if found is None:
        if next(store.iterate(b""), None) is not None:
            raise StorageError(f"{where} holds data but no schema version; refusing to use it")
        batch = WriteBatch()
        batch.put(meta_key("schema_version"), encode_schema_version(SCHEMA_VERSION))
        store.write(batch)
    elif found != SCHEMA_VERSION:
        raise SchemaVersionMismatch(
            f"{where} has schema version {found}, this node reads version {SCHEMA_VERSION}"
        )


def open_store(path: Path | None) -> KeyValueStore:
    """The node's store: in memory when ``path`` is None, else LevelDB in that data directory.

    Raises :class:`DataDirLocked` if another node holds the directory and
    :class:`SchemaVersionMismatch` if the database is of another schema version.
    """
    store: KeyValueStore = MemoryStore() if path is None else LevelDBStore(path)
    where = "the in-memory database" if path is None else f"the database in {path}"
    try:
        check_schema_version(store, where)
    except BaseException:
        store.close()
        raise
    return store
