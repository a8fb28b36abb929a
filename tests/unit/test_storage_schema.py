"""The key schema: prefixes, fixed-width fields, key layouts, and the schema version check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.exceptions import SchemaVersionMismatch, StorageError
from derelayl_chain.storage import schema
from derelayl_chain.storage.kv import WriteBatch
from derelayl_chain.storage.memory import MemoryStore

HASH = bytes(range(32))
OTHER_HASH = bytes(range(1, 33))
ACCOUNT = bytes(range(100, 120))
OTHER_ACCOUNT = bytes(range(101, 121))

heights = st.integers(min_value=0, max_value=2**64 - 1)

KEY_BUILDERS: list[tuple[str, Callable[[], bytes]]] = [
    ("meta", lambda: schema.meta_key("head")),
    ("block_index", lambda: schema.block_index_key(HASH)),
    ("header", lambda: schema.header_key(HASH)),
    ("canonical", lambda: schema.canonical_key(7)),
    ("body", lambda: schema.body_key(HASH)),
    ("delta", lambda: schema.delta_key(HASH)),
    ("checkpoint", lambda: schema.checkpoint_key(7, HASH)),
    ("account", lambda: schema.account_key(ACCOUNT)),
    ("undo", lambda: schema.undo_key(HASH)),
    ("tx_index", lambda: schema.tx_index_key(HASH)),
    ("history", lambda: schema.history_key(ACCOUNT, 7, 3)),
    ("invalid", lambda: schema.invalid_key(HASH)),
    ("mempool", lambda: schema.mempool_key(HASH)),
    ("global_state", schema.global_state_key),
    ("reward", lambda: schema.reward_key(ACCOUNT, 7)),
]


# --- prefixes -------------------------------------------------------------------------------------


def test_prefixes_are_single_distinct_bytes() -> None:
    """Every table has a one-byte prefix of its own."""
    prefixes = list(schema.PREFIXES.values())
    assert all(len(prefix) == 1 for prefix in prefixes)
    assert len(set(prefixes)) == len(prefixes)


def test_no_prefix_is_a_prefix_of_another() -> None:
    """A scan of one table can never return a key of another."""
    for name, prefix in schema.PREFIXES.items():
        for other_name, other in schema.PREFIXES.items():
            if name != other_name:
                assert not other.startswith(prefix), (name, other_name)


def test_prefixes_match_the_documented_layout() -> None:
    """The prefixes are the ones docs/storage.md lists; changing one needs a new schema version."""
    assert schema.PREFIXES == {
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


def test_every_table_has_a_builder() -> None:
    """The builder list below covers every prefix, so the layout tests cover every table."""
    assert sorted(name for name, _ in KEY_BUILDERS) == sorted(schema.PREFIXES)


@pytest.mark.parametrize(("table", "build"), KEY_BUILDERS, ids=[t for t, _ in KEY_BUILDERS])
def test_builder_keys_start_with_their_table_prefix(table: str, build: Callable[[], bytes]) -> None:
    """Each builder puts its key under its own table's prefix."""
    assert build().startswith(schema.PREFIXES[table])


# --- heights --------------------------------------------------------------------------------------


@given(height=heights)
def test_height_round_trips_through_eight_bytes(height: int) -> None:
    """A height encodes to exactly 8 bytes and decodes back to itself."""
    encoded = schema.encode_height(height)
    assert len(encoded) == 8
    assert schema.decode_height(encoded) == height


@given(first=heights, second=heights)
def test_height_byte_order_is_numeric_order(first: int, second: int) -> None:
    """Comparing encoded heights as bytes agrees with comparing the numbers."""
    assert (schema.encode_height(first) < schema.encode_height(second)) == (first < second)


@pytest.mark.parametrize("height", [-1, 2**64])
def test_height_out_of_range_is_refused(height: int) -> None:
    """Heights must fit in 8 unsigned bytes."""
    with pytest.raises(ValueError, match=str(height)):
        schema.encode_height(height)


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, b"\x00" * 9])
def test_decode_height_refuses_wrong_length(data: bytes) -> None:
    """Only 8 bytes are a stored height; anything else means a damaged key."""
    with pytest.raises(StorageError):
        schema.decode_height(data)


# --- layouts --------------------------------------------------------------------------------------


def test_meta_keys_are_the_prefix_and_the_name() -> None:
    """Metadata keys spell their name after the prefix."""
    assert schema.meta_key("schema_version") == b"mschema_version"
    assert schema.meta_key("genesis_hash") == b"mgenesis_hash"
    assert schema.meta_key("head") == b"mhead"
    with pytest.raises(ValueError):
        schema.meta_key("")


def test_hash_keyed_tables_are_prefix_plus_hash() -> None:
    """Tables keyed by a block hash or txid are the prefix followed by the 32 bytes."""
    assert schema.header_key(HASH) == b"h" + HASH
    assert schema.block_index_key(HASH) == b"i" + HASH
    assert schema.tx_index_key(HASH) == b"t" + HASH
    assert schema.parse_hash_key(schema.undo_key(HASH), "undo") == HASH


def test_global_state_key_is_the_bare_prefix() -> None:
    """The ledger globals live under the single key b"g"."""
    assert schema.global_state_key() == b"g"


def test_canonical_key_layout() -> None:
    """A canonical key is b"c" and the 8-byte height, and parses back to the height."""
    key = schema.canonical_key(256)
    assert key == b"c" + bytes([0, 0, 0, 0, 0, 0, 1, 0])
    assert schema.parse_canonical_key(key) == 256


def test_checkpoint_key_layout() -> None:
    """A checkpoint key is b"k", the height and the block hash; it parses back to both."""
    key = schema.checkpoint_key(10, HASH)
    assert key == b"k" + (10).to_bytes(8, "big") + HASH
    assert schema.parse_checkpoint_key(key) == (10, HASH)


def test_history_key_layout() -> None:
    """A history key is b"y", the account, the 8-byte height and the 4-byte sequence number."""
    key = schema.history_key(ACCOUNT, 5, 2)
    assert key == b"y" + ACCOUNT + (5).to_bytes(8, "big") + (2).to_bytes(4, "big")
    assert schema.parse_history_key(key) == (ACCOUNT, 5, 2)
    assert key.startswith(schema.history_prefix(ACCOUNT))


def test_reward_key_layout() -> None:
    """A reward key is b"r", the account and the 8-byte height."""
    key = schema.reward_key(ACCOUNT, 9)
    assert key == b"r" + ACCOUNT + (9).to_bytes(8, "big")
    assert schema.parse_reward_key(key) == (ACCOUNT, 9)
    assert key.startswith(schema.reward_prefix(ACCOUNT))


def test_history_scan_is_per_account_in_height_then_seq_order() -> None:
    """Scanning one account's history prefix yields its entries by (height, seq), no others."""
    store = MemoryStore()
    entries = [(300, 0), (2, 1), (2, 0), (1, 70000), (256, 5)]
    batch = WriteBatch()
    for height, seq in entries:
        batch.put(schema.history_key(ACCOUNT, height, seq), b"mine")
        batch.put(schema.history_key(OTHER_ACCOUNT, height, seq), b"theirs")
    store.write(batch)
    scanned = [
        schema.parse_history_key(k) for k, _ in store.iterate(schema.history_prefix(ACCOUNT))
    ]
    assert scanned == [(ACCOUNT, h, s) for h, s in sorted(entries)]


@pytest.mark.parametrize(
    "build",
    [
        lambda: schema.header_key(HASH[:31]),
        lambda: schema.block_index_key(HASH + b"\x00"),
        lambda: schema.checkpoint_key(1, b""),
        lambda: schema.account_key(HASH),
        lambda: schema.history_key(ACCOUNT[:19], 1, 0),
        lambda: schema.reward_key(ACCOUNT + b"\x00", 1),
        lambda: schema.mempool_key(ACCOUNT),
        lambda: schema.header_key(bytearray(HASH)),  # type: ignore[arg-type]
    ],
)
def test_builders_refuse_ids_of_the_wrong_length(build: Callable[[], bytes]) -> None:
    """A short or long hash or account id would break prefix scans, so it is refused."""
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("seq", [-1, 2**32])
def test_history_seq_out_of_range_is_refused(seq: int) -> None:
    """History sequence numbers must fit in 4 unsigned bytes."""
    with pytest.raises(ValueError):
        schema.history_key(ACCOUNT, 1, seq)


@pytest.mark.parametrize(
    ("parse", "key"),
    [
        (schema.parse_canonical_key, b"c" + b"\x00" * 7),
        (schema.parse_checkpoint_key, b"h" + b"\x00" * 40),
        (schema.parse_history_key, b"y" + b"\x00" * 20),
        (schema.parse_reward_key, b"r" + b"\x00" * 29),
    ],
)
def test_parsers_refuse_malformed_keys(parse: Callable[[bytes], object], key: bytes) -> None:
    """A key of the wrong table or length is reported as damaged storage."""
    with pytest.raises(StorageError):
        parse(key)


# --- schema version ------------------------------------------------------------------------------


def test_open_store_without_a_path_is_an_empty_memory_store_with_a_version() -> None:
    """open_store(None) gives an in-memory store holding only the current schema version."""
    with schema.open_store(None) as store:
        assert isinstance(store, MemoryStore)
        assert schema.read_schema_version(store) == schema.SCHEMA_VERSION
        assert [key for key, _ in store.iterate(b"")] == [schema.meta_key("schema_version")]


def test_check_schema_version_accepts_the_current_version() -> None:
    """A store already at the current version passes and is left unchanged."""
    store = MemoryStore()
    schema.check_schema_version(store)
    before = list(store.iterate(b""))
    schema.check_schema_version(store)
    assert list(store.iterate(b"")) == before


def test_check_schema_version_refuses_another_version() -> None:
    """A store of another version raises SchemaVersionMismatch naming both versions."""
    store = MemoryStore()
    batch = WriteBatch()
    batch.put(schema.meta_key("schema_version"), schema.encode_schema_version(7))
    store.write(batch)
    with pytest.raises(SchemaVersionMismatch, match=rf"version 7.*version {schema.SCHEMA_VERSION}"):
        schema.check_schema_version(store)


def test_check_schema_version_refuses_data_without_a_version() -> None:
    """A store with keys but no version is refused, not stamped with the current version."""
    store = MemoryStore()
    batch = WriteBatch()
    batch.put(schema.meta_key("head"), HASH)
    store.write(batch)
    with pytest.raises(StorageError, match="no schema version"):
        schema.check_schema_version(store)
    assert schema.read_schema_version(store) is None


def test_unreadable_schema_version_is_a_storage_error() -> None:
    """Garbage under the version key is reported as a storage error."""
    store = MemoryStore()
    batch = WriteBatch()
    batch.put(schema.meta_key("schema_version"), b"\x00\x01")
    store.write(batch)
    with pytest.raises(StorageError, match="unreadable"):
        schema.read_schema_version(store)
