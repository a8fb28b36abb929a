"""Consensus benchmark: block import against the bare learning work, relay quality, rebuilds.

Run as ``.venv/bin/python bench/consensus.py``. It prints one human-readable line per figure and,
as its last line, one JSON object with every figure, so scripts can compare runs.

Figures and goals:

- ``import_vs_apply_eval_large``: median time of ``Chain.submit_block`` importing a valid block
  of the large task (about 10^6 parameters) into a LevelDB store in a temporary directory,
  divided by the median bare time to add the same delta to the parent weights and evaluate the
  result, measured side by side block by block (goal: at most 1.3).
- ``relay_accuracy``: evaluation accuracy of the model after three miners, each with its own
  node and data shard, relay 30 blocks on the default task (goal: at least 0.9).
- ``rebuild_ms_at_depth_k``: rebuilding the large model at height K-1, K the checkpoint
  interval, from the genesis checkpoint and K-1 stored deltas, with the weight cache cleared.

Also reported: import throughput on the default task, delta sizes raw and as stored, the
import time on a RAM-backed directory (when ``/dev/shm`` exists) to separate disk cost, and the
functions the large import spends its time in.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from derelayl_chain.allocator import keep_large_buffers_in_heap  # noqa: E402
from derelayl_chain.block import Block  # noqa: E402
from derelayl_chain.chain import Chain  # noqa: E402
from derelayl_chain.crypto import KeyPair  # noqa: E402
from derelayl_chain.genesis import GenesisConfig, devnet_genesis  # noqa: E402
from derelayl_chain.learning.data import Dataset, load_miner_data  # noqa: E402
from derelayl_chain.learning.delta import decode_delta  # noqa: E402
from derelayl_chain.learning.evaluate import evaluate  # noqa: E402
from derelayl_chain.learning.model import initial_weights, weight_spec  # noqa: E402
from derelayl_chain.learning.task import DEFAULT_TASK, LARGE_TASK, LOSS_SCALE, TaskSpec  # noqa: E402
from derelayl_chain.learning.train import TrainingConfig  # noqa: E402
from derelayl_chain.learning.weights import apply_delta, model_hash  # noqa: E402
from derelayl_chain.relay import (  # noqa: E402
    Candidate,
    assemble_block,
    earliest_timestamp,
    empty_candidate,
    train_candidate,
)
from derelayl_chain.storage import schema  # noqa: E402
from derelayl_chain.storage.leveldb import LevelDBStore  # noqa: E402
from derelayl_chain.storage.memory import MemoryStore  # noqa: E402

MINERS = 3
RELAY_BLOCKS = 30
ATTEMPTS = 8
CLOCK_AHEAD_MS = 10**9


def genesis_for(task: TaskSpec) -> GenesisConfig:
    """The devnet genesis on ``task``, with that task's initial loss and model hash."""
    weights = initial_weights(task)
    return replace(
        devnet_genesis(),
        task=task,
        initial_loss=evaluate(task, weights).loss,
        initial_model_hash=model_hash(weights),
    )


def far_clock(genesis: GenesisConfig) -> Callable[[], int]:
    now = genesis.timestamp_ms + CLOCK_AHEAD_MS
    return lambda: now


def trained_candidate(chain: Chain, data: Dataset, config: TrainingConfig) -> Candidate | None:
    """A step that improves the tip's loss, or None after :data:`ATTEMPTS` tries."""
    for attempt in range(ATTEMPTS):
        candidate = train_candidate(chain, data, replace(config, seed=config.seed * 100 + attempt))
        if candidate.evaluation.loss < chain.tip.header.claimed_loss:
            return candidate
    return None


def plan_block(chain: Chain, data: Dataset, config: TrainingConfig) -> tuple[Candidate, int]:
    """A trained step and its earliest valid timestamp; a zero delta at T_decay if none improves."""
    candidate = trained_candidate(chain, data, config)
    timestamp = earliest_timestamp(chain, candidate.evaluation.loss) if candidate else None
    if candidate is None or timestamp is None:
        return empty_candidate(chain), chain.tip.header.timestamp_ms + chain.params.decay_ms
    return candidate, timestamp


# --- large task: import cost and rebuild -----------------------------------------------------


def build_large_blocks(genesis: GenesisConfig, count: int) -> list[Block]:
    """``count`` trained blocks of the large task, built on an in-memory chain."""
    chain = Chain(MemoryStore(), genesis, clock=far_clock(genesis))
    key = KeyPair.from_seed(b"L" * 32)
    shards = [load_miner_data(f"digits:{i}/{MINERS}", genesis.task) for i in range(MINERS)]
    blocks = []
    for height in range(1, count + 1):
        config = TrainingConfig(epochs=1, learning_rate=0.001, seed=height)
        candidate, timestamp = plan_block(chain, shards[height % MINERS], config)
        block = assemble_block(chain, key, candidate, timestamp)
        assert chain.submit_block(block).status == "connected"
        blocks.append(block)
    return blocks


@dataclass(frozen=True)
class ImportRun:
    import_s: list[float]
    bare_s: list[float]
    chain: Chain


def import_side_by_side(genesis: GenesisConfig, blocks: list[Block], directory: Path) -> ImportRun:
    """Per block: the bare apply + evaluate, then ``submit_block`` into LevelDB in ``directory``."""
    chain = Chain(LevelDBStore(directory), genesis, clock=far_clock(genesis))
    spec = weight_spec(genesis.task)
    imports, bare = [], []
    for block in blocks:
        parent = chain.weights_at(block.header.parent)
        delta = decode_delta(block.delta, spec, genesis.params.max_delta_bytes)
        gc.collect()
        start = time.perf_counter()
        evaluate(genesis.task, apply_delta(parent, delta))
        bare.append(time.perf_counter() - start)
        gc.collect()
        start = time.perf_counter()
        result = chain.submit_block(block)
        imports.append(time.perf_counter() - start)
        assert result.status == "connected", result.status
    return ImportRun(imports, bare, chain)


def rebuild_ms(chain: Chain, height: int, repetitions: int = 3) -> float:
    """Median time of ``weights_at`` for the block at ``height`` with the cache cleared."""
    block_hash = chain.hash_at(height)
    assert block_hash is not None
    samples = []
    for _ in range(repetitions):
        chain._weights.clear()
        start = time.perf_counter()
        weights = chain.weights_at(block_hash)
        samples.append(time.perf_counter() - start)
        assert model_hash(weights) == chain.entry(block_hash).header.model_hash
    return statistics.median(samples) * 1e3


def stored_delta_sizes(chain: Chain, blocks: list[Block]) -> tuple[int, int]:
    """Median raw and stored (compressed) delta size of the blocks with a non-zero delta."""
    raw, stored = [], []
    for block in blocks:
        value = chain.store.get(schema.delta_key(block.hash))
        assert value is not None
        if block.header.claimed_loss < chain.entry(block.header.parent).header.claimed_loss:
            raw.append(len(block.delta))
            stored.append(len(value))
    return int(statistics.median(raw)), int(statistics.median(stored))


def profile_imports(genesis: GenesisConfig, blocks: list[Block], directory: Path) -> str:
    """The functions a fresh import of ``blocks`` spends most of its own time in."""
    chain = Chain(LevelDBStore(directory), genesis, clock=far_clock(genesis))
    profiler = cProfile.Profile()
    profiler.enable()
    for block in blocks:
        chain.submit_block(block)
    profiler.disable()
    chain.store.close()
    rows = sorted(pstats.Stats(profiler).stats.items(), key=lambda item: -item[1][2])  # type: ignore[attr-defined]
    lines = []
    for (path, line, name), (_, calls, own, _, _) in rows[:8]:
        where = name if path == "~" else f"{Path(path).name}:{line} {name}"
        per_block = own / len(blocks) * 1e3
        lines.append(f"    {per_block:6.1f} ms/block  {calls / len(blocks):5.1f} calls  {where}")
    return "\n".join(lines)


# --- default task: a relay -------------------------------------------------------------------


@dataclass(frozen=True)
class Relay:
    accuracy: float
    blocks_per_s: float


def run_relay(genesis: GenesisConfig) -> Relay:
    """Three miners with their own nodes and shards take turns; every node imports every block."""
    now = [genesis.timestamp_ms + 1_000]
    chains = [Chain(MemoryStore(), genesis, clock=lambda: now[0]) for _ in range(MINERS)]
    keys = [KeyPair.from_seed(bytes([0x40 + i]) * 32) for i in range(MINERS)]
    shards = [load_miner_data(f"digits:{i}/{MINERS}", genesis.task) for i in range(MINERS)]
    import_time, imports = 0.0, 0
    for height in range(1, RELAY_BLOCKS + 1):
        miner = height % MINERS
        config = TrainingConfig(seed=height)
        candidate, timestamp = plan_block(chains[miner], shards[miner], config)
        now[0] = max(now[0], timestamp)
        block = assemble_block(chains[miner], keys[miner], candidate, now[0])
        start = time.perf_counter()
        for chain in chains:
            assert chain.submit_block(block).status == "connected"
        import_time += time.perf_counter() - start
        imports += len(chains)
    tip = chains[0]
    assert len({chain.tip.hash for chain in chains}) == 1
    result = evaluate(genesis.task, tip.weights_at(tip.tip.hash))
    return Relay(result.accuracy / LOSS_SCALE, imports / import_time)


def main() -> None:
    started = time.perf_counter()
    torch.set_num_threads(1)  # as a node runs: evaluation is single-threaded for determinism
    keep_large_buffers_in_heap()  # as `miner start` does
    large = genesis_for(LARGE_TASK)
    k = large.params.checkpoint_interval
    blocks = build_large_blocks(large, k - 1)
    print(f"built {len(blocks)} large-task blocks in {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory() as directory:
        run = import_side_by_side(large, blocks, Path(directory))
        import_ms = statistics.median(run.import_s) * 1e3
        bare_ms = statistics.median(run.bare_s) * 1e3
        ratio = import_ms / bare_ms
        rebuild = rebuild_ms(run.chain, k - 1)
        raw_bytes, stored_bytes = stored_delta_sizes(run.chain, blocks)
        run.chain.store.close()
    print(
        f"large import (LevelDB, {tempfile.gettempdir()}): {import_ms:7.1f} ms   "
        f"apply+evaluate: {bare_ms:6.1f} ms   ratio {ratio:.2f} (goal <= 1.3)"
    )
    shm_ms = None
    if Path("/dev/shm").is_dir():
        with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
            shm = import_side_by_side(large, blocks, Path(directory))
            shm_ms = statistics.median(shm.import_s) * 1e3
            shm_ratio = shm_ms / (statistics.median(shm.bare_s) * 1e3)
            shm.chain.store.close()
        print(f"large import (LevelDB, /dev/shm):   {shm_ms:7.1f} ms   ratio {shm_ratio:.2f}")
    print(
        f"delta: {raw_bytes} bytes raw, {stored_bytes} stored "
        f"({stored_bytes / raw_bytes:.2f} of raw)"
    )
    print(f"rebuild at height K-1 = {k - 1} from the genesis checkpoint: {rebuild:.1f} ms")
    with tempfile.TemporaryDirectory() as directory:
        print("large import, own time by function (cProfile):")
        print(profile_imports(large, blocks[:6], Path(directory)))

    relay = run_relay(genesis_for(DEFAULT_TASK))
    print(
        f"relay of {RELAY_BLOCKS} blocks by {MINERS} miners: accuracy {relay.accuracy:.3f} "
        f"(goal >= 0.9); default-task import {relay.blocks_per_s:.0f} blocks/s (in memory)"
    )
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.1f} s")
    print(
        json.dumps(
            {
                "import_vs_apply_eval_large": round(ratio, 3),
                "import_ms_large": round(import_ms, 2),
                "apply_eval_ms_large": round(bare_ms, 2),
                "import_ms_large_tmpfs": round(shm_ms, 2) if shm_ms is not None else None,
                "large_blocks": len(blocks),
                "delta_bytes_raw": raw_bytes,
                "delta_bytes_stored": stored_bytes,
                "delta_stored_vs_raw": round(stored_bytes / raw_bytes, 3),
                "rebuild_ms_at_depth_k": round(rebuild, 2),
                "checkpoint_interval": k,
                "relay_accuracy": round(relay.accuracy, 4),
                "relay_blocks": RELAY_BLOCKS,
                "import_blocks_per_s_default": round(relay.blocks_per_s, 1),
                "seconds": round(elapsed, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
