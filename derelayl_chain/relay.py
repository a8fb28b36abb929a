"""One relay step as a library function: train on local data, build and sign the next block.

The miner and the tests share this code. A candidate is trained from the tip's weights; its
delta is serialised canonically and re-applied, so the weights the block commits to are exactly
the ones every validator will compute. The block is timestamped at the earliest moment its
improvement meets the time-decayed difficulty, and it is returned only if the chain's own full
validation accepts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from derelayl_chain.block import BLOCK_VERSION, Block, BlockHeader, transactions_root
from derelayl_chain.chain import Chain
from derelayl_chain.consensus import (
    PPM,
    Weights,
    block_emission,
    contribution_shares,
    effective_difficulty,
    median_time_past,
    required_loss,
)
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import InvalidBlock, InvalidSignature, InvalidTransaction
from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.delta import decode_delta, delta_hash, encode_delta, zero_delta
from derelayl_chain.learning.evaluate import Evaluation, evaluate
from derelayl_chain.learning.model import weight_spec
from derelayl_chain.learning.train import TrainingConfig, train
from derelayl_chain.learning.weights import apply_delta, model_hash, subtract_weights
from derelayl_chain.state import (
    Account,
    LedgerUpdate,
    apply_rewards,
    apply_transaction,
    begin_update,
)
from derelayl_chain.transaction import Transaction, verify_transaction


@dataclass(frozen=True, slots=True)
class Candidate:
    """A trained step: the delta on ``parent`` and what it evaluates to."""

    parent: bytes
    delta: bytes
    """Canonical safetensors bytes."""
    weights: Weights
    """Parent weights plus the decoded delta: exactly what validators will compute."""
    evaluation: Evaluation


def train_candidate(chain: Chain, data: Dataset, config: TrainingConfig) -> Candidate:
    """Train from the tip's weights on ``data`` and evaluate the result."""
    tip = chain.tip
    parent_weights = chain.weights_at(tip.hash)
    trained = train(chain.genesis.task, parent_weights, data, config)
    return candidate_from_delta(chain, tip.hash, subtract_weights(trained, parent_weights))


def candidate_from_delta(chain: Chain, parent: bytes, delta: Weights) -> Candidate:
    """Serialise ``delta`` canonically and evaluate the weights it really produces."""
    spec = weight_spec(chain.genesis.task)
    encoded = encode_delta(delta)
    exact = decode_delta(encoded, spec, chain.params.max_delta_bytes)
    weights = apply_delta(chain.weights_at(parent), exact)
    return Candidate(parent, encoded, weights, evaluate(chain.genesis.task, weights))


def empty_candidate(chain: Chain) -> Candidate:
    """A zero delta: valid once the required improvement has decayed to nothing."""
    return candidate_from_delta(chain, chain.tip.hash, zero_delta(chain.genesis.task))


def earliest_timestamp(chain: Chain, loss: int) -> int | None:
    """The first timestamp at which a child of the tip claiming ``loss`` would be valid.

    ``None`` when the loss is worse than the parent's, which no amount of waiting fixes.
    """
    parent = chain.tip.header
    context = chain.parent_context(parent.hash)
    floor = median_time_past(context.recent_timestamps) + 1
    if loss > parent.claimed_loss:
        return None
    decay = chain.params.decay_ms
    difficulty = context.expected_difficulty
    low, high = 0, decay  # elapsed ms; at ``decay`` the requirement is zero
    while low < high:
        middle = (low + high) // 2
        d_eff = effective_difficulty(difficulty, middle, decay)
        if loss <= required_loss(parent.claimed_loss, d_eff):
            high = middle
        else:
            low = middle + 1
    return max(parent.timestamp_ms + low, floor)


def improvement_ppm(parent_loss: int, loss: int) -> int:
    """Relative improvement of ``loss`` over ``parent_loss`` in parts per million."""
    return (parent_loss - loss) * PPM // parent_loss if parent_loss else 0


def build_block(
    chain: Chain,
    key: KeyPair,
    candidate: Candidate,
    timestamp_ms: int,
    transactions: Sequence[Transaction] = (),
    reward_to: bytes | None = None,
) -> Block:
    """Build and sign a child of the tip without validating it.

    Transactions that do not apply on the tip's ledger are left out, in order. The reward goes
    to ``reward_to``, by default the proposer's own account.
    """
    parent = chain.tip
    if candidate.parent != parent.hash:
        raise InvalidBlock("candidate was trained on a block that is no longer the tip")
    context = chain.parent_context(parent.hash)
    height = parent.height + 1
    d_eff = effective_difficulty(
        context.expected_difficulty,
        timestamp_ms - parent.header.timestamp_ms,
        chain.params.decay_ms,
    )
    update = begin_update(chain, context.ledger)
    included = _select_applicable(chain, update, transactions, height)
    emission = block_emission(chain.params, height, d_eff, context.expected_difficulty)
    reward_account = reward_to if reward_to is not None else key.account
    loss = candidate.evaluation.loss
    apply_rewards(
        update, reward_account, emission, contribution_shares(parent.header.claimed_loss, loss)
    )
    transition = update.finish()
    header = BlockHeader(
        version=BLOCK_VERSION,
        chain_id=chain.genesis.chain_id,
        height=height,
        parent=parent.hash,
        timestamp_ms=timestamp_ms,
        tx_root=transactions_root(included),
        state_root=transition.globals.state_root,
        delta_hash=delta_hash(candidate.delta),
        model_hash=model_hash(candidate.weights),
        claimed_loss=loss,
        difficulty=context.expected_difficulty,
        reward=emission + transition.fees,
        reward_to=reward_account,
        proposer=key.public_key,
    )
    return Block(header.signed(key), tuple(included), candidate.delta)


def assemble_block(
    chain: Chain,
    key: KeyPair,
    candidate: Candidate,
    timestamp_ms: int,
    transactions: Sequence[Transaction] = (),
    reward_to: bytes | None = None,
) -> Block:
    """:func:`build_block`, then the chain's full validation of the block.

    Raises whatever the validation raises: a proposer never sends a block its own chain would
    reject.
    """
    block = build_block(chain, key, candidate, timestamp_ms, transactions, reward_to)
    chain.validate_child(block)
    return block


def _select_applicable(
    chain: Chain, update: LedgerUpdate, transactions: Sequence[Transaction], height: int
) -> list[Transaction]:
    """The transactions that apply in order on the block's ledger; the rest are left out."""
    included: list[Transaction] = []
    for tx in transactions:
        trial = begin_update(_Overlay(chain, update.current), update.globals)
        try:
            verify_transaction(tx, chain.genesis.chain_id)
            apply_transaction(trial, tx, height, chain.params.ledger)
        except (InvalidTransaction, InvalidSignature):
            continue
        apply_transaction(update, tx, height, chain.params.ledger)
        included.append(tx)
    return included


class _Overlay:
    """Accounts as changed so far in a block being assembled, over the chain's."""

    def __init__(self, chain: Chain, changed: dict[bytes, Account]) -> None:
        self.chain, self.changed = chain, changed

    def get_account(self, account: bytes) -> Account | None:
        found = self.changed.get(account)
        return found if found is not None else self.chain.get_account(account)
