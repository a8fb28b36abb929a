"""Tests for the mining loop (derelayl_chain/mining.py), on a real node and LevelDB store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from derelayl_chain.config import NodeConfig
from derelayl_chain.genesis import GenesisConfig
from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.delta import decode_delta
from derelayl_chain.learning.model import weight_spec
from derelayl_chain.mining import Miner, MiningPolicy
from derelayl_chain.node import Node
from derelayl_chain.transaction import make_transfer
from tests.unit.node_helpers import (
    ALICE,
    CHAIN_ID,
    DRL,
    MINER,
    TASK,
    make_genesis,
    miner_data,
    produce_block,
)

HOUR_MS = 3_600_000


async def open_node(tmp_path: Path, genesis: GenesisConfig) -> Node:
    node = Node(NodeConfig(data_dir=tmp_path / "node", mine=False, port=8600), genesis)
    await node.start()
    return node


@pytest.fixture
async def slow_decay_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node whose difficulty has not decayed since genesis: blocks must improve the model."""
    node = await open_node(tmp_path, make_genesis(decay_ms=HOUR_MS))
    yield node
    await node.stop()


@pytest.fixture
async def decayed_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node whose genesis is older than decay_ms: any block not worse than the tip is valid."""
    node = await open_node(tmp_path, make_genesis(decay_ms=1_000))
    yield node
    await node.stop()


def make_miner(node: Node, data: Dataset | None = None) -> Miner:
    return Miner(node, data if data is not None else miner_data(), MINER)


def mislabelled() -> Dataset:
    """Training data whose labels are all wrong: a training step only makes the model worse."""
    data = miner_data()
    return Dataset(x=data.x, y=((data.y + 1) % 10).astype(np.int64))


async def test_mine_once_connects_an_improving_block(slow_decay_node: Node) -> None:
    """An attempt trains on the tip, proposes a block that improves the loss, and it connects."""
    node = slow_decay_node
    miner = make_miner(node)
    block = await miner.mine_once()
    assert block is not None
    assert node.chain.tip.hash == block.hash
    assert block.header.claimed_loss < node.genesis.initial_loss
    assert block.header.reward > 0
    assert miner.blocks_mined == 1
    await miner.close()


async def test_mined_block_includes_pending_transactions(slow_decay_node: Node) -> None:
    """Mempool transactions are included, and leave the mempool once connected."""
    node = slow_decay_node
    tx = make_transfer(ALICE, CHAIN_ID, 0, MINER.account, DRL, 10_000)
    await node.submit_transaction(tx)
    miner = make_miner(node)
    block = await miner.mine_once()
    assert block is not None
    assert [t.txid for t in block.transactions] == [tx.txid]
    assert tx.txid not in node.mempool
    await miner.close()


async def test_rewards_go_to_the_reward_address(slow_decay_node: Node) -> None:
    """With a reward address set, the block pays it rather than the miner's key."""
    node = slow_decay_node
    miner = Miner(node, miner_data(), MINER, reward_to=ALICE.account)
    block = await miner.mine_once()
    assert block is not None and block.header.reward_to == ALICE.account
    await miner.close()


async def test_no_block_without_improvement_before_decay(slow_decay_node: Node) -> None:
    """Training that worsens the model proposes nothing while the difficulty still stands."""
    node = slow_decay_node
    miner = make_miner(node, mislabelled())
    assert await miner.mine_once() is None
    assert node.chain.tip.height == 0
    await miner.close()


async def test_empty_block_once_difficulty_decayed(decayed_node: Node) -> None:
    """After decay_ms without improvement the miner proposes a zero delta (keeps the chain live)."""
    node = decayed_node
    miner = make_miner(node, mislabelled())
    block = await miner.mine_once()
    assert block is not None
    delta = decode_delta(block.delta, weight_spec(TASK))
    assert all(not tensor.any() for tensor in delta.values())
    assert block.header.claimed_loss == node.genesis.initial_loss
    assert block.header.reward == 0
    await miner.close()


async def test_each_attempt_uses_a_new_seed(slow_decay_node: Node) -> None:
    """Seeds differ between attempts on one tip and between miners' keys."""
    node = slow_decay_node
    miner = make_miner(node)
    tip = node.chain.tip.hash
    first = miner._seed(tip)
    miner.attempts += 1
    assert miner._seed(tip) != first
    other = Miner(node, miner_data(), ALICE)
    assert other._seed(tip) != first
    await miner.close()
    await other.close()


async def test_wait_for_timestamp_wakes_on_new_tip(decayed_node: Node) -> None:
    """Waiting for a block's earliest timestamp ends at once when another block arrives."""
    node = decayed_node
    miner = make_miner(node)
    node.miner = miner  # the node notifies its miner of tip changes
    parent = node.chain.tip.hash
    waiting = asyncio.create_task(miner._wait_until(miner.clock() + 20_000, parent))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await produce_block(node)
    assert await asyncio.wait_for(waiting, 5) is False
    assert time.monotonic() - started < 5
    node.miner = None
    await miner.close()


async def test_stale_candidate_is_not_proposed(slow_decay_node: Node) -> None:
    """A candidate trained on a tip that has since moved is dropped, not proposed."""
    node = slow_decay_node
    miner = make_miner(node)
    node.miner = miner
    stale_tip = node.chain.tip.hash
    await produce_block(node, train=True, seed=99)
    await miner._consider(await miner._in_trainer(_train_on, node, stale_tip))
    assert miner._best is None
    node.miner = None
    await miner.close()


def _train_on(node: Node, parent: bytes) -> object:
    """A candidate built on ``parent`` (no longer the tip)."""
    from derelayl_chain import relay
    from derelayl_chain.learning.delta import zero_delta

    return relay.candidate_from_delta(node.chain, parent, zero_delta(TASK))


async def test_run_mines_until_cancelled(slow_decay_node: Node) -> None:
    """The loop keeps proposing blocks until its task is cancelled."""
    node = slow_decay_node
    miner = Miner(node, miner_data(), MINER, policy=MiningPolicy(wait_horizon_ms=HOUR_MS))
    node.miner = miner
    task = asyncio.create_task(miner.run())
    deadline = time.monotonic() + 30
    while node.chain.tip.height < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert node.chain.tip.height >= 2
    node.miner = None
    await miner.close()
