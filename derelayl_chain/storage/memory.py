"""A key-value store in memory: the same contract as LevelDB, for tests and throwaway nodes."""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

from derelayl_chain.exceptions import StorageError
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch, prefix_upper_bound, require_bytes

_Snapshot = tuple[list[bytes], dict[bytes, bytes]]


class MemoryStore(KeyValueStore):
    """A sorted key list plus a dict, replaced as a whole by every write.

    A write builds new containers and swaps them in with one assignment, so a failed write
    changes nothing and an iteration in progress keeps reading the state it started from, as
    a LevelDB iterator does. The copy costs O(n) per batch, the same order as inserting into
    a sorted list; reads and scans stay O(log n + k).
    """

    def __init__(self) -> None:
        self._snapshot: _Snapshot = ([], {})
        self._write_lock = threading.Lock()
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or ``None`` when it is absent."""
        require_bytes(key, "key")
        return self._current()[1].get(key)

    def iterate(
        self, prefix: bytes, *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """The pairs under ``prefix`` in byte order; ``start`` is inclusive (see the protocol)."""
        require_bytes(prefix, "prefix")
        if start is not None:
            require_bytes(start, "start")
        keys, values = self._current()
        low, high = _index_range(keys, prefix, start, reverse)
        return _scan(keys, values, range(high - 1, low - 1, -1) if reverse else range(low, high))

    def write(self, batch: WriteBatch) -> None:
        """Apply the batch to copies, then publish them in one step (all or nothing)."""
        operations = batch.operations
        with self._write_lock:
            old_keys, old_values = self._current()
            keys, values = list(old_keys), dict(old_values)
            for key, value in operations:
                if value is None:
                    if values.pop(key, None) is not None:
                        del keys[bisect_left(keys, key)]
                else:
                    if key not in values:
                        insort(keys, key)
                    values[key] = value
            self._snapshot = (keys, values)

    def close(self) -> None:
        """Drop the contents; the store refuses any later use."""
        self._closed = True
        self._snapshot = ([], {})

    def __len__(self) -> int:
        return len(self._current()[0])

    def _current(self) -> _Snapshot:
        if self._closed:
            raise StorageError("the in-memory store is closed")
        return self._snapshot


def _index_range(
    keys: list[bytes], prefix: bytes, start: bytes | None, reverse: bool
) -> tuple[int, int]:
    """The half-open index range ``[low, high)`` of the keys a scan visits."""
    low = bisect_left(keys, prefix)
    upper = prefix_upper_bound(prefix)
    high = len(keys) if upper is None else bisect_left(keys, upper)
    if start is not None:
        if reverse:
            high = min(high, bisect_right(keys, start))
        else:
            low = max(low, bisect_left(keys, start))
    return low, max(low, high)


def _scan(
    keys: list[bytes], values: dict[bytes, bytes], indices: range
) -> Iterator[tuple[bytes, bytes]]:
    for index in indices:
        key = keys[index]
        yield key, values[key]
