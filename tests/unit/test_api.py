"""Tests for the public HTTP API (derelayl_chain/api.py), against a real node.

Each test runs a :class:`Node` on a LevelDB store in a temporary directory, with mining off,
behind aiohttp's in-process test server. Blocks are produced in the test with the relay step
(``train_candidate`` / ``empty_candidate`` and ``assemble_block``) and submitted through the
node, exactly as the miner does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from safetensors.numpy import load as load_safetensors

from derelayl_chain.access import sign_download
from derelayl_chain.api import MAX_PAGE, PUBLIC_BODY_LIMIT, create_app, public_routes
from derelayl_chain.block import Block
from derelayl_chain.config import NodeConfig
from derelayl_chain.crypto import KeyPair
from derelayl_chain.node import Node
from derelayl_chain.transaction import Transaction, Transfer, make_access, make_transfer
from tests.unit.node_helpers import (
    ALICE,
    CHAIN_ID,
    DRL,
    MINER,
    make_genesis,
    produce_block,
)

BOB = KeyPair.from_seed(b"\x0b" * 32)
FEE = 10_000


# --- fixtures and helpers -----------------------------------------------------------------


async def start_client(node: Node) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(create_app(node)))
    await client.start_server()
    return client


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A started node on a fresh LevelDB store, mining off (stopped by the client fixture)."""
    config = NodeConfig(data_dir=tmp_path / "node", mine=False, port=8600)
    node = Node(config, make_genesis())
    yield node
    await node.stop()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An HTTP client talking to the node's application."""
    client = await start_client(node)
    yield client
    await client.close()


Client = TestClient[web.Request, web.Application]


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, str]:
    """The response is the one error shape with the expected status (and code)."""
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"] and "\n" not in body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, str] = body["error"]
    return error


async def post_tx(client: Client, tx: Transaction) -> Any:
    return await client.post("/txs", json={"tx": tx.encode().hex()})


def transfer(
    nonce: int, amount: int = DRL, key: KeyPair = ALICE, to: bytes = BOB.account
) -> Transaction:
    return make_transfer(key, CHAIN_ID, nonce, to, amount, FEE)


async def mine(node: Node, txs: Sequence[Transaction] = (), train: bool = False) -> Block:
    return await produce_block(node, txs, train=train)


# --- status, blocks ------------------------------------------------------------------------


async def test_status_describes_the_tip(client: Client, node: Node) -> None:
    """GET /status names the chain, the tip and the model in the documented fields."""
    body = await get_json(client, "/status")
    assert body["chain_id"] == CHAIN_ID
    assert body["height"] == 0
    assert body["head"] == node.genesis_hash.hex()
    assert body["syncing"] is False
    assert body["peers"] == 0
    assert body["difficulty"] == node.genesis.params.initial_difficulty
    model = body["model"]
    assert model["loss_fixed"] == node.genesis.initial_loss
    assert model["loss"] == pytest.approx(node.genesis.initial_loss / 1e6)
    assert isinstance(model["accuracy_fixed"], int)
    assert model["accuracy"] == pytest.approx(model["accuracy_fixed"] / 1e6)


async def test_blocks_lists_canonical_blocks_in_height_order(client: Client, node: Node) -> None:
    """GET /blocks pages through the canonical chain, oldest first, with a next cursor."""
    await mine(node)
    await mine(node)
    body = await get_json(client, "/blocks?from=0&limit=2")
    assert [item["height"] for item in body["items"]] == [0, 1]
    assert body["next"] == 2
    latest = await get_json(client, "/blocks")
    assert [item["height"] for item in latest["items"]] == [0, 1, 2]
    assert latest["next"] is None
    assert latest["items"][2]["hash"] == node.chain.tip.hash.hex()


@pytest.mark.parametrize(
    "query",
    [f"limit={MAX_PAGE + 1}", "limit=0", "limit=-1", "limit=abc", "from=x", "from=-3", "limit=1e3"],
)
async def test_blocks_rejects_bad_paging(client: Client, query: str) -> None:
    """A limit outside 1..100 or a non-numeric from is a 400 with the error shape."""
    await assert_error(await client.get(f"/blocks?{query}"), 400, "bad_request")


async def test_block_by_height_and_hash(client: Client, node: Node) -> None:
    """GET /blocks/{height} and /blocks/{hash} give the same block with its rewards."""
    tx = transfer(0)
    assert (await post_tx(client, tx)).status == 202
    block = await mine(node, [tx], train=True)
    by_height = await get_json(client, "/blocks/1")
    by_hash = await get_json(client, f"/blocks/{block.hash.hex()}")
    assert by_height == by_hash
    assert by_height["hash"] == block.hash.hex()
    assert by_height["parent"] == node.genesis_hash.hex()
    assert by_height["transactions"] == [tx.txid.hex()]
    assert by_height["proposer"] == MINER.address
    assert by_height["delta_size"] == len(block.delta)
    assert by_height["loss_fixed"] == block.header.claimed_loss
    improvement = node.genesis.initial_loss - block.header.claimed_loss
    assert by_height["improvement_fixed"] == improvement > 0
    rewards = by_height["rewards"]
    assert rewards["fees"] == str(FEE)
    assert int(rewards["emission"]) > 0
    assert int(rewards["emission"]) + FEE == block.header.reward
    assert rewards["reward_to"] == MINER.address
    assert by_height["canonical"] is True and by_height["confirmations"] == 1


@pytest.mark.parametrize(("ident", "status"), [("7", 404), ("ab" * 32, 404), ("xyz", 400)])
async def test_unknown_or_malformed_block(client: Client, ident: str, status: int) -> None:
    """An unknown height or hash is 404; something that is neither is 400."""
    await assert_error(await client.get(f"/blocks/{ident}"), status)


@pytest.mark.parametrize("ident", ["1" * 64, "0" * 64, "9876543210" * 6 + "0123"])
async def test_block_id_of_64_decimal_digits_is_a_hash(client: Client, ident: str) -> None:
    """64 characters are a block hash even when all are decimal digits: looked up by hash
    (404 for an unknown one), never read as a height (which would be a 400, too long)."""
    error = await assert_error(await client.get(f"/blocks/{ident}"), 404, "not_found")
    assert ident in error["message"] and "height" not in error["message"]


@pytest.mark.parametrize("query", ["", "?from=0", "?from=0&limit=2", "?from=1&limit=1", "?from=9"])
async def test_blocks_and_model_history_page_alike(client: Client, node: Node, query: str) -> None:
    """/blocks and /model/history page through the best chain the same way (heights, next)."""
    await mine(node)
    await mine(node)
    blocks = await get_json(client, f"/blocks{query}")
    history = await get_json(client, f"/model/history{query}")
    assert [item["height"] for item in blocks["items"]] == [
        item["height"] for item in history["items"]
    ]
    assert blocks["next"] == history["next"]


# --- transactions --------------------------------------------------------------------------


async def test_post_transaction_then_pending_then_confirmed(client: Client, node: Node) -> None:
    """POST /txs answers 202 with the txid; GET /txs shows it pending, then confirmed."""
    tx = transfer(0)
    response = await post_tx(client, tx)
    assert response.status == 202
    assert await response.json() == {"txid": tx.txid.hex(), "status": "pending"}
    pending = await get_json(client, f"/txs/{tx.txid.hex()}")
    assert pending["status"] == "pending"
    assert pending["amount"] == str(DRL) and pending["fee"] == str(FEE)
    assert pending["from"] == ALICE.address and pending["to"] == BOB.address
    block = await mine(node, node.mempool.select(10, 1))
    await mine(node)
    confirmed = await get_json(client, f"/txs/{tx.txid.hex()}")
    assert confirmed["status"] == "confirmed"
    assert confirmed["block"] == block.hash.hex()
    assert confirmed["height"] == 1
    assert confirmed["confirmations"] == 2


async def test_unknown_and_malformed_txid(client: Client) -> None:
    """An unknown txid is 404, a malformed one 400."""
    await assert_error(await client.get(f"/txs/{'cd' * 32}"), 404, "not_found")
    await assert_error(await client.get("/txs/nothex"), 400, "bad_request")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "bad_request"),
        (b"", "bad_request"),
        (b'["tx"]', "bad_request"),
        (b'{"tx": 5}', "bad_request"),
        (b'{"tx": null}', "bad_request"),
        (b'{"tx": "00", "extra": 1}', "bad_request"),
        (b'{"transaction": "00"}', "bad_request"),
        (b'{"tx": "zz"}', "bad_request"),
        (b'{"tx": "abc"}', "bad_request"),
        (b'{"tx": "ab cd"}', "bad_request"),
        (b'{"tx": "c0"}', "malformed"),
        (b'{"tx": [[[[[[[[1]]]]]]]]}', "bad_request"),
        (b"[" * 5000 + b"]" * 5000, "bad_request"),
        (b'{"tx": "\xff"}', "bad_request"),
    ],
)
async def test_post_transaction_rejects_malformed_bodies(
    client: Client, body: bytes, code: str
) -> None:
    """Malformed JSON, wrong types, deep nesting and bad hex or encoding are 400s."""
    response = await client.post("/txs", data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, code)


async def test_post_transaction_rejects_oversized_body(client: Client) -> None:
    """A body over the public limit is refused with 413 before it is parsed."""
    body = json.dumps({"tx": "00" * PUBLIC_BODY_LIMIT}).encode()
    response = await client.post("/txs", data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, 413, "too_large")


async def test_post_transaction_rejects_oversized_chunked_body(client: Client) -> None:
    """A chunked body with no Content-Length is cut off at the limit with 413 too."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"tx": "'
        for _ in range(PUBLIC_BODY_LIMIT // 1024 + 1):
            yield b"00" * 512
        yield b'"}'

    response = await client.post(
        "/txs", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 413, "too_large")


async def test_post_transaction_rejects_oversized_transaction(client: Client) -> None:
    """A hex string decoding to more than a transaction's size limit is a 413."""
    response = await client.post("/txs", json={"tx": "00" * 4096})
    await assert_error(response, 413, "too_large")


async def test_post_transaction_rejects_bad_signature(client: Client) -> None:
    """A transaction whose signature does not verify is 422 invalid_signature."""
    tx = transfer(0)
    forged = Transaction(tx.chain_id, tx.sender, tx.nonce, tx.fee, Transfer(BOB.account, 2 * DRL),
                         tx.signature)  # fmt: skip
    await assert_error(await post_tx(client, forged), 422, "invalid_signature")


async def test_post_transaction_rejects_wrong_chain_id(client: Client) -> None:
    """A transaction signed for another network is 422."""
    tx = make_transfer(ALICE, CHAIN_ID + 1, 0, BOB.account, DRL, FEE)
    error = await assert_error(await post_tx(client, tx), 422, "invalid_transaction")
    assert "chain" in error["message"]


async def test_post_transaction_rejects_replay(client: Client, node: Node) -> None:
    """Re-sending a confirmed transaction is 409; reusing its nonce is 422 nonce_too_low."""
    tx = transfer(0)
    assert (await post_tx(client, tx)).status == 202
    await assert_error(await post_tx(client, tx), 409, "duplicate")
    await mine(node, [tx])
    await assert_error(await post_tx(client, tx), 409, "duplicate")
    await assert_error(await post_tx(client, transfer(0, amount=2 * DRL)), 422, "nonce_too_low")


async def test_post_transaction_rejects_nonce_gap(client: Client, node: Node) -> None:
    """A nonce beyond the sender's pending window is 422 nonce_gap."""
    far = node.mempool.policy.max_per_sender + 5
    await assert_error(await post_tx(client, transfer(far)), 422, "nonce_gap")


async def test_post_transaction_rejects_overspend(client: Client) -> None:
    """Spending more than the balance is 422 insufficient_funds."""
    await assert_error(await post_tx(client, transfer(0, amount=10**6 * DRL)), 422,
                       "insufficient_funds")  # fmt: skip


async def test_post_transaction_from_unknown_sender(client: Client) -> None:
    """A sender with no account has nothing to spend: 422 insufficient_funds."""
    tx = make_transfer(BOB, CHAIN_ID, 0, ALICE.account, DRL, FEE)
    await assert_error(await post_tx(client, tx), 422, "insufficient_funds")


# --- accounts ------------------------------------------------------------------------------


async def test_account_balance_and_next_nonce(client: Client, node: Node) -> None:
    """GET /accounts/{addr}: amounts as decimal strings, next_nonce counts pending txs."""
    before = await get_json(client, f"/accounts/{ALICE.address}")
    assert before["balance"] == str(1000 * DRL)
    assert (before["nonce"], before["next_nonce"]) == (0, 0)
    for nonce in range(2):
        assert (await post_tx(client, transfer(nonce))).status == 202
    pending = await get_json(client, f"/accounts/{ALICE.address}")
    assert (pending["nonce"], pending["next_nonce"]) == (0, 2)
    await mine(node, node.mempool.select(10, 1))
    after = await get_json(client, f"/accounts/{ALICE.address}")
    assert after["balance"] == str(1000 * DRL - 2 * (DRL + FEE))
    assert (after["nonce"], after["next_nonce"]) == (2, 2)
    bob = await get_json(client, f"/accounts/{BOB.address}")
    assert bob["balance"] == str(2 * DRL)


async def test_unseen_account_is_empty(client: Client) -> None:
    """A valid address the chain never saw has zero balance, not a 404."""
    body = await get_json(client, f"/accounts/{KeyPair.from_seed(b'z' * 32).address}")
    assert body["balance"] == "0" and body["nonce"] == 0 and body["licensed"] is False


MISTYPED = ALICE.address[:-1] + ("1" if ALICE.address[-1] == "0" else "0")


@pytest.mark.parametrize("address", ["drl1xyz", "0x1234", MISTYPED])
async def test_bad_address_is_400(client: Client, address: str) -> None:
    """Malformed or mistyped addresses are 400 invalid_address on every account route."""
    for suffix in ("", "/rewards", "/txs"):
        await assert_error(await client.get(f"/accounts/{address}{suffix}"), 400,
                           "invalid_address")  # fmt: skip


async def test_history_newest_first_with_cursor(client: Client, node: Node) -> None:
    """GET /accounts/{addr}/txs lists newest first and pages with the before cursor."""
    for nonce in range(3):
        tx = transfer(nonce)
        assert (await post_tx(client, tx)).status == 202
        await mine(node, [tx])
    page = await get_json(client, f"/accounts/{ALICE.address}/txs?limit=2")
    assert [item["nonce"] for item in page["items"]] == [2, 1]
    assert all(item["direction"] == "out" for item in page["items"])
    rest = await get_json(client, f"/accounts/{ALICE.address}/txs?limit=2&before={page['next']}")
    assert [item["nonce"] for item in rest["items"]] == [0]
    assert rest["next"] is None
    bob = await get_json(client, f"/accounts/{BOB.address}/txs")
    assert [item["direction"] for item in bob["items"]] == ["in", "in", "in"]


async def test_history_lists_pending_transactions(client: Client) -> None:
    """The first history page shows the sender's pending transactions."""
    tx = transfer(0)
    assert (await post_tx(client, tx)).status == 202
    page = await get_json(client, f"/accounts/{ALICE.address}/txs")
    assert [item["txid"] for item in page["pending"]] == [tx.txid.hex()]


@pytest.mark.parametrize("query", ["limit=101", "before=abc", "before=1-x", "limit=0"])
async def test_history_rejects_bad_paging(client: Client, query: str) -> None:
    """Bad limit or cursor values are 400."""
    await assert_error(await client.get(f"/accounts/{ALICE.address}/txs?{query}"), 400)


async def test_rewards_of_a_proposer(client: Client, node: Node) -> None:
    """GET /accounts/{addr}/rewards totals emission and fees and lists each block."""
    tx = transfer(0)
    assert (await post_tx(client, tx)).status == 202
    block = await mine(node, [tx], train=True)
    body = await get_json(client, f"/accounts/{MINER.address}/rewards")
    totals = body["totals"]
    assert totals["blocks"] == 1
    assert int(totals["emission"]) + int(totals["fees"]) == block.header.reward
    assert totals["fees"] == str(FEE)
    assert int(totals["shares"]) > 0 and totals["share_ppm"] == 1_000_000
    assert [item["height"] for item in body["items"]] == [1]
    assert body["items"][0]["block"] == block.hash.hex()
    await assert_error(await client.get(f"/accounts/{MINER.address}/rewards?limit=101"), 400)


# --- model ---------------------------------------------------------------------------------


async def test_model_and_history(client: Client, node: Node) -> None:
    """GET /model describes the tip's model; /model/history lists loss per height."""
    block = await mine(node, train=True)
    model = await get_json(client, "/model")
    assert model["height"] == 1 and model["hash"] == block.hash.hex()
    assert model["loss_fixed"] == block.header.claimed_loss
    assert model["parameters"] > 0
    history = await get_json(client, "/model/history?from=0")
    assert [item["height"] for item in history["items"]] == [0, 1]
    assert history["items"][1]["improvement_fixed"] == (
        node.genesis.initial_loss - block.header.claimed_loss
    )
    assert history["items"][1]["proposer"] == MINER.address
    await assert_error(await client.get("/model/history?limit=500"), 400)


def signed_headers(key: KeyPair, path: str = "/model/weights") -> dict[str, str]:
    return sign_download(key, CHAIN_ID, path, time.time_ns() // 1_000_000)


async def test_weights_need_a_signature(client: Client) -> None:
    """Unsigned or badly signed weight downloads are 401."""
    await assert_error(await client.get("/model/weights"), 401, "unauthorized")
    headers = signed_headers(ALICE, path="/model/other")
    await assert_error(await client.get("/model/weights", headers=headers), 401, "unauthorized")


async def test_weights_refused_without_licence(client: Client) -> None:
    """A valid signature from an account without licence or shares is 403."""
    response = await client.get("/model/weights", headers=signed_headers(BOB))
    await assert_error(response, 403, "forbidden")


async def test_weights_for_licence_holder_and_contributor(client: Client, node: Node) -> None:
    """A licence bought with an access payment, or contribution shares, unlock the weights."""
    access = make_access(ALICE, CHAIN_ID, 0, node.genesis.params.licence_price, FEE)
    assert (await post_tx(client, access)).status == 202
    await mine(node, [access], train=True)
    for key in (ALICE, MINER):
        response = await client.get("/model/weights", headers=signed_headers(key))
        assert response.status == 200, await response.text()
        assert response.headers["X-DRL-Block"] == node.chain.tip.hash.hex()
        tensors = load_safetensors(await response.read())
        assert tensors and all(array.size for array in tensors.values())


async def test_open_model_needs_no_signature(tmp_path: Path) -> None:
    """With genesis model_open the weights are served to anyone."""
    config = NodeConfig(data_dir=tmp_path / "open", mine=False, port=8600)
    node = Node(config, make_genesis(model_open=True))
    client = await start_client(node)
    try:
        response = await client.get("/model/weights")
        assert response.status == 200
        assert response.content_type == "application/octet-stream"
        assert load_safetensors(await response.read())
    finally:
        await client.close()


# --- node ----------------------------------------------------------------------------------


async def test_mempool_summary(client: Client) -> None:
    """GET /mempool counts pending transactions, fees as a decimal string."""
    assert (await post_tx(client, transfer(0))).status == 202
    body = await get_json(client, "/mempool")
    assert body["count"] == 1 and body["total_fees"] == str(FEE)


async def test_peers_lists_none(client: Client) -> None:
    """GET /peers of a node without peers is an empty list."""
    assert await get_json(client, "/peers") == {"items": [], "count": 0, "syncing": False}


async def test_metrics_in_prometheus_format(client: Client, node: Node) -> None:
    """GET /metrics exposes height, counters and request latency as Prometheus text."""
    await mine(node)
    assert (await post_tx(client, transfer(0))).status == 202
    assert (await post_tx(client, transfer(0))).status == 409
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert "derelayl_chain_height 1.0" in text
    assert "derelayl_blocks_connected_total 1.0" in text
    assert "derelayl_transactions_accepted_total 1.0" in text
    assert 'derelayl_transactions_rejected_total{reason="DuplicateTransaction"} 1.0' in text
    assert 'derelayl_http_request_duration_seconds_count{method="POST",route="/txs"}' in text


async def test_openapi_documents_every_public_route(client: Client) -> None:
    """GET /openapi.json is an OpenAPI 3 document naming every public route and method."""
    document = await get_json(client, "/openapi.json")
    assert document["openapi"].startswith("3.")
    for route in public_routes():
        assert isinstance(route, web.RouteDef)
        assert route.method.lower() in document["paths"][route.path], route.path
    schema = document["components"]["schemas"]["SubmitTransaction"]
    assert schema["properties"]["tx"]["type"] == "string"


@pytest.mark.parametrize(
    ("path", "schema"),
    [("/status", "Status"), (f"/accounts/{ALICE.address}", "Account"), ("/mempool", "Mempool")],
)
async def test_openapi_schemas_match_the_answers(client: Client, path: str, schema: str) -> None:
    """Documented fields and answered fields are the same set."""
    document = await get_json(client, "/openapi.json")
    properties = document["components"]["schemas"][schema]["properties"]
    assert set(await get_json(client, path)) == set(properties)


async def test_unknown_route_and_method_use_the_error_shape(client: Client) -> None:
    """aiohttp's own 404 and 405 answers are rendered in the JSON error shape."""
    await assert_error(await client.get("/nowhere"), 404, "not_found")
    await assert_error(await client.delete("/status"), 405, "method_not_allowed")


async def test_unexpected_exception_is_a_generic_500(node: Node) -> None:
    """A bug in a handler is a 500 with a generic message, never the exception text."""
    app = create_app(node)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app.router.add_get("/broken", broken)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        error = await assert_error(await client.get("/broken"), 500, "internal")
        assert "secret" not in error["message"]
    finally:
        await client.close()
