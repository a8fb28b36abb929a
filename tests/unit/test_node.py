"""Tests for the node process core (derelayl_chain/node.py): key, lock, mempool, imports."""

from __future__ import annotations

import dataclasses
import socket
import stat
from pathlib import Path

import pytest
import structlog

from derelayl_chain.config import NodeConfig
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import ConfigError, DataDirLocked, InvalidBlock
from derelayl_chain.genesis import GenesisConfig
from derelayl_chain.node import (
    NODE_KEY_FILE,
    Node,
    PortUnavailable,
    bind_socket,
    load_or_create_node_key,
)
from derelayl_chain.storage import schema
from derelayl_chain.transaction import make_transfer
from tests.unit.node_helpers import (
    ALICE,
    CHAIN_ID,
    DRL,
    MINER,
    build_block,
    make_genesis,
    produce_block,
)

HOUR_MS = 3_600_000


def node_at(path: Path, genesis: GenesisConfig | None = None) -> Node:
    config = NodeConfig(data_dir=path, mine=False, port=8600)
    return Node(config, genesis or make_genesis())


# --- node key -----------------------------------------------------------------------------


def test_node_key_is_created_private_and_reused(tmp_path: Path) -> None:
    """The first start writes a 0600 file of 32 seed bytes in hex; later starts reuse it."""
    key = load_or_create_node_key(tmp_path)
    path = tmp_path / NODE_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key.seed.hex() + "\n"
    assert load_or_create_node_key(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == [NODE_KEY_FILE]


def test_existing_node_key_is_never_replaced(tmp_path: Path) -> None:
    """A key already on disk is used as it is."""
    seed = bytes(range(32))
    (tmp_path / NODE_KEY_FILE).write_text(seed.hex())
    assert load_or_create_node_key(tmp_path) == KeyPair.from_seed(seed)


@pytest.mark.parametrize("content", ["zz" * 32, "ab" * 31, ""])
def test_corrupt_node_key_is_a_config_error(tmp_path: Path, content: str) -> None:
    """A node key file that is not 64 hex digits stops the node with a one-line error."""
    (tmp_path / NODE_KEY_FILE).write_text(content)
    with pytest.raises(ConfigError, match="node key"):
        load_or_create_node_key(tmp_path)


# --- life cycle ---------------------------------------------------------------------------


async def test_second_node_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """The data-dir lock refuses a second node; the first keeps working; the lock is freed."""
    first = node_at(tmp_path)
    await first.start()
    second = node_at(tmp_path)
    with pytest.raises(DataDirLocked):
        await second.start()
    assert first.chain.tip.height == 0
    await first.stop()
    await second.start()
    await second.stop()


async def test_chain_and_key_survive_a_restart(tmp_path: Path) -> None:
    """A restarted node is at the same tip with the same key."""
    node = node_at(tmp_path)
    await node.start()
    block = await produce_block(node)
    key = node.node_key
    await node.stop()
    again = node_at(tmp_path)
    await again.start()
    assert again.chain.tip.hash == block.hash
    assert again.node_key == key
    await again.stop()


async def test_mempool_survives_a_restart(tmp_path: Path) -> None:
    """Pending transactions are saved at stop and restored at the next start."""
    node = node_at(tmp_path)
    await node.start()
    txs = [make_transfer(ALICE, CHAIN_ID, n, MINER.account, DRL, 10_000) for n in range(3)]
    for tx in txs:
        await node.submit_transaction(tx)
    await node.stop()
    again = node_at(tmp_path)
    await again.start()
    assert [again.mempool.get(tx.txid) for tx in txs] == txs
    await produce_block(again, txs[:2])
    await again.stop()
    third = node_at(tmp_path)
    await third.start()
    assert len(third.mempool) == 1 and txs[2].txid in third.mempool
    saved = list(third.store.iterate(schema.PREFIXES["mempool"]))
    assert [key for key, _ in saved] == [schema.mempool_key(txs[2].txid)]
    await third.stop()


async def test_stop_twice_is_harmless(tmp_path: Path) -> None:
    """stop() on a stopped node does nothing."""
    node = node_at(tmp_path)
    await node.start()
    await node.stop()
    await node.stop()
    assert not node.started


# --- block import -------------------------------------------------------------------------


async def test_connected_block_is_logged(tmp_path: Path) -> None:
    """Each connected block is one log event with height, hash prefix, loss, accuracy, txs."""
    with structlog.testing.capture_logs() as logs:
        node = node_at(tmp_path)
        await node.start()
        block = await produce_block(node)
        await node.stop()
    events = [e for e in logs if e["event"] == "block_connected"]
    assert len(events) == 1
    event = events[0]
    assert event["height"] == 1 and event["hash"] == block.hash.hex()[:16]
    assert event["txs"] == 0
    assert event["loss"] == pytest.approx(block.header.claimed_loss / 1e6)
    assert 0 <= event["accuracy"] <= 1


async def test_invalid_block_is_rejected_logged_and_counted(tmp_path: Path) -> None:
    """A block with a bad signature raises, is logged with its reason and counted."""
    with structlog.testing.capture_logs() as logs:
        node = node_at(tmp_path)
        await node.start()
        block = await node.run_chain(build_block, node, (), False, 0)
        forged = dataclasses.replace(
            block, header=dataclasses.replace(block.header, signature=bytes(64))
        )
        with pytest.raises(InvalidBlock):
            await node.submit_block(forged)
        assert node.chain.tip.height == 0
        counted = node.metrics.registry.get_sample_value(
            "derelayl_blocks_rejected_total", {"reason": "BlockSignatureError"}
        )
        await node.stop()
    assert counted == 1
    rejected = [e for e in logs if e["event"] == "block_rejected"]
    assert rejected and "signature" in rejected[0]["reason"]


async def test_reorganisation_returns_transactions_to_the_mempool(tmp_path: Path) -> None:
    """Transactions of blocks disconnected by a heavier branch go back to the mempool."""
    genesis = make_genesis(decay_ms=HOUR_MS)
    node, other = node_at(tmp_path / "a", genesis), node_at(tmp_path / "b", genesis)
    await node.start()
    await other.start()
    tx = make_transfer(ALICE, CHAIN_ID, 0, MINER.account, DRL, 10_000)
    await node.submit_transaction(tx)
    await produce_block(node, [tx], train=True, seed=1)
    assert tx.txid not in node.mempool
    branch = [await produce_block(other, train=True, seed=s) for s in (2, 3)]
    for block in branch:
        await node.submit_block(block)
    assert node.chain.tip.hash == branch[-1].hash
    assert tx.txid in node.mempool
    await node.stop()
    await other.stop()


async def test_chain_ops_answer_for_blocks_and_transactions(tmp_path: Path) -> None:
    """has_block, get_block_bytes, has_transaction and headers_after serve the peer network."""
    node = node_at(tmp_path)
    await node.start()
    tx = make_transfer(ALICE, CHAIN_ID, 0, MINER.account, DRL, 10_000)
    await node.submit_transaction(tx)
    assert node.has_transaction(tx.txid)
    assert node.get_transaction_bytes(tx.txid) == tx.encode()
    block = await produce_block(node, [tx])
    assert node.has_block(block.hash) and not node.has_block(bytes(32))
    assert node.get_block_bytes(block.hash) == block.encode()
    assert node.get_block_bytes(bytes(32)) is None
    assert node.has_transaction(tx.txid)
    headers = await node.headers_after([node.genesis_hash], 10)
    assert [h.hash for h in headers] == [block.hash]
    assert node.tip_height() == 1 and node.locator()[0] == block.hash
    await node.stop()


# --- the listening socket -----------------------------------------------------------------


def test_port_in_use_is_reported() -> None:
    """Binding a taken port fails at once with a runtime error naming the address."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
