"""A block's data written beside its validation: the delta compressed, then the batch synced.

Writing a large block's delta durably (compress, then fdatasync megabytes) costs about as much
as evaluating it, so it runs on a helper thread while the importing thread validates. zstd,
LevelDB and the file system release the GIL.
"""

from __future__ import annotations

import threading

from derelayl_chain.learning.delta import compress
from derelayl_chain.storage import schema
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch


class BackgroundWrite:
    """Compress ``delta`` at once; write it with a batch once :meth:`commit` supplies one.

    Compression starts before the block's body has been checked, because it needs nothing from
    the checks; nothing is written unless :meth:`commit` is called, and :meth:`cancel` ends the
    thread without writing.
    """

    def __init__(self, store: KeyValueStore, block_hash: bytes, delta: bytes) -> None:
        self.error: BaseException | None = None
        self._batch: WriteBatch | None = None
        self._go = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(store, block_hash, delta), name="block-write"
        )
        self._thread.start()

    def _run(self, store: KeyValueStore, block_hash: bytes, delta: bytes) -> None:
        try:
            compressed = compress(delta)
            self._go.wait()
            if self._batch is None:
                return
            self._batch.put(schema.delta_key(block_hash), compressed)
            store.write(self._batch)
        except BaseException as exc:  # handed to the importing thread by wait()
            self.error = exc

    def commit(self, batch: WriteBatch) -> None:
        """Write ``batch`` plus the compressed delta, in that one synced write."""
        self._batch = batch
        self._go.set()

    def cancel(self) -> None:
        """Write nothing; return once the thread has ended."""
        self._go.set()
        self._thread.join()

    def wait(self) -> None:
        """Return once the write is done; raise what it raised."""
        self._thread.join()
        if self.error is not None:
            raise self.error
