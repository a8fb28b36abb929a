"""Two groups mine apart, then are joined: everyone settles on the most-work chain, and a
transaction confirmed only on the losing branch goes back to the mempool and is confirmed on
the winning one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from derelayl_chain.consensus import block_work, effective_difficulty
from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, DEVNET_CHAIN_ID
from derelayl_chain.transaction import make_transfer
from tests.functional.framework import (
    FAST_DECAY_MS,
    TestNode,
    connect_nodes,
    start_nodes,
    sync_blocks,
    wait_for,
    write_fast_genesis,
)

pytestmark = [pytest.mark.functional, pytest.mark.slow]

ALICE = KeyPair.from_seed(b"\xa1" * 32)
BOB = KeyPair.from_seed(b"\xb0" * 32)
AMOUNT = 5 * BASE_UNITS_PER_DRL


def tx_status(node: TestNode, txid: str) -> dict[str, Any]:
    code, document = node.get(f"/txs/{txid}")
    return document if code == 200 and isinstance(document, dict) else {"status": "unknown"}


def chain_work(node: TestNode) -> tuple[int, str]:
    """The fork-choice work of the node's best chain, recomputed by the consensus rules from
    its block summaries, and the tip it was computed to."""
    previous = node.get_ok("/blocks/0")
    work, start = 0, 1
    while True:
        items = node.get_ok(f"/blocks?from={start}&limit=100")["items"]
        for block in items:
            elapsed = block["timestamp"] - previous["timestamp"]
            work += block_work(effective_difficulty(block["difficulty"], elapsed, FAST_DECAY_MS))
            previous = block
        if len(items) < 100:
            return work, previous["hash"]
        start += 100


def test_partitioned_groups_settle_on_most_work_chain(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """The lone miner's branch loses; its transaction returns and confirms on the winner."""
    genesis = write_fast_genesis(tmp_path / "genesis.json", {ALICE.account: 100 * AMOUNT})
    a1 = make_node(genesis=genesis, data="digits:0/2")
    a2 = make_node(genesis=genesis, data="digits:1/2", peers=[a1])
    lone = make_node(genesis=genesis, data="digits:0/1")
    start_nodes([a1, a2, lone])

    # The lone group confirms a transfer, then stops mining: its branch is fixed from here on.
    tx = make_transfer(ALICE, DEVNET_CHAIN_ID, 0, BOB.account, AMOUNT, 10_000)
    txid = tx.txid.hex()
    code, answer = lone.post("/txs", {"tx": tx.encode().hex()})
    assert code == 202, answer
    wait_for(lambda: tx_status(lone, txid)["status"] == "confirmed", 60, "confirmation on lone")
    losing_block = tx_status(lone, txid)["block"]
    lone.mine = False
    lone.restart()
    lone_work, lone_tip = chain_work(lone)

    # The two-miner group keeps going until its chain has clearly more work.
    wait_for(lambda: chain_work(a1)[0] > lone_work + 10, 120, "the larger group to pull ahead")
    assert tx_status(a1, txid)["status"] == "unknown"  # the groups never talked
    assert a1.hash_at(lone.get_ok(f"/blocks/{lone_tip}")["height"]) != lone_tip

    connect_nodes(a1, lone)
    sync_blocks([a1, a2, lone], timeout=90)
    assert chain_work(lone)[0] > lone_work
    code, block = lone.get(f"/blocks/{losing_block}")
    assert code == 404 or block["canonical"] is False, "the losing branch is still canonical"

    # Only the lone node ever had the transaction: it came back to its mempool, was offered
    # to the new peers and confirmed on the winning chain.
    wait_for(lambda: tx_status(a1, txid)["status"] == "confirmed", 60, "confirmation on a1")
    winning_block = tx_status(a1, txid)["block"]
    assert winning_block != losing_block
    for node in (a2, lone):
        wait_for(lambda n=node: tx_status(n, txid).get("block") == winning_block, 60, f"{node}")
    for node in (a1, a2, lone):
        assert node.get_ok(f"/accounts/{BOB.address}")["balance"] == str(AMOUNT)
