"""An incremental, order-independent hash of the set of accounts (LtHash).

Each account maps to a vector of 1024 16-bit lanes drawn from SHAKE-256 of its encoding; the
set's hash is the lane-wise sum modulo 2^16. Adding or removing one account costs one SHAKE and
one vector addition, whatever the number of accounts, so a block's state commitment is updated
in time proportional to the accounts it changes. With 1024 lanes of 16 bits the construction's
security rests on a lattice problem (short vectors in dimension 1024), far beyond what a plain
modular sum of 256-bit hashes offers against Wagner-style generalised-birthday attacks.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

LANES = 1024
LTHASH_BYTES = LANES * 2
EMPTY_LTHASH = bytes(LTHASH_BYTES)

_BATCH = 32
"""Elements summed per numpy call by :meth:`LtHashAccumulator.add_many` (64 KiB of lanes)."""

LaneVector = npt.NDArray[np.uint16]


def element_vector(element: bytes) -> LaneVector:
    """The lane vector of one set element."""
    return np.frombuffer(_element_digest(element), dtype="<u2")


@functools.lru_cache(maxsize=16_384)
def _element_digest(element: bytes) -> bytes:
    # Cached: the version of an account a block adds is the one a later block removes, so
    # recently touched accounts are hashed once instead of twice (at most 32 MiB of digests).
    return hashlib.shake_256(b"drl-lthash\x00" + element).digest(LTHASH_BYTES)


def clear_digest_cache() -> None:
    """Forget cached element digests (benchmarks measure the uncached cost)."""
    _element_digest.cache_clear()


def sum_vectors(elements: Sequence[bytes]) -> LaneVector:
    """The lane-wise sum of many elements' vectors, a batch at a time.

    One numpy call per batch rather than per element: a block's commitment update is dominated
    by per-call overhead otherwise.
    """
    total = np.zeros(LANES, dtype=np.uint16)
    for first in range(0, len(elements), _BATCH):
        batch = b"".join([_element_digest(e) for e in elements[first : first + _BATCH]])
        lanes = np.frombuffer(batch, dtype="<u2").reshape(-1, LANES)
        total += lanes.sum(axis=0, dtype=np.uint16)
    return total


class LtHashAccumulator:
    """A mutable working copy of a set hash; callers keep the immutable bytes form."""

    __slots__ = ("_lanes",)

    def __init__(self, state: bytes = EMPTY_LTHASH) -> None:
        if len(state) != LTHASH_BYTES:
            raise ValueError(f"LtHash state must be {LTHASH_BYTES} bytes, got {len(state)}")
        self._lanes = np.frombuffer(state, dtype="<u2").copy()

    def add(self, element: bytes) -> None:
        self._lanes += element_vector(element)

    def remove(self, element: bytes) -> None:
        self._lanes -= element_vector(element)

    def add_many(self, elements: Sequence[bytes]) -> None:
        """Add every element; the same result as :meth:`add` one at a time, faster."""
        self._lanes += sum_vectors(elements)

    def remove_many(self, elements: Sequence[bytes]) -> None:
        """Remove every element; the same result as :meth:`remove` one at a time, faster."""
        self._lanes -= sum_vectors(elements)

    def digest(self) -> bytes:
        """The state as bytes (what is stored and hashed into the state root)."""
        return self._lanes.astype("<u2").tobytes()
