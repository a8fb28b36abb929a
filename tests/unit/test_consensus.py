"""The pure proof-of-learning numbers: decay, requirement, retarget, emission, work."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from derelayl_chain.consensus import (
    PPM,
    block_emission,
    block_work,
    contribution_shares,
    effective_difficulty,
    median_time_past,
    next_difficulty,
    required_loss,
)
from derelayl_chain.genesis import ConsensusParams

PARAMS = ConsensusParams()


def test_median_time_past_uses_last_eleven() -> None:
    """Only the last 11 timestamps count, and the median is taken after sorting."""
    stamps = [1000] * 5 + [5, 9, 1, 7, 3, 11, 2, 8, 4, 10, 6]
    assert median_time_past(stamps) == 6


def test_median_time_past_of_even_count_takes_lower_middle() -> None:
    """With an even number of timestamps the lower of the two middle ones is used."""
    assert median_time_past([10, 20, 30, 40]) == 20


def test_effective_difficulty_is_full_at_zero_elapsed() -> None:
    """A block at its parent's timestamp must deliver the whole difficulty."""
    assert effective_difficulty(20_000, 0, 30_000) == 20_000


def test_effective_difficulty_decays_linearly() -> None:
    """Half the decay time halves the requirement."""
    assert effective_difficulty(20_000, 15_000, 30_000) == 10_000


def test_effective_difficulty_is_zero_after_decay() -> None:
    """After T_decay no improvement is required."""
    assert effective_difficulty(20_000, 30_000, 30_000) == 0
    assert effective_difficulty(20_000, 10**9, 30_000) == 0


def test_effective_difficulty_treats_negative_elapsed_as_zero() -> None:
    """A timestamp before the parent's cannot raise the requirement above d."""
    assert effective_difficulty(20_000, -5_000, 30_000) == 20_000


def test_required_loss_rounds_the_improvement_up() -> None:
    """loss_h <= loss_p - ceil(loss_p * d / 10^6): a fractional unit still counts."""
    assert required_loss(1_000_001, 1) == 1_000_001 - 2
    assert required_loss(1_000_000, 20_000) == 980_000


def test_required_loss_with_zero_difficulty_is_parent_loss() -> None:
    """With d_eff = 0 a block may keep the loss unchanged."""
    assert required_loss(123_456, 0) == 123_456


@given(st.integers(1, 10**8), st.integers(0, PPM))
def test_required_loss_never_exceeds_parent(parent: int, d_eff: int) -> None:
    """The required loss is never above the parent's, and the gap covers d_eff exactly."""
    limit = required_loss(parent, d_eff)
    assert limit <= parent
    assert (parent - limit) * PPM >= parent * d_eff


def test_no_retarget_between_windows() -> None:
    """Heights that are not multiples of W carry the parent's difficulty."""
    assert next_difficulty(PARAMS, 21, 20_000, 1) == 20_000


def test_retarget_raises_difficulty_when_blocks_come_fast() -> None:
    """Half the target span doubles the difficulty."""
    target = PARAMS.retarget_window * PARAMS.target_block_ms
    assert next_difficulty(PARAMS, 40, 20_000, target // 2) == 40_000


def test_retarget_lowers_difficulty_when_blocks_come_slowly() -> None:
    """Twice the target span halves the difficulty."""
    target = PARAMS.retarget_window * PARAMS.target_block_ms
    assert next_difficulty(PARAMS, 40, 20_000, target * 2) == 10_000


def test_retarget_step_is_clamped_to_factor_four() -> None:
    """A span 100 times too short raises the difficulty by 4 at most."""
    target = PARAMS.retarget_window * PARAMS.target_block_ms
    assert next_difficulty(PARAMS, 40, 20_000, target // 100) == 80_000
    assert next_difficulty(PARAMS, 40, 20_000, target * 100) == 5_000


def test_retarget_is_clamped_to_genesis_bounds() -> None:
    """The result stays within [min_difficulty, max_difficulty]."""
    target = PARAMS.retarget_window * PARAMS.target_block_ms
    assert next_difficulty(PARAMS, 40, PARAMS.max_difficulty, 1) == PARAMS.max_difficulty
    assert next_difficulty(PARAMS, 40, PARAMS.min_difficulty, target * 4) == PARAMS.min_difficulty


def test_emission_is_scaled_by_effective_difficulty() -> None:
    """A block that had to deliver half the difficulty earns half the emission."""
    assert block_emission(PARAMS, 5, 10_000, 20_000) == PARAMS.initial_emission // 2


def test_emission_is_zero_after_decay() -> None:
    """A zero-improvement block earns no emission."""
    assert block_emission(PARAMS, 5, 0, 20_000) == 0


def test_emission_halves_every_interval() -> None:
    """E_h = E_0 >> (h // halving_interval)."""
    h = PARAMS.halving_interval
    assert block_emission(PARAMS, 2 * h, 20_000, 20_000) == PARAMS.initial_emission >> 2


def test_work_counts_one_unit_beyond_effective_difficulty() -> None:
    """A zero-improvement block still adds work so it extends the chain."""
    assert block_work(0) == 1
    assert block_work(20_000) == 20_001


def test_contribution_shares_are_the_delivered_improvement() -> None:
    """Shares equal loss_p - loss_h, never negative."""
    assert contribution_shares(1_000, 900) == 100
    assert contribution_shares(1_000, 1_000) == 0
