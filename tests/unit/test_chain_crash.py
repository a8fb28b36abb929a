"""Crash safety: an importing process killed with SIGKILL never leaves an inconsistent store.

The blocks (a main branch, then a side branch that is stored first and later wins, so the
sequence contains a three-block reorganisation) are built in-process and written to a file. A
subprocess opens a LevelDB store in a temporary directory and submits them one by one; it is
killed with SIGKILL at random moments many times. After every kill the store is opened here:
the chain must open cleanly, and its state commitment, model hash and every table derived from
the canonical chain must equal those of a fresh in-memory chain that replays the canonical
blocks of the reopened store. A last run completes and must end on the expected tip.

Two quick tests cover the other ways a restart or a write can go wrong: blocks refused on
arrival stay refused after a restart, and a block whose data cannot be written is forgotten.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from derelayl_chain.block import Block, decode_block
from derelayl_chain.chain import Chain
from derelayl_chain.crypto import SIGNATURE_SIZE, KeyPair
from derelayl_chain.exceptions import BlockSignatureError, KnownInvalid, StorageError
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, GenesisConfig, load_genesis, write_genesis
from derelayl_chain.storage import schema
from derelayl_chain.storage.kv import WriteBatch
from derelayl_chain.storage.memory import MemoryStore
from derelayl_chain.transaction import Transaction, make_transfer
from tests.chainkit import (
    CLOCK_AHEAD_MS,
    DERIVED_TABLES,
    canonical_blocks,
    extend,
    far_clock,
    fast_block,
    make_genesis,
    new_chain,
    replay,
    shards,
    slow_block,
    snapshot,
)

DRL = BASE_UNITS_PER_DRL
KILLS = 12
READ_TIMEOUT_S = 120.0

IMPORTER = r"""
import sys
from pathlib import Path
from derelayl_chain.block import decode_block
from derelayl_chain.chain import Chain
from derelayl_chain.genesis import load_genesis
from derelayl_chain.storage.schema import open_store

data_dir, genesis_path, blocks_path, now = sys.argv[1:5]
genesis = load_genesis(Path(genesis_path))
raw = Path(blocks_path).read_bytes()
blocks, offset = [], 0
while offset < len(raw):
    size = int.from_bytes(raw[offset : offset + 4], "big")
    blocks.append(decode_block(raw[offset + 4 : offset + 4 + size], genesis.params.max_delta_bytes))
    offset += 4 + size
print("opening", flush=True)
chain = Chain(open_store(Path(data_dir)), genesis, clock=lambda: int(now))
print("ready", flush=True)
for index, block in enumerate(blocks):
    chain.submit_block(block)
    print("ok", index, flush=True)
chain.store.close()
print("done", chain.tip.hash.hex(), flush=True)
"""


# --- building the blocks -----------------------------------------------------------------------


def build_sequence(genesis: GenesisConfig, payer: KeyPair) -> tuple[list[Block], bytes]:
    """Main branch of 8 blocks; side branch from height 5 that wins at its third block.

    Returns the blocks in submission order and the hash of the tip they must end on.
    """
    miners = [KeyPair.from_seed(bytes([0xB0 + i]) * 32) for i in range(3)]
    payee = KeyPair.from_seed(b"p" * 32).account
    data = shards(3)
    cid = genesis.chain_id

    def pay(nonce: int, amount: int) -> list[Transaction]:
        return [make_transfer(payer, cid, nonce, payee, amount * DRL, 10_000)]

    main = new_chain(genesis, far_clock(genesis))
    blocks = [
        extend(main, fast_block(main, miners[h % 3], data[h % 3], h, pay(h, h + 1)))
        for h in range(5)
    ]
    side = new_chain(genesis, far_clock(genesis))
    for block in blocks:
        extend(side, block)
    blocks.append(extend(main, slow_block(main, miners[0], pay(5, 1))))
    blocks.append(extend(main, slow_block(main, miners[1], pay(6, 2))))
    blocks.append(extend(main, slow_block(main, miners[2])))
    side_blocks = [extend(side, slow_block(side, miners[2], pay(5, 9)))]
    side_blocks.append(extend(side, slow_block(side, miners[1])))
    side_blocks.append(extend(side, fast_block(side, miners[0], data[0], 20, pay(6, 4))))
    side_blocks += [extend(side, slow_block(side, miners[1], pay(7 + i, 1))) for i in range(2)]
    side_blocks.append(extend(side, fast_block(side, miners[2], data[2], 30, pay(9, 1))))
    assert side.entry(side_blocks[1].hash).work < main.tip.work < side.tip.work
    return blocks + side_blocks, side.tip.hash


def write_blocks(blocks: Sequence[Block], path: Path) -> None:
    path.write_bytes(b"".join(len(e).to_bytes(4, "big") + e for e in (b.encode() for b in blocks)))


# --- checking a store --------------------------------------------------------------------------


def check_store(data_dir: Path, genesis: GenesisConfig) -> Chain:
    """Open the store as a restarting node does, compare it with a replay; return the chain."""
    store = schema.open_store(data_dir)
    try:
        now = genesis.timestamp_ms + CLOCK_AHEAD_MS
        chain = Chain(store, genesis, clock=lambda: now)
        reference = replay(genesis, canonical_blocks(chain))
        got, want = snapshot(chain), snapshot(reference)
        assert (got.tip, got.state_root, got.model) == (want.tip, want.state_root, want.model)
        for name in DERIVED_TABLES:
            assert got.tables[name] == want.tables[name], f"table {name} differs from the replay"
        assert chain.ledger == reference.ledger
        return chain
    finally:
        store.close()


# --- the test ----------------------------------------------------------------------------------


def start_importer(
    data_dir: Path, genesis_path: Path, blocks_path: Path, now: int
) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-c",
        IMPORTER,
        str(data_dir),
        str(genesis_path),
        str(blocks_path),
        str(now),
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env, cwd=root)


def read_until(process: subprocess.Popen[str], wanted: str) -> bool:
    """Read the importer's lines until one equals ``wanted``; False if it ended first.

    An importer silent for READ_TIMEOUT_S is killed, which ends the read: a hang fails the test
    instead of stalling the run.
    """
    assert process.stdout is not None
    watchdog = threading.Timer(READ_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        return any(line.strip() == wanted for line in process.stdout)
    finally:
        watchdog.cancel()


def kill_at_random(process: subprocess.Popen[str], rng: random.Random, stored: int) -> None:
    """SIGKILL during start-up recovery, or while importing one of the next two blocks.

    The ``stored`` blocks already in the store are re-submitted as quick duplicates; the kill
    comes a random moment, up to about one block's import time, after the last of them or the
    block after it, so that the import of every block is eventually cut short somewhere.
    """
    target = stored - 1 + rng.randrange(2)
    if rng.random() < 0.15:
        read_until(process, "opening")
    else:
        read_until(process, f"ok {target}" if target >= 0 else "ready")
    time.sleep(rng.uniform(0, 0.006))
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.stdout is not None
    process.stdout.close()
    assert process.returncode in (0, -signal.SIGKILL), "the importer failed on its own"


def check_copy(data_dir: Path, copy_dir: Path, genesis: GenesisConfig) -> Chain:
    """Check a copy of the store, so the next importer run does its own crash recovery."""
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(data_dir, copy_dir)
    return check_store(copy_dir, genesis)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path: Path) -> None:
    """Every restart after SIGKILL opens cleanly and equals a replay of its canonical chain."""
    payer = KeyPair.from_seed(b"q" * 32)
    genesis = make_genesis({payer.account: 1_000 * DRL}, checkpoint_interval=4)
    genesis_path, blocks_path, data_dir = (
        tmp_path / "genesis.json",
        tmp_path / "blocks",
        tmp_path / "node",
    )
    write_genesis(genesis, genesis_path)
    assert load_genesis(genesis_path).hash == genesis.hash
    blocks, expected_tip = build_sequence(genesis, payer)
    write_blocks(blocks, blocks_path)
    assert [decode_block(b.encode(), genesis.params.max_delta_bytes) for b in blocks] == blocks
    now = genesis.timestamp_ms + CLOCK_AHEAD_MS

    rng = random.Random(20_260_101)
    heights, stored = [], 0
    for _ in range(KILLS):
        kill_at_random(start_importer(data_dir, genesis_path, blocks_path, now), rng, stored)
        reopened = check_copy(data_dir, tmp_path / "copy", genesis)
        heights.append(reopened.tip.height)
        stored = sum(block.hash in reopened.index for block in blocks)

    final = start_importer(data_dir, genesis_path, blocks_path, now)
    out, _ = final.communicate(timeout=120)
    assert final.returncode == 0, out
    assert out.strip().splitlines()[-1] == f"done {expected_tip.hex()}"
    assert check_store(data_dir, genesis).tip.hash == expected_tip
    assert len(set(heights)) > 3, f"kills landed at too few heights: {heights}"


# --- restarts and failed writes ----------------------------------------------------------------


def test_blocks_proven_invalid_are_remembered_after_restart() -> None:
    """A block refused on arrival is still known invalid when the node restarts on its store."""
    genesis = make_genesis()
    store = MemoryStore()
    chain = Chain(store, genesis, clock=lambda: genesis.timestamp_ms + CLOCK_AHEAD_MS)
    good = slow_block(chain, KeyPair.from_seed(b"m" * 32))
    forged = replace(good, header=replace(good.header, signature=bytes(SIGNATURE_SIZE)))
    with pytest.raises(BlockSignatureError):
        chain.submit_block(forged)
    reopened = Chain(store, genesis, clock=lambda: genesis.timestamp_ms + CLOCK_AHEAD_MS)
    with pytest.raises(KnownInvalid):
        reopened.submit_block(forged)
    assert reopened.submit_block(good).status == "connected"


class FailingStore(MemoryStore):
    """An in-memory store whose disk "fills up": writes holding a delta fail while ``full``."""

    full = False

    def write(self, batch: WriteBatch) -> None:
        delta_prefix = schema.PREFIXES["delta"]
        if self.full and any(key.startswith(delta_prefix) for key, _ in batch.operations):
            raise StorageError("no space left on device")
        super().write(batch)


def test_failed_block_write_leaves_chain_unchanged() -> None:
    """When storing a block fails, the import raises, the block is forgotten, and a retry works."""
    genesis = make_genesis()
    store = FailingStore()
    chain = Chain(store, genesis, clock=lambda: genesis.timestamp_ms + CLOCK_AHEAD_MS)
    block = slow_block(chain, KeyPair.from_seed(b"m" * 32))
    store.full = True
    with pytest.raises(StorageError):
        chain.submit_block(block)
    assert block.hash not in chain.index
    assert chain.tip.height == 0
    assert Chain(store, genesis, clock=chain.clock).tip.height == 0
    store.full = False
    assert chain.submit_block(block).status == "connected"
    assert Chain(store, genesis, clock=chain.clock).tip.hash == block.hash
