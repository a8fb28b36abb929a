"""The peer table: which peers a node knows, their health, misbehaviour points and bans.

Bookkeeping only: no I/O, no event loop, no logging, no clock of its own. The peer network
(``p2p.py``) reports what happened (a request failed or succeeded, a peer misbehaved) together
with the current time, and acts on what the table answers (a peer was forgotten, or banned).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PENALTY_INVALID_BLOCK = 100
PENALTY_INVALID_TRANSACTION = 20
PENALTY_UNDECODABLE = 50
PENALTY_UNLINKED_HEADERS = 50


@dataclass(slots=True)
class Peer:
    """What this node knows about one peer."""

    url: str
    seed: bool = False
    height: int = 0
    """Best height the peer reported."""
    synced_height: int = -1
    """Reported height a catch-up with this peer already went for."""
    score: int = 0
    """Misbehaviour points; a ban at the table's threshold."""
    failures: int = 0
    """Consecutive failed requests (health, not misbehaviour)."""
    last_seen: float = 0.0
    greeted: bool = False
    """A hello of ours was answered: the URL is reachable and on our network."""
    banned_until: float = 0.0


@dataclass(frozen=True, slots=True)
class TableLimits:
    """How many peers are kept, and when one is forgotten or banned."""

    max_peers: int
    """Peers kept at once, banned ones not counted."""
    max_failures: int
    """Consecutive failed requests after which a peer is forgotten."""
    ban_threshold: int
    """Misbehaviour points at which a peer is banned."""
    ban_seconds: float
    max_banned: int
    """Banned peers remembered at once; the ones whose ban ends first are let go beyond it."""


class PeerTable:
    """Known peers by URL; a banned peer stays (refused) until its ban ends."""

    def __init__(self, limits: TableLimits, seeds: Sequence[str], own_url: str) -> None:
        self.limits = limits
        self.seeds = tuple(seeds)
        self._peers: dict[str, Peer] = {}
        self._own_urls = {own_url}
        """URLs that turned out to reach this node itself."""

    # --- questions -------------------------------------------------------------------------

    def get(self, url: str) -> Peer | None:
        return self._peers.get(url)

    def is_banned(self, url: str, now: float) -> bool:
        self.expire_bans(now)
        peer = self._peers.get(url)
        return peer is not None and bool(peer.banned_until)

    def active_peers(self, now: float) -> list[Peer]:
        """Every peer not banned, greeted or not."""
        self.expire_bans(now)
        return [peer for peer in self._peers.values() if not peer.banned_until]

    def greeted_peers(self, now: float) -> list[Peer]:
        """Active peers whose URL answered one of our hellos."""
        return [peer for peer in self.active_peers(now) if peer.greeted]

    def reachable_urls(self, now: float) -> list[str]:
        """URLs worth passing on to others: greeted by us and healthy."""
        return [peer.url for peer in self.greeted_peers(now) if not peer.failures]

    def ungreeted_seeds(self, now: float) -> list[Peer]:
        """Seeds still to be greeted, admitted again if they were forgotten; banned seeds, seeds
        that are this node and seeds that find the table full are left out."""
        found = []
        for url in self.seeds:
            peer, _ = self.admit(url, now)
            if peer is not None and not peer.greeted:
                found.append(peer)
        return found

    def summary(self, now: float) -> list[dict[str, object]]:
        """Every peer, banned ones included, as the API shows them (times in ms)."""
        self.expire_bans(now)
        return [
            {
                "url": peer.url,
                "height": peer.height,
                "score": peer.score,
                "banned_until": _ms(peer.banned_until),
                "last_seen": _ms(peer.last_seen),
                "seed": peer.seed,
                "failures": peer.failures,
            }
            for peer in self._peers.values()
        ]

    # --- changes ---------------------------------------------------------------------------

    def note_own_url(self, url: str) -> None:
        """``url`` turned out to reach this node itself: never admit it again."""
        self._own_urls.add(url)

    def admit(self, url: str, now: float) -> tuple[Peer | None, bool]:
        """The peer record for ``url`` and whether it is new; None for this node's own URLs, a
        banned URL, or a new one while the table is full."""
        if url in self._own_urls or self.is_banned(url, now):
            return None, False
        peer = self._peers.get(url)
        if peer is not None:
            return peer, False
        if len(self.active_peers(now)) >= self.limits.max_peers:
            return None, False
        peer = Peer(url, seed=url in self.seeds)
        self._peers[url] = peer
        return peer, True

    def forget(self, peer: Peer) -> bool:
        """Drop a peer that is not banned (a ban is kept until it ends); whether it was dropped."""
        if peer.banned_until or self._peers.get(peer.url) is not peer:
            return False
        del self._peers[peer.url]
        return True

    def record_success(self, peer: Peer, now: float) -> None:
        peer.failures, peer.last_seen = 0, now

    def record_failure(self, peer: Peer) -> bool:
        """Count a failed request; True when this forgot the peer (too many in a row)."""
        peer.failures += 1
        if peer.failures < self.limits.max_failures:
            return False
        return self.forget(peer)

    def penalise(self, peer: Peer, points: int, now: float) -> bool:
        """Add misbehaviour points; True when they just got the peer banned."""
        peer.score += points
        if peer.score < self.limits.ban_threshold or peer.banned_until:
            return False
        peer.banned_until = now + self.limits.ban_seconds
        banned = sorted((p for p in self._peers.values() if p.banned_until), key=_ban_end)
        for old in banned[: max(0, len(banned) - self.limits.max_banned)]:
            del self._peers[old.url]
        return True

    def expire_bans(self, now: float) -> None:
        """Forget banned peers whose ban has ended: they start again from nothing."""
        for peer in list(self._peers.values()):
            if peer.banned_until and peer.banned_until <= now:
                del self._peers[peer.url]


def seed_retry_delays(first: float, longest: float) -> Iterator[float]:
    """Waits between greetings of an unreached seed: ``first``, doubling, capped at ``longest``."""
    delay = min(first, longest)
    while True:
        yield delay
        delay = min(2 * delay, longest)


def _ms(seconds: float) -> int | None:
    return int(seconds * 1000) if seconds else None


def _ban_end(peer: Peer) -> float:
    return peer.banned_until
