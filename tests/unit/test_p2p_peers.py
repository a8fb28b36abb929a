"""Tests for the peer table (derelayl_chain/_p2p_peers.py): plain values, no network."""

from __future__ import annotations

import itertools

from derelayl_chain._p2p_peers import PeerTable, TableLimits, seed_retry_delays

SELF = "http://127.0.0.1:8600"
SEED = "http://127.0.0.1:8601"
LIMITS = TableLimits(max_peers=3, max_failures=2, ban_threshold=100, ban_seconds=60.0, max_banned=2)
NOW = 1000.0


def url(i: int) -> str:
    return f"http://127.0.0.1:{9000 + i}"


def table(seeds: tuple[str, ...] = ()) -> PeerTable:
    return PeerTable(LIMITS, seeds, SELF)


def test_seed_retry_delays_double_up_to_the_longest() -> None:
    """Waits between greetings of an unreached seed: 1, 2, 4, ... seconds, then the cap."""
    assert list(itertools.islice(seed_retry_delays(1.0, 30.0), 7)) == [1, 2, 4, 8, 16, 30, 30]
    assert list(itertools.islice(seed_retry_delays(5.0, 2.0), 2)) == [2.0, 2.0]


def test_admit_records_a_new_peer_once() -> None:
    """A URL is admitted once; admitting it again returns the same record, not new."""
    peers = table(seeds=(SEED,))
    peer, new = peers.admit(url(1), NOW)
    assert peer is not None and new and not peer.seed
    assert peers.admit(url(1), NOW) == (peer, False)
    seed, _ = peers.admit(SEED, NOW)
    assert seed is not None and seed.seed


def test_admit_refuses_own_urls_and_a_full_table() -> None:
    """This node's URLs are never admitted; a new peer is refused when the table is full."""
    peers = table()
    assert peers.admit(SELF, NOW) == (None, False)
    peers.note_own_url(url(0))
    assert peers.admit(url(0), NOW) == (None, False)
    for i in range(1, 4):
        assert peers.admit(url(i), NOW)[1]
    assert peers.admit(url(4), NOW) == (None, False)


def test_failures_forget_a_peer_after_the_limit_and_success_resets_them() -> None:
    """Consecutive failed requests forget a peer at the limit; a success in between resets."""
    peers = table()
    peer, _ = peers.admit(url(1), NOW)
    assert peer is not None
    assert not peers.record_failure(peer)
    peers.record_success(peer, NOW)
    assert peer.failures == 0 and peer.last_seen == NOW
    assert not peers.record_failure(peer)
    assert peers.record_failure(peer)
    assert peers.get(url(1)) is None


def test_points_ban_at_the_threshold_and_the_ban_expires() -> None:
    """Points add up to a ban (reported once); the banned URL is refused until the ban ends,
    then forgotten with its score."""
    peers = table()
    peer, _ = peers.admit(url(1), NOW)
    assert peer is not None
    assert not peers.penalise(peer, 50, NOW)
    assert peers.penalise(peer, 50, NOW)
    assert not peers.penalise(peer, 50, NOW)
    assert peers.is_banned(url(1), NOW) and peers.admit(url(1), NOW) == (None, False)
    assert not peers.forget(peer)  # a ban is kept until it ends
    assert peers.active_peers(NOW) == []
    later = NOW + LIMITS.ban_seconds
    assert not peers.is_banned(url(1), later)
    again, new = peers.admit(url(1), later)
    assert new and again is not None and again.score == 0


def test_only_the_latest_bans_are_remembered() -> None:
    """Beyond ``max_banned`` bans the ones ending first are let go."""
    peers = table()
    for i in range(3):
        peer, _ = peers.admit(url(i), NOW)
        assert peer is not None
        peers.penalise(peer, 100, NOW + i)
    assert [p["url"] for p in peers.summary(NOW)] == [url(1), url(2)]


def test_ungreeted_seeds_are_admitted_again_once_forgotten() -> None:
    """Seeds not yet greeted are listed (admitted again after being forgotten); greeted,
    banned and own-URL seeds are not."""
    seeds = (SEED, url(1), url(2), SELF)
    peers = table(seeds=seeds)
    assert [p.url for p in peers.ungreeted_seeds(NOW)] == [SEED, url(1), url(2)]
    first = peers.get(SEED)
    assert first is not None and peers.forget(first)
    greeted = peers.get(url(1))
    banned = peers.get(url(2))
    assert greeted is not None and banned is not None
    greeted.greeted = True
    peers.penalise(banned, 100, NOW)
    assert [p.url for p in peers.ungreeted_seeds(NOW)] == [SEED]
    assert peers.get(SEED) is not first


def test_reachable_urls_are_greeted_and_healthy() -> None:
    """Only URLs greeted by this node and without a failure since are passed on."""
    peers = table()
    for i in range(3):
        peers.admit(url(i), NOW)
    for i in (1, 2):
        peer = peers.get(url(i))
        assert peer is not None
        peer.greeted = True
    failing = peers.get(url(2))
    assert failing is not None
    peers.record_failure(failing)
    assert peers.reachable_urls(NOW) == [url(1)]
