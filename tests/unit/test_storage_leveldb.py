"""The LevelDB store: the data directory lock, durability across reopen and SIGKILL, versions."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from derelayl_chain.exceptions import DataDirLocked, SchemaVersionMismatch, StorageError
from derelayl_chain.storage import schema
from derelayl_chain.storage.kv import WriteBatch
from derelayl_chain.storage.leveldb import LevelDBStore

LOCK_PROBE = """
import sys
from pathlib import Path
from derelayl_chain.exceptions import DataDirLocked
from derelayl_chain.storage.leveldb import LevelDBStore
try:
    LevelDBStore(Path(sys.argv[1])).close()
except DataDirLocked as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""

BATCH_WRITER = """
import sys
from pathlib import Path
from derelayl_chain.storage.kv import WriteBatch
from derelayl_chain.storage.leveldb import LevelDBStore
path, number, keys = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
store = LevelDBStore(path)
print("ready", flush=True)
while True:
    batch = WriteBatch()
    for i in range(keys):
        batch.put(number.to_bytes(8, "big") + i.to_bytes(4, "big"), bytes([number % 256]) * 512)
    store.write(batch)
    print(number, flush=True)
    number += 1
"""

KEYS_PER_BATCH = 200


def put(store: LevelDBStore, key: bytes, value: bytes) -> None:
    batch = WriteBatch()
    batch.put(key, value)
    store.write(batch)


def probe_lock(path: Path) -> subprocess.CompletedProcess[str]:
    """Try to open ``path`` from a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-c", LOCK_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- the data directory ---------------------------------------------------------------------------


def test_open_creates_the_directory_lock_file_and_database(tmp_path: Path) -> None:
    """Opening a missing directory creates it with node.lock and chaindata/ inside."""
    path = tmp_path / "deep" / "data"
    with LevelDBStore(path):
        assert (path / "node.lock").is_file()
        assert (path / "chaindata").is_dir()


def test_path_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    """A data directory that cannot be created is reported as StorageError naming it."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="file"):
        LevelDBStore(blocker)


def test_corrupt_database_is_a_storage_error_and_frees_the_lock(tmp_path: Path) -> None:
    """A database LevelDB cannot open raises StorageError, and the lock is not left held."""
    LevelDBStore(tmp_path).close()
    for manifest in (tmp_path / "chaindata").glob("MANIFEST-*"):
        manifest.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StorageError, match=str(tmp_path)) as caught:
        LevelDBStore(tmp_path)
    assert not isinstance(caught.value, DataDirLocked)
    (tmp_path / "chaindata").rename(tmp_path / "damaged")
    LevelDBStore(tmp_path).close()


# --- the lock -------------------------------------------------------------------------------------


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """While a store is open, opening the directory again raises DataDirLocked naming it."""
    with LevelDBStore(tmp_path), pytest.raises(DataDirLocked, match=str(tmp_path)):
        LevelDBStore(tmp_path)


def test_lock_is_released_by_close(tmp_path: Path) -> None:
    """After close, the same directory opens again and sees the data."""
    first = LevelDBStore(tmp_path)
    put(first, b"k", b"v")
    first.close()
    with LevelDBStore(tmp_path) as second:
        assert second.get(b"k") == b"v"


def test_second_process_is_refused_while_the_lock_is_held(tmp_path: Path) -> None:
    """Another process gets DataDirLocked (naming the directory) until the holder closes."""
    store = LevelDBStore(tmp_path)
    try:
        refused = probe_lock(tmp_path)
    finally:
        store.close()
    assert refused.returncode == 3, refused.stderr
    assert str(tmp_path) in refused.stdout
    assert "already in use" in refused.stdout
    allowed = probe_lock(tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "opened"


# --- durability -----------------------------------------------------------------------------------


def test_data_persists_across_close_and_reopen(tmp_path: Path) -> None:
    """Every written key, and every delete, is still there after reopening."""
    with LevelDBStore(tmp_path) as store:
        batch = WriteBatch()
        for height in range(50):
            batch.put(schema.canonical_key(height), bytes([height]))
        store.write(batch)
        deletion = WriteBatch()
        deletion.delete(schema.canonical_key(0))
        store.write(deletion)
    with LevelDBStore(tmp_path) as store:
        assert store.get(schema.canonical_key(0)) is None
        values = [value for _, value in store.iterate(schema.PREFIXES["canonical"])]
        assert values == [bytes([height]) for height in range(1, 50)]


def read_batches(path: Path) -> dict[int, int]:
    """Batch number to the number of its keys present, checking every value on the way."""
    counts: Counter[int] = Counter()
    with LevelDBStore(path) as store:
        for key, value in store.iterate(b""):
            number = int.from_bytes(key[:8], "big")
            assert value == bytes([number % 256]) * 512, key.hex()
            counts[number] += 1
    return dict(counts)


def test_sigkill_mid_write_leaves_whole_batches(tmp_path: Path) -> None:
    """A writer killed at random moments never leaves part of a batch, nor loses a synced one."""
    rng = random.Random()
    next_number = 0
    for _ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", BATCH_WRITER, str(tmp_path), str(next_number)]
            + [str(KEYS_PER_BATCH)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        writer.kill()
        acknowledged = [int(line) for line in writer.stdout.read().split()]
        writer.wait(timeout=30)
        writer.stdout.close()

        counts = read_batches(tmp_path)
        partial = {number: n for number, n in counts.items() if n != KEYS_PER_BATCH}
        assert partial == {}, f"batches cut in half: {partial}"
        assert sorted(counts) == list(range(len(counts))), "a batch is missing in the middle"
        assert all(number in counts for number in acknowledged), "a synced batch was lost"
        next_number = len(counts)
    assert next_number > 0, "the writer never completed a batch; the test proved nothing"


# --- schema version through open_store ----------------------------------------------------------


def test_open_store_records_the_schema_version_on_first_open(tmp_path: Path) -> None:
    """A fresh database gets the current schema version, and reopening accepts it."""
    with schema.open_store(tmp_path) as store:
        assert isinstance(store, LevelDBStore)
    with schema.open_store(tmp_path) as store:
        assert schema.read_schema_version(store) == schema.SCHEMA_VERSION


def test_open_store_refuses_another_schema_version_and_unlocks(tmp_path: Path) -> None:
    """A database of another version raises SchemaVersionMismatch and leaves no lock behind."""
    with LevelDBStore(tmp_path) as store:
        put(store, schema.meta_key("schema_version"), schema.encode_schema_version(99))
    with pytest.raises(SchemaVersionMismatch, match=rf"{tmp_path}.*99.*{schema.SCHEMA_VERSION}"):
        schema.open_store(tmp_path)
    LevelDBStore(tmp_path).close()


def test_open_store_refuses_data_without_a_version(tmp_path: Path) -> None:
    """A database with keys but no version is refused, naming the directory."""
    with LevelDBStore(tmp_path) as store:
        put(store, b"hsomething", b"v")
    with pytest.raises(StorageError, match=str(tmp_path)):
        schema.open_store(tmp_path)


def test_open_store_reports_a_held_lock(tmp_path: Path) -> None:
    """open_store on a directory in use raises DataDirLocked."""
    with schema.open_store(tmp_path), pytest.raises(DataDirLocked):
        schema.open_store(tmp_path)
