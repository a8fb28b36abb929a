"""Every kind of bad HTTP input gets a 4xx JSON error while the node keeps mining."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, DEVNET_CHAIN_ID
from derelayl_chain.transaction import Transaction, make_transfer
from tests.functional.framework import TestNode, wait_for, wait_height, write_fast_genesis

pytestmark = [pytest.mark.functional]

ALICE = KeyPair.from_seed(b"\xa1" * 32)
BOB = KeyPair.from_seed(b"\xb0" * 32)
DRL = BASE_UNITS_PER_DRL
CHAIN = DEVNET_CHAIN_ID
FEE = 10_000


def error_of(node: TestNode, method: str, path: str, body: bytes | None = None) -> str:
    """``"<status> <code>"`` of a request that must fail with a 4xx JSON error body."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, raw = node.request(method, path, body, headers)
    assert 400 <= status < 500, (method, path, status, raw[:200])
    document = json.loads(raw)
    assert set(document) == {"error"}, document
    assert set(document["error"]) == {"code", "message"}, document
    assert document["error"]["message"] and "Traceback" not in document["error"]["message"]
    return f"{status} {document['error']['code']}"


def tx_body(tx: Transaction) -> bytes:
    return json.dumps({"tx": tx.encode().hex()}).encode()


def with_bad_signature(tx: Transaction) -> Transaction:
    signature = bytearray(tx.signature)
    signature[0] ^= 1
    return replace(tx, signature=bytes(signature))


MALFORMED_BODIES = {
    "not JSON": (b"{not json", "400 bad_request"),
    "empty body": (b"", "400 bad_request"),
    "deeply nested": (b"[" * 10_000 + b"]" * 10_000, "400 bad_request"),
    "nested beyond the limit": (json.dumps({"tx": [[[["ab"]]]]}).encode(), "400 bad_request"),
    "oversized": (b'{"tx": "' + b"ab" * 200_000 + b'"}', "413 too_large"),
    "tx not a string": (json.dumps({"tx": 12}).encode(), "400 bad_request"),
    "an array": (json.dumps(["tx"]).encode(), "400 bad_request"),
    "extra field": (json.dumps({"tx": "00", "fee": 1}).encode(), "400 bad_request"),
    "not hex": (json.dumps({"tx": "zz"}).encode(), "400 bad_request"),
    "not a transaction": (json.dumps({"tx": "c0"}).encode(), "400 malformed"),
}

MISTYPED = ALICE.address[:-1] + ("0" if ALICE.address[-1] != "0" else "1")  # bad checksum
BAD_QUERIES = {
    "/accounts/drl1notanaddress": "400 invalid_address",
    f"/accounts/{MISTYPED}": "400 invalid_address",
    f"/accounts/{ALICE.address}x/rewards": "400 invalid_address",
    "/blocks?limit=1000": "400 bad_request",
    "/blocks?limit=0": "400 bad_request",
    "/blocks?limit=ten": "400 bad_request",
    "/blocks?from=-1": "400 bad_request",
    f"/accounts/{ALICE.address}/txs?limit=101": "400 bad_request",
    f"/accounts/{ALICE.address}/txs?before=yesterday": "400 bad_request",
    "/model/history?limit=-5": "400 bad_request",
    "/blocks/" + "00" * 32: "404 not_found",
    "/blocks/123456789": "404 not_found",
    "/blocks/xyz": "400 bad_request",
    "/txs/xyz": "400 bad_request",
    "/txs/" + "00" * 32: "404 not_found",
    "/no/such/path": "404 not_found",
}


def test_bad_input_is_answered_with_json_errors_while_mining(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """Malformed, oversized, nested, mistyped and invalid requests: a 4xx each, node unharmed."""
    genesis = write_fast_genesis(tmp_path / "genesis.json", {ALICE.account: 10 * DRL})
    node = make_node(genesis=genesis).start()
    wait_height(node, 2)

    seen = {
        name: error_of(node, "POST", "/txs", body) for name, (body, _) in MALFORMED_BODIES.items()
    }
    assert seen == {name: code for name, (_, code) in MALFORMED_BODIES.items()}
    seen = {path: error_of(node, "GET", path) for path in BAD_QUERIES}
    assert seen == BAD_QUERIES
    assert error_of(node, "DELETE", "/txs") == "405 method_not_allowed"

    good = make_transfer(ALICE, CHAIN, 0, BOB.account, 1 * DRL, FEE)
    invalid = {
        "bad signature": (with_bad_signature(good), "422 invalid_signature"),
        "wrong chain id": (make_transfer(ALICE, CHAIN + 1, 0, BOB.account, DRL, FEE), "422"),
        "nonce gap": (make_transfer(ALICE, CHAIN, 1_000, BOB.account, DRL, FEE), "422 nonce_gap"),
        "overspend": (make_transfer(ALICE, CHAIN, 0, BOB.account, 50 * DRL, FEE),
                      "422 insufficient_funds"),
        "unfunded sender": (make_transfer(BOB, CHAIN, 0, ALICE.account, DRL, FEE),
                            "422 insufficient_funds"),
    }  # fmt: skip
    for name, (tx, expected) in invalid.items():
        assert error_of(node, "POST", "/txs", tx_body(tx)).startswith(expected), name
    code, answer = node.get(f"/txs/{good.txid.hex()}")
    assert code == 404, answer  # nothing of the above reached the mempool

    status, answer = node.post("/txs", {"tx": good.encode().hex()})
    assert status == 202, answer
    assert error_of(node, "POST", "/txs", tx_body(good)) == "409 duplicate"
    wait_for(
        lambda: node.get(f"/txs/{good.txid.hex()}")[1].get("status") == "confirmed",
        60,
        "the good transaction to confirm",
    )
    assert error_of(node, "POST", "/txs", tx_body(good)) == "409 duplicate"  # a replay
    stale = make_transfer(ALICE, CHAIN, 0, ALICE.account, 2 * DRL, FEE)  # nonce 0 is used
    assert error_of(node, "POST", "/txs", tx_body(stale)) == "422 nonce_too_low"

    height = node.height()
    wait_height(node, height + 2)  # still mining after all of it
    assert node.running
    assert node.get_ok(f"/accounts/{BOB.address}")["balance"] == str(DRL)
