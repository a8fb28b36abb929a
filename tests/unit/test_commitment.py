"""Tests for the LtHash set commitment (derelayl_chain/commitment.py)."""

from __future__ import annotations

import hashlib
from random import Random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.commitment import (
    EMPTY_LTHASH,
    LANES,
    LTHASH_BYTES,
    LtHashAccumulator,
    element_vector,
    sum_vectors,
)

elements = st.lists(st.binary(max_size=60), max_size=80)
"""Random element lists, long enough to span several batches of the batched sum."""


def digest_of(items: list[bytes]) -> bytes:
    """The set hash of ``items`` added one at a time to an empty accumulator."""
    accumulator = LtHashAccumulator()
    for item in items:
        accumulator.add(item)
    return accumulator.digest()


def test_empty_accumulator_digest_is_all_zero() -> None:
    """The empty set hashes to 2048 zero bytes."""
    assert LtHashAccumulator().digest() == EMPTY_LTHASH == bytes(LTHASH_BYTES)
    assert LTHASH_BYTES == 2 * LANES == 2048


def test_element_vector_is_shake256_of_the_tagged_element_as_little_endian_lanes() -> None:
    """The construction documented in docs/state-commitment.md, pinned byte for byte."""
    digest = hashlib.shake_256(b"drl-lthash\x00" + b"account").digest(LTHASH_BYTES)
    vector = element_vector(b"account")
    assert vector.shape == (LANES,)
    assert int(vector[0]) == int.from_bytes(digest[:2], "little")
    assert int(vector[-1]) == int.from_bytes(digest[-2:], "little")
    assert digest_of([b"account"]) == digest


def test_adding_is_lane_wise_addition_modulo_2_16() -> None:
    """Two elements' digest is the wrapped sum of their vectors, lane by lane."""
    first, second = element_vector(b"a").astype(np.uint32), element_vector(b"b").astype(np.uint32)
    expected = ((first + second) % 65536).astype("<u2").tobytes()
    assert digest_of([b"a", b"b"]) == expected


def test_remove_undoes_add() -> None:
    """Adding then removing an element returns to the previous digest."""
    accumulator = LtHashAccumulator(digest_of([b"x", b"y"]))
    before = accumulator.digest()
    accumulator.add(b"z")
    assert accumulator.digest() != before
    accumulator.remove(b"z")
    assert accumulator.digest() == before


def test_removing_from_the_empty_set_wraps_and_adding_back_restores_it() -> None:
    """Lanes wrap below zero, so remove-then-add of an absent element is also a no-op."""
    accumulator = LtHashAccumulator()
    accumulator.remove(b"ghost")
    assert accumulator.digest() != EMPTY_LTHASH
    accumulator.add(b"ghost")
    assert accumulator.digest() == EMPTY_LTHASH


def test_multiplicity_counts() -> None:
    """The hash is of a multiset: an element added twice differs from once."""
    assert digest_of([b"a", b"a"]) != digest_of([b"a"])


def test_different_sets_have_different_digests() -> None:
    """Replacing one element changes the digest."""
    assert digest_of([b"a", b"b"]) != digest_of([b"a", b"c"])


@given(elements, st.randoms(use_true_random=False))
def test_digest_is_independent_of_insertion_order(items: list[bytes], rng: Random) -> None:
    """Any permutation of the same elements gives the same digest."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    assert digest_of(shuffled) == digest_of(items)


@given(elements)
def test_add_many_equals_adding_one_at_a_time(items: list[bytes]) -> None:
    """The batched path gives exactly the sequential result, for any count of elements."""
    accumulator = LtHashAccumulator(digest_of([b"base"]))
    accumulator.add_many(items)
    assert accumulator.digest() == digest_of([b"base", *items])


@given(elements)
def test_remove_many_equals_removing_one_at_a_time(items: list[bytes]) -> None:
    """Batched removal inverts batched addition exactly."""
    start = digest_of([b"base", *items])
    accumulator = LtHashAccumulator(start)
    accumulator.remove_many(items)
    assert accumulator.digest() == digest_of([b"base"])


def test_sum_vectors_of_nothing_is_zero() -> None:
    """An empty batch leaves the set hash unchanged."""
    assert not sum_vectors([]).any()
    accumulator = LtHashAccumulator(digest_of([b"a"]))
    accumulator.add_many([])
    accumulator.remove_many([])
    assert accumulator.digest() == digest_of([b"a"])


def test_accumulator_copies_its_starting_state() -> None:
    """Working on an accumulator never changes the bytes it started from or another copy."""
    start = digest_of([b"a"])
    saved = bytes(start)
    first, second = LtHashAccumulator(start), LtHashAccumulator(start)
    first.add(b"b")
    assert start == saved
    assert second.digest() == saved


@pytest.mark.parametrize("size", [0, 2047, 2049])
def test_state_of_the_wrong_size_is_refused(size: int) -> None:
    """A stored set hash of the wrong length is a programming or storage error."""
    with pytest.raises(ValueError, match=f"must be {LTHASH_BYTES} bytes, got {size}"):
        LtHashAccumulator(bytes(size))
