"""Proof of learning: the block validity rules, difficulty, work and rewards.

Every function here is pure: values in, values out, an exception for an invalid block. The
checks run cheapest first, so a block that fails early costs its sender nothing of ours but a
hash and a signature check; only a block that passed everything else gets its delta applied
and evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from derelayl_chain.block import BLOCK_VERSION, Block, BlockHeader, transactions_root
from derelayl_chain.exceptions import (
    BlockBodyMismatch,
    BlockCommitmentError,
    BlockDeltaError,
    BlockFromFuture,
    BlockLossError,
    BlockRewardError,
    BlockStructureError,
    BlockTimestampError,
    InsufficientImprovement,
    InvalidBlock,
    InvalidDelta,
    InvalidSignature,
    InvalidTransaction,
)
from derelayl_chain.genesis import ConsensusParams, GenesisConfig
from derelayl_chain.learning.delta import decode_delta, delta_hash
from derelayl_chain.learning.evaluate import Evaluation, evaluate
from derelayl_chain.learning.model import weight_spec
from derelayl_chain.learning.weights import apply_delta, model_hash_in_background
from derelayl_chain.state import (
    AccountReader,
    LedgerGlobals,
    StateTransition,
    apply_block_ledger,
)
from derelayl_chain.transaction import verify_transaction

PPM = 1_000_000
MEDIAN_TIME_SPAN = 11
MAX_RETARGET_FACTOR = 4

Weights = dict[str, torch.Tensor]


# --- numbers ---------------------------------------------------------------------------------


def median_time_past(timestamps: Sequence[int]) -> int:
    """Median of the last :data:`MEDIAN_TIME_SPAN` timestamps (the lower one if even)."""
    recent = sorted(timestamps[-MEDIAN_TIME_SPAN:])
    return recent[(len(recent) - 1) // 2]


def effective_difficulty(difficulty: int, elapsed_ms: int, decay_ms: int) -> int:
    """``d * max(0, T_decay - elapsed) / T_decay``, rounded down: the requirement decays."""
    remaining = max(0, decay_ms - max(0, elapsed_ms))
    return difficulty * remaining // decay_ms


def required_loss(parent_loss: int, d_eff: int) -> int:
    """The highest loss a child may claim: ``loss_p - ceil(loss_p * d_eff / 10^6)``."""
    return parent_loss - (-(-parent_loss * d_eff // PPM))


def next_difficulty(
    params: ConsensusParams, height: int, parent_difficulty: int, span_ms: int | None
) -> int:
    """The difficulty a block at ``height`` must carry.

    Every ``retarget_window`` blocks it is scaled by target span / actual span, where
    ``span_ms`` is the time the last window took; the step is clamped to a factor of 4 and the
    result to the genesis bounds, as in Bitcoin's retarget.
    """
    window = params.retarget_window
    if height % window != 0 or span_ms is None:
        return parent_difficulty
    target = window * params.target_block_ms
    actual = min(max(span_ms, target // MAX_RETARGET_FACTOR), target * MAX_RETARGET_FACTOR)
    scaled = parent_difficulty * target // max(actual, 1)
    return min(max(scaled, params.min_difficulty), params.max_difficulty)


def block_emission(params: ConsensusParams, height: int, d_eff: int, difficulty: int) -> int:
    """``E_0 >> (h // halving)`` scaled by ``d_eff / d_h``: no improvement, no emission."""
    base = params.initial_emission >> min(height // params.halving_interval, 255)
    return base * d_eff // difficulty if difficulty else 0


def block_work(d_eff: int) -> int:
    """Fork-choice work of a block: the improvement it *had* to deliver, plus one.

    The extra unit makes a block that needed no improvement (after T_decay) still extend its
    chain, so the chain stays live for transactions once the model has converged.
    """
    return d_eff + 1


def contribution_shares(parent_loss: int, loss: int) -> int:
    """Shares earned: the loss improvement delivered, in fixed-point loss units."""
    return max(0, parent_loss - loss)


# --- validation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParentContext:
    """What the chain knows about the parent that the rules need."""

    header: BlockHeader
    ledger: LedgerGlobals
    """Ledger globals after the parent."""
    recent_timestamps: tuple[int, ...]
    """Timestamps of up to the last 11 blocks ending with the parent."""
    expected_difficulty: int
    """The difficulty the child must carry (computed by the chain from the retarget rule)."""


@dataclass(frozen=True, slots=True)
class ValidatedBlock:
    """A block that passed every rule, with everything computed while checking it."""

    block: Block
    transition: StateTransition
    weights: Weights
    evaluation: Evaluation
    effective_difficulty: int
    emission: int
    shares: int

    @property
    def work(self) -> int:
        """Fork-choice work: the improvement the block *had* to deliver (plus one)."""
        return block_work(self.effective_difficulty)


def check_header(
    header: BlockHeader, parent: ParentContext, genesis: GenesisConfig, now_ms: int
) -> int:
    """Header-only rules (1-3 and the improvement claim); return the effective difficulty."""
    p = parent.header
    if header.version != BLOCK_VERSION:
        raise BlockStructureError(f"block version {header.version}, expected {BLOCK_VERSION}")
    if header.chain_id != genesis.chain_id:
        raise BlockStructureError(f"block for chain {header.chain_id}, this is {genesis.chain_id}")
    if header.parent != p.hash:
        raise BlockStructureError(f"block parent {header.parent.hex()} is not {p.hash.hex()}")
    if header.height != p.height + 1:
        raise BlockStructureError(f"block height {header.height}, expected {p.height + 1}")
    mtp = median_time_past(parent.recent_timestamps)
    if header.timestamp_ms <= mtp:
        raise BlockTimestampError(
            f"timestamp {header.timestamp_ms} is not after the median time past {mtp}"
        )
    if header.timestamp_ms > now_ms + genesis.params.max_future_ms:
        raise BlockFromFuture(
            f"timestamp {header.timestamp_ms} is {header.timestamp_ms - now_ms} ms in the future"
        )
    if header.difficulty != parent.expected_difficulty:
        raise BlockStructureError(
            f"difficulty {header.difficulty}, expected {parent.expected_difficulty}"
        )
    d_eff = effective_difficulty(
        header.difficulty, header.timestamp_ms - p.timestamp_ms, genesis.params.decay_ms
    )
    limit = required_loss(p.claimed_loss, d_eff)
    if header.claimed_loss > limit:
        raise InsufficientImprovement(
            f"claimed loss {header.claimed_loss} does not improve on the parent's "
            f"{p.claimed_loss} by the required {d_eff} ppm (must be <= {limit})"
        )
    header.verify_signature()
    return d_eff


def check_body(block: Block, genesis: GenesisConfig) -> Weights:
    """Body commitments and the delta's form (rules 3-4); return the decoded delta."""
    header = block.header
    if transactions_root(block.transactions) != header.tx_root:
        raise BlockBodyMismatch("transactions root does not match the block's transactions")
    if delta_hash(block.delta) != header.delta_hash:
        raise BlockBodyMismatch("delta hash does not match the block's delta")
    try:
        return decode_delta(block.delta, weight_spec(genesis.task), genesis.params.max_delta_bytes)
    except InvalidDelta as exc:
        raise BlockDeltaError(f"bad delta: {exc}") from exc


def check_ledger(
    block: Block,
    parent: ParentContext,
    accounts: AccountReader,
    genesis: GenesisConfig,
    d_eff: int,
) -> tuple[StateTransition, int, int]:
    """Transactions against the state, the protocol's rewards, the state root (rule 5)."""
    header = block.header
    for index, tx in enumerate(block.transactions):
        try:
            verify_transaction(tx, genesis.chain_id)
        except (InvalidTransaction, InvalidSignature) as exc:
            raise InvalidBlock(f"transaction {index} is invalid: {exc}") from exc
    emission = block_emission(genesis.params, header.height, d_eff, header.difficulty)
    shares = contribution_shares(parent.header.claimed_loss, header.claimed_loss)
    try:
        transition = apply_block_ledger(
            accounts, parent.ledger, block.transactions, header.height,
            genesis.params.ledger, header.reward_to, emission, shares,
        )  # fmt: skip
    except InvalidTransaction as exc:
        raise InvalidBlock(f"block transactions do not apply: {exc}") from exc
    if header.reward != emission + transition.fees:
        raise BlockRewardError(
            f"block claims reward {header.reward}, protocol computes "
            f"{emission} emission + {transition.fees} fees"
        )
    if header.state_root != transition.globals.state_root:
        raise BlockCommitmentError("state root does not match the ledger after the block")
    return transition, emission, shares


def check_learning(
    header: BlockHeader, parent_weights: Weights, delta: Weights, genesis: GenesisConfig
) -> tuple[Weights, Evaluation]:
    """Model hash and the evaluated loss against the claim (rules 6-7).

    The hash is computed beside the evaluation; a wrong hash is still the error reported.
    """
    weights = apply_delta(parent_weights, delta)
    pending_hash = model_hash_in_background(weights)
    result = evaluate(genesis.task, weights)
    if pending_hash.result() != header.model_hash:
        raise BlockCommitmentError("model hash does not match parent weights plus delta")
    if abs(result.loss - header.claimed_loss) > genesis.params.loss_tolerance:
        raise BlockLossError(
            f"claimed loss {header.claimed_loss} but evaluation gives {result.loss} "
            f"(tolerance {genesis.params.loss_tolerance})"
        )
    return weights, result


def validate_block(
    block: Block,
    parent: ParentContext,
    accounts: AccountReader,
    load_parent_weights: Callable[[], Weights],
    genesis: GenesisConfig,
    now_ms: int,
) -> ValidatedBlock:
    """Every rule of DESIGN section 3, cheapest first; raise on the first failure."""
    d_eff = check_header(block.header, parent, genesis, now_ms)
    delta = check_body(block, genesis)
    transition, emission, shares = check_ledger(block, parent, accounts, genesis, d_eff)
    weights, result = check_learning(block.header, load_parent_weights(), delta, genesis)
    return ValidatedBlock(block, transition, weights, result, d_eff, emission, shares)
