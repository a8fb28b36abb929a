"""An in-process relay: three miners with different shards extend one chain in turn."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from derelayl_chain.chain import Chain
from derelayl_chain.consensus import (
    block_emission,
    effective_difficulty,
    required_loss,
)
from derelayl_chain.crypto import KeyPair
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.task import LOSS_SCALE
from derelayl_chain.learning.weights import model_hash
from derelayl_chain.state import decode_account
from derelayl_chain.storage import schema
from tests.chainkit import Clock, make_genesis, new_chain, produce_block, shards

BLOCKS = 30


@dataclass(frozen=True)
class Relay:
    chains: list[Chain]
    keys: list[KeyPair]


@pytest.fixture(scope="module")
def relay() -> Relay:
    """Three miners, each with its own chain and shard, take turns proposing 30 blocks."""
    keys = [KeyPair.from_seed(bytes([i]) * 32) for i in range(3)]
    genesis = make_genesis()
    clock = Clock(genesis.timestamp_ms + 1_000)
    chains = [new_chain(genesis, clock) for _ in keys]
    data = shards(3)
    for height in range(1, BLOCKS + 1):
        miner = height % 3
        block = produce_block(chains[miner], keys[miner], data[miner], clock, seed=height)
        for chain in chains:
            assert chain.submit_block(block).status == "connected"
    return Relay(chains, keys)


def canonical_headers(chain: Chain) -> list:  # type: ignore[type-arg]
    return chain.canonical_headers(0, chain.tip.height + 1)


def test_relay_reaches_thirty_blocks_on_every_node(relay: Relay) -> None:
    """All three nodes agree on the same 30-block chain."""
    tips = {chain.tip.hash for chain in relay.chains}
    assert len(tips) == 1
    assert relay.chains[0].tip.height == BLOCKS


def test_loss_never_rises_along_the_chain(relay: Relay) -> None:
    """Every block's claimed loss is at most its parent's."""
    losses = [h.claimed_loss for h in canonical_headers(relay.chains[0])]
    assert all(child <= parent for parent, child in zip(losses, losses[1:], strict=False))
    assert losses[-1] < losses[0] // 5


def test_final_accuracy_is_at_least_ninety_percent(relay: Relay) -> None:
    """The relayed model classifies at least 90% of the evaluation split correctly."""
    chain = relay.chains[0]
    result = evaluate(chain.genesis.task, chain.weights_at(chain.tip.hash))
    assert result.accuracy >= 0.9 * LOSS_SCALE


def test_each_block_meets_its_time_decayed_requirement(relay: Relay) -> None:
    """loss_h <= loss_p - ceil(loss_p * d_eff / 10^6) for every block."""
    chain = relay.chains[0]
    headers = canonical_headers(chain)
    for parent, child in zip(headers, headers[1:], strict=False):
        d_eff = effective_difficulty(
            child.difficulty, child.timestamp_ms - parent.timestamp_ms, chain.params.decay_ms
        )
        assert child.claimed_loss <= required_loss(parent.claimed_loss, d_eff)


def test_rewards_and_supply_add_up(relay: Relay) -> None:
    """Supply equals the emissions paid, and balances plus the royalty pool equal supply."""
    chain = relay.chains[0]
    headers = canonical_headers(chain)
    emitted = 0
    for parent, child in zip(headers, headers[1:], strict=False):
        d_eff = effective_difficulty(
            child.difficulty, child.timestamp_ms - parent.timestamp_ms, chain.params.decay_ms
        )
        emission = block_emission(chain.params, child.height, d_eff, child.difficulty)
        assert child.reward == emission  # no transactions, so no fees
        emitted += emission
    accounts = [decode_account(v) for _, v in chain.store.iterate(schema.PREFIXES["account"])]
    assert chain.ledger.supply == emitted
    assert sum(a.balance for a in accounts) + chain.ledger.royalty_pool == emitted
    per_miner = {key.account: 0 for key in relay.keys}
    for header in headers[1:]:
        per_miner[header.reward_to] += header.reward
    for key in relay.keys:
        account = chain.get_account(key.account)
        assert account is not None and account.balance == per_miner[key.account]


def test_shares_equal_the_delivered_improvement(relay: Relay) -> None:
    """Each miner's shares are the sum of its blocks' improvements; the total is the whole."""
    chain = relay.chains[0]
    headers = canonical_headers(chain)
    expected = {key.account: 0 for key in relay.keys}
    for parent, child in zip(headers, headers[1:], strict=False):
        expected[child.reward_to] += parent.claimed_loss - child.claimed_loss
    for key in relay.keys:
        account = chain.get_account(key.account)
        assert account is not None and account.shares == expected[key.account]
    assert chain.ledger.total_shares == headers[0].claimed_loss - headers[-1].claimed_loss


def test_model_hash_of_tip_matches_header(relay: Relay) -> None:
    """The weights every node holds hash to the tip header's model hash."""
    for chain in relay.chains:
        assert model_hash(chain.weights_at(chain.tip.hash)) == chain.tip.header.model_hash


def test_model_rebuilt_from_checkpoint_matches(relay: Relay) -> None:
    """Weights rebuilt from the nearest checkpoint plus deltas equal the cached ones."""
    chain = relay.chains[1]
    height = chain.params.checkpoint_interval + 3
    block_hash = chain.hash_at(height)
    assert block_hash is not None
    cached = model_hash(chain.weights_at(chain.tip.hash))
    chain._weights.clear()
    assert model_hash(chain.weights_at(block_hash)) == chain.entry(block_hash).header.model_hash
    assert model_hash(chain.weights_at(chain.tip.hash)) == cached
