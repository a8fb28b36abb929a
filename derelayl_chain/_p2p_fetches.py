"""Which block and transaction hashes a node is fetching from its peers, or offered to them.

Every peer announces the same new block, so without this a node would download it once per
peer, and pass each one on again. Bookkeeping only (no I/O, no clock of its own): the peer
network (``p2p.py``) claims a hash before fetching it, settles the claim afterwards, and asks
before offering a hash whether it was offered already. Both memories are bounded.
"""

from __future__ import annotations

from collections import OrderedDict


class FetchTracker:
    """Hashes in flight, hashes requested lately, and hashes offered to the peers lately."""

    def __init__(self, capacity: int, recent_seconds: float) -> None:
        self.capacity = capacity
        """How many requested (and, separately, offered) hashes are remembered."""
        self.recent_seconds = recent_seconds
        """How long a requested hash is not requested again on a mere announcement."""
        self._requested: OrderedDict[bytes, float] = OrderedDict()
        self._in_flight: set[bytes] = set()
        self._offered: OrderedDict[bytes, None] = OrderedDict()

    def claim(self, item_hash: bytes, now: float, *, again: bool = False) -> bool:
        """Whether to fetch ``item_hash`` now: not in flight, and (unless ``again``) not
        requested in the last ``recent_seconds``. Every claim must be :meth:`settle`-d."""
        claimed_at = self._requested.get(item_hash)
        recent = claimed_at is not None and now - claimed_at < self.recent_seconds
        if item_hash in self._in_flight or (recent and not again):
            return False
        self._in_flight.add(item_hash)
        self._requested[item_hash] = now
        self._requested.move_to_end(item_hash)
        while len(self._requested) > self.capacity:
            self._requested.popitem(last=False)
        return True

    def settle(self, item_hash: bytes, *, retry: bool) -> None:
        """End a claim; with ``retry`` the next announcement of the hash may fetch it again."""
        self._in_flight.discard(item_hash)
        if retry:
            self._requested.pop(item_hash, None)

    def first_offer(self, item_hash: bytes, *, again: bool = False) -> bool:
        """Whether to offer ``item_hash`` to the peers: not offered lately, or ``again``. The
        hash counts as offered from now on."""
        if item_hash in self._offered and not again:
            return False
        self._offered[item_hash] = None
        self._offered.move_to_end(item_hash)
        while len(self._offered) > self.capacity:
            self._offered.popitem(last=False)
        return True
