"""Every kind of bad HTTP input gets a 4xx JSON error while the node keeps mining."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, DEVNET_CHAIN_ID
from derelayl_chain.transaction import make_transfer
from tests.functional.framework import TestNode, wait_for, write_fast_genesis

pytestmark = [pytest.mark.functional, pytest.mark.slow]

ALICE = KeyPair.from_seed(b"\xa1" * 32)
BOB = KeyPair.from_seed(b"\xb0" * 32)
DRL = BASE_UNITS_PER_DRL


def assert_error(node: TestNode, method: str, path: str, body: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, raw = node.request(method, path, body, headers)
    assert 400 <= status < 500, (path, status, raw[:200])
    document = json.loads(raw)
    assert set(document) == {"error"}, document
    assert isinstance(document["error"]["code"], str) and document["error"]["code"]
    assert isinstance(document["error"]["message"], str) and document["error"]["message"]
    return status


def post_tx(node: TestNode, tx_bytes: bytes) -> int:
    return assert_error(node, "POST", "/txs", json.dumps({"tx": tx_bytes.hex()}).encode())


def test_bad_input_is_answered_with_json_errors_while_mining(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """Malformed, oversized, nested, mistyped and invalid requests: 4xx each, node unharmed."""
    genesis = write_fast_genesis(tmp_path / "genesis.json", {ALICE.account: 10 * DRL})
    node = make_node(genesis=genesis).start()
    node.wait_height(2)
    chain = DEVNET_CHAIN_ID

    assert assert_error(node, "POST", "/txs", b"{not json") == 400
    assert assert_error(node, "POST", "/txs", b"[" * 10_000 + b"]" * 10_000) in (400, 413)
    assert assert_error(node, "POST", "/txs", b'{"tx": "' + b"ab" * 200_000 + b'"}') == 413
    assert_error(node, "POST", "/txs", json.dumps({"tx": 12}).encode())
    assert_error(node, "POST", "/txs", json.dumps(["tx"]).encode())
    assert_error(node, "POST", "/txs", json.dumps({"tx": "zz"}).encode())
    assert_error(node, "POST", "/txs", json.dumps({"tx": "c0"}).encode())

    good = make_transfer(ALICE, chain, 0, BOB.account, 1 * DRL, 10_000)
    signature = bytearray(good.signature)
    signature[0] ^= 1
    assert post_tx(node, replace(good, signature=bytes(signature)).encode()) == 422
    assert post_tx(node, make_transfer(ALICE, chain + 1, 0, BOB.account, DRL, 10_000).encode())
    assert post_tx(node, make_transfer(ALICE, chain, 10_000, BOB.account, DRL, 10_000).encode())
    assert post_tx(node, make_transfer(ALICE, chain, 0, BOB.account, 50 * DRL, 10_000).encode())
    assert post_tx(node, make_transfer(BOB, chain, 0, ALICE.account, DRL, 10_000).encode())

    status, answer = node.post("/txs", {"tx": good.encode().hex()})
    assert status == 202, answer
    assert post_tx(node, good.encode()) == 409  # the same transaction again
    wait_for(
        lambda: node.get(f"/txs/{good.txid.hex()}")[1].get("status") == "confirmed",
        60,
        "the good transaction to confirm",
    )
    assert post_tx(node, good.encode()) in (409, 422)  # a replay of a confirmed transaction

    assert_error(node, "GET", "/accounts/drl1notanaddress")
    assert_error(node, "GET", "/accounts/" + ALICE.address[:-1] + "0")
    assert_error(node, "GET", "/blocks?from=0&limit=1000")
    assert_error(node, "GET", "/blocks?from=-1")
    assert_error(node, "GET", "/blocks/" + "00" * 32)
    assert_error(node, "GET", "/txs/xyz")
    assert_error(node, "GET", "/no/such/path")

    height = node.height()
    node.wait_height(height + 2)
    assert node.running
