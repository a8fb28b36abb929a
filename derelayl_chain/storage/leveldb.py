"""The on-disk store: LevelDB through plyvel, guarded by an exclusive lock on the data directory.

Layout of a data directory::

    <path>/node.lock    flock()ed for as long as a store is open; holds the owner's pid
    <path>/chaindata/   the LevelDB database

The lock is taken before the database is opened, so a second node on the same directory (in
another process, or the same one) fails at once with :class:`DataDirLocked` instead of waiting
on, or worse sharing, LevelDB's own lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel

from derelayl_chain.exceptions import DataDirLocked, StorageError
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch, prefix_upper_bound, require_bytes

LOCK_FILE_NAME = "node.lock"
DATABASE_DIR_NAME = "chaindata"
_WRITE_BUFFER_BYTES = 128 << 20
"""Deltas are megabytes each: a small memtable would be flushed and compacted every block or
two. Every flush writes the deltas again and starts compactions that rewrite them, so fewer,
larger flushes save disk traffic: catching up 200 large-model blocks ran at 44 blocks/s with
64 MiB, 50 with 128 MiB and 52 with 256 MiB. A full memtable and the one being flushed cost
up to twice this in memory, and a restart replays at most this much log. Values are
compressed before they are stored (zstd), so LevelDB's own Snappy is off."""


class LevelDBStore(KeyValueStore):
    """A :class:`KeyValueStore` in ``<path>/chaindata``; every write is synced to disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self.path}: {exc}") from exc
        self._lock_fd: int | None = acquire_lock(self.path)
        try:
            self._db: Any = plyvel.DB(
                str(self.path / DATABASE_DIR_NAME),
                create_if_missing=True,
                write_buffer_size=_WRITE_BUFFER_BYTES,
                compression=None,
            )
        except (plyvel.Error, OSError) as exc:
            release_lock(self._lock_fd)
            self._lock_fd = None
            raise StorageError(f"cannot open the database in {self.path}: {exc}") from exc

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or ``None`` when it is absent."""
        require_bytes(key, "key")
        value: bytes | None = self._open_db().get(key)
        return value

    def iterate(
        self, prefix: bytes, *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """The pairs under ``prefix`` in byte order; ``start`` is inclusive (see the protocol)."""
        require_bytes(prefix, "prefix")
        if start is not None:
            require_bytes(start, "start")
        bounds = _iterator_bounds(prefix, start, reverse)
        # Created now, not on the first next(): the scan sees the store as of this call.
        iterator = self._open_db().iterator(reverse=reverse, **bounds)
        return _scan(iterator, self.path, prefix if reverse else None)

    def write(self, batch: WriteBatch) -> None:
        """Apply the batch as one LevelDB write batch, synced before returning."""
        operations = batch.operations
        db = self._open_db()
        try:
            level_batch = db.write_batch(sync=True)
            for key, value in operations:
                if value is None:
                    level_batch.delete(key)
                else:
                    level_batch.put(key, value)
            level_batch.write()
        except plyvel.Error as exc:
            count = len(operations)
            raise StorageError(f"write of {count} operations to {self.path} failed: {exc}") from exc

    def close(self) -> None:
        """Close the database, then release the directory lock. Closing twice is fine."""
        if self._lock_fd is None:
            return
        try:
            self._db.close()
        finally:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def _open_db(self) -> Any:
        if self._lock_fd is None:
            raise StorageError(f"the store in {self.path} is closed")
        return self._db

    def __repr__(self) -> str:
        state = "closed" if self._lock_fd is None else "open"
        return f"LevelDBStore({str(self.path)!r}, {state})"


def acquire_lock(directory: Path) -> int:
    """Take the exclusive, non-blocking lock of ``directory``; the descriptor holds it.

    The lock belongs to the open file description, so it is released when the descriptor is
    closed or the process dies, even by SIGKILL: a crashed node never leaves a stale lock.
    """
    lock_path = directory / LOCK_FILE_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise DataDirLocked(
            f"data directory {directory} is already in use by another node{owner}"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot lock {lock_path}: {exc}") from exc
    _write_owner(fd)
    return fd


def release_lock(fd: int) -> None:
    """Give the lock up and close its descriptor."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_owner(fd: int) -> None:
    """Record our pid in the lock file, for the message a second node gets (best effort)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def _iterator_bounds(prefix: bytes, start: bytes | None, reverse: bool) -> dict[str, Any]:
    """plyvel ``iterator()`` bounds equivalent to a prefix scan from an inclusive ``start``.

    A reverse scan gets no lower bound: plyvel 1.5 yields nothing from a reverse iterator whose
    only key in range equals its ``start``, so the prefix is enforced by :func:`_scan` instead.
    """
    upper = prefix_upper_bound(prefix)
    if not reverse:
        low = prefix if start is None else max(prefix, start)
        return {"start": low, "stop": upper, "include_start": True, "include_stop": False}
    if start is not None and (upper is None or start < upper):
        return {"stop": start, "include_stop": True}
    return {"stop": upper, "include_stop": False}


def _scan(iterator: Any, path: Path, lower: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """The pairs of ``iterator``, stopping at the first key below ``lower`` (reverse scans)."""
    with iterator:
        try:
            for key, value in iterator:
                if lower is not None and key < lower:
                    return
                yield key, value
        except RuntimeError as exc:  # plyvel's word for "closed under the scan"
            raise StorageError(f"the store in {path} was closed during a scan") from exc
