"""Two groups mine apart, then join: everyone settles on the most-work chain, and a
transaction confirmed only on the losing branch goes back to the mempool and is confirmed on
the winning one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, DEVNET_CHAIN_ID
from derelayl_chain.transaction import make_transfer
from tests.functional.framework import (
    TestNode,
    connect_nodes,
    sync_blocks,
    wait_for,
    write_fast_genesis,
)

pytestmark = [pytest.mark.functional, pytest.mark.slow]

ALICE = KeyPair.from_seed(b"\xa1" * 32)
BOB = KeyPair.from_seed(b"\xb0" * 32)


def tx_status(node: TestNode, txid: str) -> dict[str, object]:
    code, document = node.get(f"/txs/{txid}")
    return document if code == 200 and isinstance(document, dict) else {"status": "unknown"}


def test_partitioned_groups_settle_on_most_work_chain(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """The lone group's branch loses; its transaction returns and confirms on the winner."""
    genesis = write_fast_genesis(
        tmp_path / "genesis.json", {ALICE.account: 100 * BASE_UNITS_PER_DRL}
    )
    a1 = make_node(genesis=genesis, data="digits:0/2").start()
    a2 = make_node(genesis=genesis, data="digits:1/2", peers=[a1]).start()
    lone = make_node(genesis=genesis, data="digits:0/1").start()

    tx = make_transfer(ALICE, DEVNET_CHAIN_ID, 0, BOB.account, 5 * BASE_UNITS_PER_DRL, 10_000)
    code, answer = lone.post("/txs", {"tx": tx.encode().hex()})
    assert code == 202, answer
    txid = tx.txid.hex()
    wait_for(lambda: tx_status(lone, txid)["status"] == "confirmed", 60, "confirmation on lone")
    losing_block = tx_status(lone, txid)["block"]

    lone.stop()
    lone.mine = False
    lone.start()
    lone_height = lone.height()
    wait_for(lambda: a1.height() >= lone_height + 10, 180, "the larger group to pull ahead")
    assert tx_status(a1, txid)["status"] == "unknown"  # the groups never talked

    connect_nodes(a1, lone)
    tip = sync_blocks([a1, a2, lone], timeout=120)
    assert lone.head() == tip
    code, block = lone.get(f"/blocks/{losing_block}")
    assert code != 200 or block.get("canonical") is False

    wait_for(lambda: tx_status(a1, txid)["status"] == "confirmed", 90, "confirmation on the winner")
    winning_block = tx_status(a1, txid)["block"]
    assert winning_block != losing_block
    wait_for(lambda: tx_status(lone, txid).get("block") == winning_block, 60, "lone agreeing")
    code, bob = a1.get(f"/accounts/{BOB.address}")
    assert code == 200 and bob["balance"] == str(5 * BASE_UNITS_PER_DRL)
