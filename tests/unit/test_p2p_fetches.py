"""Tests for the memory of fetched and offered hashes (derelayl_chain/_p2p_fetches.py)."""

from __future__ import annotations

from derelayl_chain._p2p_fetches import FetchTracker

NOW = 1000.0
H1, H2, H3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def test_a_hash_is_claimed_once_while_in_flight() -> None:
    """A hash being fetched is not claimed again, even with ``again``."""
    fetches = FetchTracker(capacity=8, recent_seconds=60.0)
    assert fetches.claim(H1, NOW)
    assert not fetches.claim(H1, NOW)
    assert not fetches.claim(H1, NOW, again=True)


def test_a_settled_hash_is_not_fetched_again_soon_unless_asked() -> None:
    """After a fetch, announcements of the hash are ignored for ``recent_seconds``; a
    catch-up (``again``) or a failed fetch (``retry``) may fetch it again at once."""
    fetches = FetchTracker(capacity=8, recent_seconds=60.0)
    assert fetches.claim(H1, NOW)
    fetches.settle(H1, retry=False)
    assert not fetches.claim(H1, NOW + 59)
    assert fetches.claim(H1, NOW + 59, again=True)
    fetches.settle(H1, retry=True)
    assert fetches.claim(H1, NOW + 59)
    fetches.settle(H1, retry=False)
    assert fetches.claim(H1, NOW + 60 + 59)


def test_requested_hashes_are_remembered_up_to_the_capacity() -> None:
    """The oldest requested hash is forgotten beyond the capacity."""
    fetches = FetchTracker(capacity=2, recent_seconds=60.0)
    for item in (H1, H2, H3):
        assert fetches.claim(item, NOW)
        fetches.settle(item, retry=False)
    assert fetches.claim(H1, NOW)
    assert not fetches.claim(H3, NOW)


def test_a_hash_is_offered_once_unless_again() -> None:
    """A hash offered lately is not offered again, except when asked to (``again``)."""
    fetches = FetchTracker(capacity=2, recent_seconds=60.0)
    assert fetches.first_offer(H1)
    assert not fetches.first_offer(H1)
    assert fetches.first_offer(H1, again=True)
    assert fetches.first_offer(H2) and fetches.first_offer(H3)
    assert fetches.first_offer(H1)  # pushed out by the capacity
