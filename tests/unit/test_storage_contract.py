"""The key-value contract, run identically against the in-memory and the LevelDB store."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derelayl_chain.exceptions import StorageError
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch, prefix_upper_bound
from derelayl_chain.storage.leveldb import LevelDBStore
from derelayl_chain.storage.memory import MemoryStore

STORE_KINDS = ["memory", "leveldb"]


def make_store(kind: str, directory: Path) -> KeyValueStore:
    if kind == "memory":
        return MemoryStore()
    return LevelDBStore(directory / "data")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    opened = make_store(request.param, tmp_path)
    yield opened
    opened.close()


def put_all(store: KeyValueStore, items: dict[bytes, bytes]) -> None:
    batch = WriteBatch()
    for key, value in items.items():
        batch.put(key, value)
    store.write(batch)


def keys_of(pairs: Iterator[tuple[bytes, bytes]]) -> list[bytes]:
    return [key for key, _ in pairs]


# --- WriteBatch ---------------------------------------------------------------------------------


def test_batch_records_operations_in_order() -> None:
    """A batch lists its puts and deletes in the order they were added, deletes as None."""
    batch = WriteBatch()
    batch.put(b"a", b"1")
    batch.delete(b"b")
    batch.put(b"a", b"2")
    assert len(batch) == 3
    assert list(batch.operations) == [(b"a", b"1"), (b"b", None), (b"a", b"2")]


def test_batch_operations_cannot_be_changed_through_the_view() -> None:
    """The operations view is a copy: mutating it is impossible and leaves the batch intact."""
    batch = WriteBatch()
    batch.put(b"a", b"1")
    view = batch.operations
    with pytest.raises((TypeError, AttributeError)):
        view.append((b"b", b"2"))  # type: ignore[attr-defined]
    assert len(batch) == 1


@pytest.mark.parametrize("bad", ["text", bytearray(b"mutable"), 7])
def test_batch_refuses_keys_and_values_that_are_not_bytes(bad: object) -> None:
    """Only immutable bytes go into a batch, as key or as value."""
    batch = WriteBatch()
    with pytest.raises(TypeError):
        batch.put(bad, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.put(b"k", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.delete(bad)  # type: ignore[arg-type]
    assert len(batch) == 0


def test_prefix_upper_bound_skips_trailing_ff_bytes() -> None:
    """The bound of a prefix is the next key after all its extensions, or None if none exists."""
    assert prefix_upper_bound(b"a") == b"b"
    assert prefix_upper_bound(b"a\xff\xff") == b"b"
    assert prefix_upper_bound(b"\xff\xff") is None
    assert prefix_upper_bound(b"") is None


# --- reads and writes ----------------------------------------------------------------------------


def test_get_missing_key_returns_none(store: KeyValueStore) -> None:
    """A key that was never written reads as None."""
    assert store.get(b"missing") is None


def test_put_then_get(store: KeyValueStore) -> None:
    """A written value reads back byte for byte."""
    put_all(store, {b"key": b"value"})
    assert store.get(b"key") == b"value"


def test_overwrite_replaces_the_value(store: KeyValueStore) -> None:
    """A second write of a key replaces the first value."""
    put_all(store, {b"key": b"old"})
    put_all(store, {b"key": b"new"})
    assert store.get(b"key") == b"new"
    assert keys_of(store.iterate(b"")) == [b"key"]


def test_delete_removes_the_key(store: KeyValueStore) -> None:
    """A deleted key reads as None and no longer appears in scans."""
    put_all(store, {b"a": b"1", b"b": b"2"})
    batch = WriteBatch()
    batch.delete(b"a")
    store.write(batch)
    assert store.get(b"a") is None
    assert keys_of(store.iterate(b"")) == [b"b"]


def test_delete_of_missing_key_is_a_no_op(store: KeyValueStore) -> None:
    """Deleting a key that is not there succeeds and changes nothing."""
    put_all(store, {b"a": b"1"})
    batch = WriteBatch()
    batch.delete(b"zz")
    store.write(batch)
    assert list(store.iterate(b"")) == [(b"a", b"1")]


def test_empty_value_is_stored_and_differs_from_missing(store: KeyValueStore) -> None:
    """A zero-byte value is a value: it reads as b"" and shows in scans."""
    put_all(store, {b"empty": b""})
    assert store.get(b"empty") == b""
    assert list(store.iterate(b"e")) == [(b"empty", b"")]


def test_large_value_round_trips(store: KeyValueStore) -> None:
    """A 5 MB value (a weights checkpoint) is stored and read back intact."""
    value = random.Random(5).randbytes(5 * 1024 * 1024)
    put_all(store, {b"big": value})
    assert store.get(b"big") == value


def test_get_refuses_a_key_that_is_not_bytes(store: KeyValueStore) -> None:
    """Reading with a str key is a programming error, not a miss."""
    with pytest.raises(TypeError):
        store.get("key")  # type: ignore[arg-type]


# --- batches -------------------------------------------------------------------------------------


def test_every_operation_of_a_batch_is_visible_after_write(store: KeyValueStore) -> None:
    """One write applies all the puts and deletes of the batch together."""
    put_all(store, {b"gone": b"x"})
    batch = WriteBatch()
    for i in range(100):
        batch.put(b"k" + i.to_bytes(2, "big"), bytes([i]))
    batch.delete(b"gone")
    store.write(batch)
    assert store.get(b"gone") is None
    assert [value for _, value in store.iterate(b"k")] == [bytes([i]) for i in range(100)]


def test_nothing_is_visible_before_the_batch_is_written(store: KeyValueStore) -> None:
    """Adding to a batch does not touch the store; only write() does."""
    batch = WriteBatch()
    batch.put(b"k", b"v")
    assert store.get(b"k") is None
    store.write(batch)
    assert store.get(b"k") == b"v"


def test_later_operation_on_a_key_wins_within_a_batch(store: KeyValueStore) -> None:
    """Put-then-delete deletes, delete-then-put keeps the put, put-then-put keeps the last."""
    put_all(store, {b"b": b"before"})
    batch = WriteBatch()
    batch.put(b"a", b"1")
    batch.delete(b"a")
    batch.delete(b"b")
    batch.put(b"b", b"2")
    batch.put(b"c", b"3")
    batch.put(b"c", b"4")
    store.write(batch)
    assert list(store.iterate(b"")) == [(b"b", b"2"), (b"c", b"4")]


def test_empty_batch_changes_nothing(store: KeyValueStore) -> None:
    """Writing an empty batch is allowed and leaves the contents as they were."""
    put_all(store, {b"a": b"1"})
    store.write(WriteBatch())
    assert list(store.iterate(b"")) == [(b"a", b"1")]


# --- scans ----------------------------------------------------------------------------------------


def height_key(height: int) -> bytes:
    return b"c" + height.to_bytes(8, "big")


def test_iterate_returns_big_endian_heights_in_numeric_order(store: KeyValueStore) -> None:
    """8-byte big-endian heights written in any order scan in numeric order."""
    heights = [65536, 1, 256, 0, 255, 2**40]
    put_all(store, {height_key(h): str(h).encode() for h in heights})
    scanned = [int.from_bytes(key[1:], "big") for key in keys_of(store.iterate(b"c"))]
    assert scanned == sorted(heights)


def test_iterate_yields_only_keys_under_the_prefix(store: KeyValueStore) -> None:
    """Keys of neighbouring prefixes, shorter keys and longer prefixes stay out of a scan."""
    put_all(store, {b"a": b"", b"b": b"", b"b\x00": b"", b"bz": b"", b"b\xff": b"", b"c": b""})
    assert keys_of(store.iterate(b"b")) == [b"b", b"b\x00", b"bz", b"b\xff"]
    assert keys_of(store.iterate(b"bz")) == [b"bz"]
    assert keys_of(store.iterate(b"q")) == []


def test_iterate_reverse_is_descending(store: KeyValueStore) -> None:
    """A reverse scan returns the same keys from the highest down."""
    put_all(store, {height_key(h): b"" for h in range(10)} | {b"d": b"", b"b": b""})
    forward = keys_of(store.iterate(b"c"))
    assert keys_of(store.iterate(b"c", reverse=True)) == forward[::-1]
    assert len(forward) == 10


def test_iterate_start_is_an_inclusive_lower_bound(store: KeyValueStore) -> None:
    """Going up, the scan begins at start itself when present, else at the next key."""
    put_all(store, {height_key(h): b"" for h in (1, 3, 5, 7)})
    assert keys_of(store.iterate(b"c", start=height_key(3))) == [height_key(h) for h in (3, 5, 7)]
    assert keys_of(store.iterate(b"c", start=height_key(4))) == [height_key(h) for h in (5, 7)]


def test_iterate_reverse_start_is_an_inclusive_upper_bound(store: KeyValueStore) -> None:
    """Going down, the scan begins at start itself when present, else at the key below it."""
    put_all(store, {height_key(h): b"" for h in (1, 3, 5, 7)})
    expected = [height_key(h) for h in (5, 3, 1)]
    assert keys_of(store.iterate(b"c", start=height_key(5), reverse=True)) == expected
    assert keys_of(store.iterate(b"c", start=height_key(6), reverse=True)) == expected


def test_iterate_reverse_finds_a_lone_key_equal_to_start(store: KeyValueStore) -> None:
    """A reverse scan whose only match is the start key, or the prefix itself, yields it."""
    put_all(store, {b"a": b"1", b"b": b"2", b"c": b"3"})
    assert keys_of(store.iterate(b"b", reverse=True)) == [b"b"]
    assert keys_of(store.iterate(b"c", start=b"c", reverse=True)) == [b"c"]
    assert keys_of(store.iterate(b"", start=b"a", reverse=True)) == [b"a"]


def test_iterate_start_outside_the_prefix_range(store: KeyValueStore) -> None:
    """A start before the prefix range clips to it; a start beyond it yields nothing."""
    put_all(store, {b"a1": b"", b"b1": b"", b"b2": b"", b"c1": b""})
    assert keys_of(store.iterate(b"b", start=b"a")) == [b"b1", b"b2"]
    assert keys_of(store.iterate(b"b", start=b"c")) == []
    assert keys_of(store.iterate(b"b", start=b"c", reverse=True)) == [b"b2", b"b1"]
    assert keys_of(store.iterate(b"b", start=b"a", reverse=True)) == []


def test_iterate_empty_prefix_visits_every_key(store: KeyValueStore) -> None:
    """The empty prefix scans the whole store, in byte order."""
    keys = [b"\x00", b"a", b"a\x00", b"b", b"\xff", b"\xff\xff"]
    put_all(store, dict.fromkeys(reversed(keys), b"v"))
    assert keys_of(store.iterate(b"")) == keys
    assert keys_of(store.iterate(b"", reverse=True)) == keys[::-1]


def test_iterate_prefix_of_ff_bytes_reaches_the_end(store: KeyValueStore) -> None:
    """A prefix with no upper bound (all 0xff) still scans to the last key."""
    put_all(store, {b"\xfe": b"", b"\xff": b"", b"\xff\x00": b"", b"\xff\xff\xff": b""})
    assert keys_of(store.iterate(b"\xff")) == [b"\xff", b"\xff\x00", b"\xff\xff\xff"]
    assert keys_of(store.iterate(b"\xff", reverse=True)) == [b"\xff\xff\xff", b"\xff\x00", b"\xff"]


def test_iterate_prefix_ending_in_ff_bytes(store: KeyValueStore) -> None:
    """A prefix ending in 0xff bytes covers all its extensions and stops before the next key."""
    inside = [b"a\xff", b"a\xff\x00", b"a\xff\xfe", b"a\xff\xff", b"a\xff\xff\xff\x01"]
    put_all(store, dict.fromkeys([b"a", b"a\xfe", b"a\xfe\xff", *inside, b"b", b"b\x00"], b""))
    assert keys_of(store.iterate(b"a\xff")) == inside
    assert keys_of(store.iterate(b"a\xff", reverse=True)) == inside[::-1]
    assert keys_of(store.iterate(b"a\xff\xff")) == inside[3:]
    assert keys_of(store.iterate(b"a\xff\xff", reverse=True)) == inside[:2:-1]
    assert keys_of(store.iterate(b"a\xff", start=b"a\xff\xfe")) == inside[2:]
    assert keys_of(store.iterate(b"a\xff", start=b"a\xff\xfe", reverse=True)) == inside[2::-1]


def test_iterate_prefix_of_several_ff_bytes(store: KeyValueStore) -> None:
    """An all-0xff prefix longer than one byte scans only its extensions, to the last key."""
    inside = [b"\xff\xff", b"\xff\xff\x00", b"\xff\xff\xff", b"\xff\xff\xff\xff\x07"]
    put_all(store, dict.fromkeys([b"\xfe\xff", b"\xff", b"\xff\xfe\xff", *inside], b""))
    assert keys_of(store.iterate(b"\xff\xff")) == inside
    assert keys_of(store.iterate(b"\xff\xff", reverse=True)) == inside[::-1]
    assert keys_of(store.iterate(b"\xff\xff", start=b"\xff\xff\x01")) == inside[2:]
    assert keys_of(store.iterate(b"\xff\xff", start=b"\xff\xff\x01", reverse=True)) == inside[1::-1]


def test_iterate_sees_the_store_as_of_the_call(store: KeyValueStore) -> None:
    """Writes made after a scan starts do not appear in it, and deletes do not break it."""
    put_all(store, {b"k1": b"1", b"k2": b"2"})
    scan = store.iterate(b"k")
    batch = WriteBatch()
    batch.delete(b"k2")
    batch.put(b"k3", b"3")
    store.write(batch)
    assert list(scan) == [(b"k1", b"1"), (b"k2", b"2")]
    assert list(store.iterate(b"k")) == [(b"k1", b"1"), (b"k3", b"3")]


# --- lifecycle ------------------------------------------------------------------------------------


def test_closed_store_refuses_use(store: KeyValueStore) -> None:
    """After close, reads, scans and writes raise StorageError; a second close is harmless."""
    store.close()
    store.close()
    with pytest.raises(StorageError):
        store.get(b"k")
    with pytest.raises(StorageError):
        store.iterate(b"")
    with pytest.raises(StorageError):
        store.write(WriteBatch())


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_store_is_a_context_manager_that_closes(kind: str, tmp_path: Path) -> None:
    """Leaving the with block closes the store."""
    with make_store(kind, tmp_path) as opened:
        put_all(opened, {b"k": b"v"})
        assert opened.get(b"k") == b"v"
    with pytest.raises(StorageError):
        opened.get(b"k")


# --- both stores agree with a plain dict ------------------------------------------------------

keys_strategy = st.lists(st.sampled_from([b"\x00", b"a", b"b", b"\xff"]), max_size=3).map(b"".join)
operation_strategy = st.tuples(keys_strategy, st.none() | st.binary(max_size=6))
batches_strategy = st.lists(st.lists(operation_strategy, max_size=8), max_size=6)
query_strategy = st.tuples(keys_strategy, st.none() | keys_strategy, st.booleans())


def apply_everywhere(
    batches: list[list[tuple[bytes, bytes | None]]], stores: list[KeyValueStore]
) -> dict[bytes, bytes]:
    """Write the batches to every store and return the dict they should now equal."""
    model: dict[bytes, bytes] = {}
    for operations in batches:
        batch = WriteBatch()
        for key, value in operations:
            if value is None:
                batch.delete(key)
                model.pop(key, None)
            else:
                batch.put(key, value)
                model[key] = value
        for target in stores:
            target.write(batch)
    return model


def expected_scan(
    model: dict[bytes, bytes], prefix: bytes, start: bytes | None, reverse: bool
) -> list[tuple[bytes, bytes]]:
    keys = sorted((k for k in model if k.startswith(prefix)), reverse=reverse)
    if start is not None:
        keys = [k for k in keys if (k <= start if reverse else k >= start)]
    return [(k, model[k]) for k in keys]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_strategy)
def test_random_batches_leave_both_stores_equal_to_a_dict(
    batches: list[list[tuple[bytes, bytes | None]]],
) -> None:
    """Any sequence of batches gives the same full scan on both stores as on a plain dict."""
    with (
        tempfile.TemporaryDirectory() as directory,
        MemoryStore() as memory,
        LevelDBStore(Path(directory)) as level,
    ):
        model = apply_everywhere(batches, [memory, level])
        expected = sorted(model.items())
        assert list(memory.iterate(b"")) == expected
        assert list(level.iterate(b"")) == expected
        for key in {key for operations in batches for key, _ in operations}:
            assert memory.get(key) == level.get(key) == model.get(key)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches_strategy, queries=st.lists(query_strategy, min_size=1, max_size=10))
def test_bounded_scans_agree_with_a_dict(
    batches: list[list[tuple[bytes, bytes | None]]],
    queries: list[tuple[bytes, bytes | None, bool]],
) -> None:
    """Scans with any prefix, start and direction return what filtering a dict would."""
    with (
        tempfile.TemporaryDirectory() as directory,
        MemoryStore() as memory,
        LevelDBStore(Path(directory)) as level,
    ):
        model = apply_everywhere(batches, [memory, level])
        for prefix, start, reverse in queries:
            expected = expected_scan(model, prefix, start, reverse)
            assert list(memory.iterate(prefix, start=start, reverse=reverse)) == expected
            assert list(level.iterate(prefix, start=start, reverse=reverse)) == expected
