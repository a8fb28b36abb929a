"""Shared set-up of the node, API and mining tests: a test network and a block producer.

The test genesis lies ten minutes in the past with a one-second ``decay_ms``, so a block can
be produced at once: a trained step is timestamped just after its parent (full difficulty,
full emission), and an empty step one decay period after it (no improvement needed).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from derelayl_chain import relay
from derelayl_chain.block import Block
from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, ConsensusParams, GenesisConfig
from derelayl_chain.learning.data import Dataset, load_miner_data
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import initial_weights
from derelayl_chain.learning.task import BUILTIN_TASKS, TaskSpec
from derelayl_chain.learning.train import TrainingConfig
from derelayl_chain.learning.weights import model_hash
from derelayl_chain.node import Node
from derelayl_chain.transaction import Transaction

CHAIN_ID = 4242
DRL = BASE_UNITS_PER_DRL
ALICE = KeyPair.from_seed(b"\x0a" * 32)
"""Holds 1000 DRL at genesis."""
MINER = KeyPair.from_seed(b"\x0c" * 32)
"""Proposes (and is paid for) the blocks the tests produce."""
TASK: TaskSpec = BUILTIN_TASKS["digits-mlp"]
GENESIS_TIME_MS = time.time_ns() // 1_000_000 - 600_000


@functools.cache
def _initial_model() -> tuple[int, bytes]:
    weights = initial_weights(TASK)
    return evaluate(TASK, weights).loss, model_hash(weights)


def make_genesis(*, model_open: bool = False, decay_ms: int = 1_000) -> GenesisConfig:
    """A small test network: the digits task, ALICE funded, a short decay period."""
    loss, model = _initial_model()
    return GenesisConfig(
        chain_id=CHAIN_ID,
        timestamp_ms=GENESIS_TIME_MS,
        task=TASK,
        initial_loss=loss,
        initial_model_hash=model,
        params=ConsensusParams(decay_ms=decay_ms, model_open=model_open),
        allocations=((ALICE.account, 1000 * DRL),),
    )


@functools.cache
def miner_data() -> Dataset:
    """The whole training split of the built-in task."""
    return load_miner_data("digits:0/1", TASK)


def build_block(node: Node, txs: Sequence[Transaction], train: bool, seed: int) -> Block:
    """Build and sign (fully validated) the next block; call on the chain worker."""
    chain = node.chain
    if train:
        candidate = relay.train_candidate(chain, miner_data(), TrainingConfig(seed=seed))
    else:
        candidate = relay.empty_candidate(chain)
    timestamp = relay.earliest_timestamp(chain, candidate.evaluation.loss)
    assert timestamp is not None, "the candidate does not improve on the tip"
    return relay.assemble_block(chain, MINER, candidate, timestamp, list(txs))


async def produce_block(
    node: Node, txs: Sequence[Transaction] = (), *, train: bool = False, seed: int = 0
) -> Block:
    """Build the next block and submit it through the node; it must connect."""
    block = await node.run_chain(build_block, node, txs, train, seed)
    result = await node.submit_block(block)
    assert block in result.connected, result.status
    return block
