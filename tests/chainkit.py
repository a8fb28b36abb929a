"""Test kit: genesis, clocks and block production for in-process chains (no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from derelayl_chain.block import Block
from derelayl_chain.chain import Chain
from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import ConsensusParams, GenesisConfig, devnet_genesis
from derelayl_chain.learning.data import Dataset, load_miner_data
from derelayl_chain.learning.task import DEFAULT_TASK
from derelayl_chain.learning.train import TrainingConfig
from derelayl_chain.relay import (
    assemble_block,
    earliest_timestamp,
    empty_candidate,
    train_candidate,
)
from derelayl_chain.storage.memory import MemoryStore
from derelayl_chain.transaction import Transaction


class Clock:
    """A settable millisecond clock shared by a test's chains."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance_to(self, ms: int) -> None:
        self.now = max(self.now, ms)


def make_genesis(allocations: dict[bytes, int] | None = None, **params: int) -> GenesisConfig:
    """The devnet genesis with test allocations and parameter overrides."""
    base = devnet_genesis()
    return replace(
        base,
        params=replace(ConsensusParams(), **params),
        allocations=tuple(sorted((allocations or {}).items())),
    )


def shards(count: int) -> list[Dataset]:
    return [load_miner_data(f"digits:{i}/{count}", DEFAULT_TASK) for i in range(count)]


def new_chain(genesis: GenesisConfig, clock: Clock, store: MemoryStore | None = None) -> Chain:
    return Chain(store or MemoryStore(), genesis, clock=clock)


def produce_block(
    chain: Chain,
    key: KeyPair,
    data: Dataset,
    clock: Clock,
    *,
    seed: int = 0,
    transactions: tuple[Transaction, ...] = (),
    attempts: int = 8,
    reward_to: bytes | None = None,
) -> Block:
    """Train until the step improves, timestamp it at the earliest valid moment, assemble it.

    Advances ``clock`` to the block's timestamp. Falls back to a zero delta after T_decay if no
    attempt improves the loss.
    """
    for attempt in range(attempts):
        candidate = train_candidate(chain, data, TrainingConfig(seed=seed * 100 + attempt))
        timestamp = earliest_timestamp(chain, candidate.evaluation.loss)
        if timestamp is not None:
            break
    else:
        candidate = empty_candidate(chain)
        timestamp = chain.tip.header.timestamp_ms + chain.params.decay_ms
    timestamp = max(timestamp, clock.now)
    clock.advance_to(timestamp)
    return assemble_block(chain, key, candidate, timestamp, transactions, reward_to)


def fast_block(
    chain: Chain, key: KeyPair, data: Dataset, seed: int, txs: Sequence[Transaction] = ()
) -> Block:
    """A trained child of the tip at the earliest valid timestamp: as much work as it can."""
    for attempt in range(8):
        candidate = train_candidate(chain, data, TrainingConfig(seed=seed * 100 + attempt))
        timestamp = earliest_timestamp(chain, candidate.evaluation.loss)
        if timestamp is not None:
            return assemble_block(chain, key, candidate, timestamp, txs)
    raise AssertionError("no training attempt improved the loss")


def slow_block(chain: Chain, key: KeyPair, txs: Sequence[Transaction] = ()) -> Block:
    """A zero-delta child of the tip timestamped at ``T_decay``: work exactly 1."""
    timestamp = chain.tip.header.timestamp_ms + chain.params.decay_ms
    return assemble_block(chain, key, empty_candidate(chain), timestamp, txs)
