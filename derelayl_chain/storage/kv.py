"""The key-value protocol every store implements, and the write batch that is its only writer.

The chain never writes a key on its own: it collects every change of one step (accept, connect,
disconnect) into a :class:`WriteBatch` and hands it to :meth:`KeyValueStore.write`, which applies
it all or not at all. A crash therefore leaves the state before or after a step, never between.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Protocol, Self

Operation = tuple[bytes, bytes | None]
"""One change: ``(key, value)`` to put, or ``(key, None)`` to delete."""


def require_bytes(obj: object, what: str) -> bytes:
    """``obj`` itself if it is ``bytes``; anything mutable or not bytes is refused.

    A ``bytearray`` stored by reference could change after the write, so only ``bytes`` pass.
    """
    if not isinstance(obj, bytes):
        raise TypeError(f"{what} must be bytes, got {type(obj).__name__}")
    return obj


class WriteBatch:
    """An ordered list of puts and deletes applied atomically by :meth:`KeyValueStore.write`.

    Operations are applied in the order they were added, so a later operation on a key wins
    over an earlier one in the same batch.
    """

    __slots__ = ("_operations",)

    def __init__(self) -> None:
        self._operations: list[Operation] = []

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value`` (an empty value is a value, not a delete)."""
        self._operations.append((require_bytes(key, "key"), require_bytes(value, "value")))

    def delete(self, key: bytes) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        self._operations.append((require_bytes(key, "key"), None))

    @property
    def operations(self) -> Sequence[Operation]:
        """The operations in the order they apply (a copy the caller cannot change the batch by)."""
        return tuple(self._operations)

    def __len__(self) -> int:
        return len(self._operations)

    def __repr__(self) -> str:
        return f"WriteBatch({len(self._operations)} operations)"


class KeyValueStore(Protocol):
    """Byte keys to byte values, scanned in byte order, written one atomic batch at a time."""

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or ``None`` when it is absent."""
        ...

    def iterate(
        self, prefix: bytes, *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """The ``(key, value)`` pairs whose key starts with ``prefix``, in byte order.

        Ascending, or descending when ``reverse``. ``start`` is the first key to include in the
        direction of travel: a lower bound going up, an upper bound going down, inclusive either
        way. The pairs are those of the store when the call was made; later writes do not show.
        """
        ...

    def write(self, batch: WriteBatch) -> None:
        """Apply every operation of ``batch``, or none of them if it fails; durable on return."""
        ...

    def close(self) -> None:
        """Release the store; further calls raise :class:`StorageError`. Closing twice is fine."""
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``prefix``.

    ``None`` when there is none (the empty prefix, or one made only of 0xff bytes).
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))
