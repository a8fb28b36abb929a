"""Test kit: genesis, clocks and block production for in-process chains (no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from derelayl_chain.block import Block
from derelayl_chain.chain import Chain
from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import ConsensusParams, GenesisConfig, devnet_genesis
from derelayl_chain.learning.data import Dataset, load_miner_data
from derelayl_chain.learning.task import DEFAULT_TASK
from derelayl_chain.learning.train import TrainingConfig
from derelayl_chain.learning.weights import model_hash
from derelayl_chain.relay import (
    Candidate,
    assemble_block,
    earliest_timestamp,
    empty_candidate,
    train_candidate,
)
from derelayl_chain.storage import schema
from derelayl_chain.storage.memory import MemoryStore
from derelayl_chain.transaction import Transaction

CLOCK_AHEAD_MS = 10**9
"""How far past genesis :func:`far_clock` stands: no test block is ever refused as early."""
DERIVED_TABLES = ("account", "global_state", "canonical", "tx_index", "history", "reward", "undo")
"""Tables whose content is a function of the canonical chain alone."""


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


def far_clock(genesis: GenesisConfig) -> Clock:
    return Clock(genesis.timestamp_ms + CLOCK_AHEAD_MS)


def extend(chain: Chain, block: Block) -> Block:
    """Submit ``block`` to the chain that built it, which must connect it."""
    assert chain.submit_block(block).status == "connected"
    return block


def replay(genesis: GenesisConfig, blocks: Sequence[Block]) -> Chain:
    """A fresh in-memory chain (far clock) that connected ``blocks`` one by one."""
    chain = new_chain(genesis, far_clock(genesis))
    for block in blocks:
        extend(chain, block)
    return chain


def canonical_blocks(chain: Chain, up_to: int | None = None) -> list[Block]:
    """The canonical blocks above genesis, up to height ``up_to`` (default: the tip)."""
    found = []
    for height in range(1, (chain.tip.height if up_to is None else up_to) + 1):
        block_hash = chain.hash_at(height)
        assert block_hash is not None, f"canonical height {height} is missing"
        found.append(chain.get_block(block_hash))
    return found


def derived_tables(chain: Chain) -> dict[str, list[tuple[bytes, bytes]]]:
    return {name: list(chain.store.iterate(schema.PREFIXES[name])) for name in DERIVED_TABLES}


@dataclass(frozen=True)
class Snapshot:
    tip: bytes
    state_root: bytes
    model: bytes
    tables: dict[str, list[tuple[bytes, bytes]]]


def snapshot(chain: Chain) -> Snapshot:
    """Everything a node derives from its canonical chain, the model rebuilt from the store."""
    chain._weights.clear()  # rebuild the model from checkpoints and deltas, not the cache
    model = model_hash(chain.weights_at(chain.tip.hash))
    return Snapshot(chain.tip.hash, chain.ledger.state_root, model, derived_tables(chain))


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
    trained = _improving_candidate(chain, data, seed, attempts)
    if trained is not None:
        candidate, timestamp = trained
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
    trained = _improving_candidate(chain, data, seed, attempts=8)
    if trained is None:
        raise AssertionError("no training attempt improved the loss")
    return assemble_block(chain, key, *trained, txs)


def _improving_candidate(
    chain: Chain, data: Dataset, seed: int, attempts: int
) -> tuple[Candidate, int] | None:
    """The first of ``attempts`` trained steps that improves enough, with its earliest timestamp."""
    for attempt in range(attempts):
        candidate = train_candidate(chain, data, TrainingConfig(seed=seed * 100 + attempt))
        timestamp = earliest_timestamp(chain, candidate.evaluation.loss)
        if timestamp is not None:
            return candidate, timestamp
    return None


def slow_block(chain: Chain, key: KeyPair, txs: Sequence[Transaction] = ()) -> Block:
    """A zero-delta child of the tip timestamped at ``T_decay``: work exactly 1."""
    timestamp = chain.tip.header.timestamp_ms + chain.params.decay_ms
    return assemble_block(chain, key, empty_candidate(chain), timestamp, txs)
