"""Tests for the peer network (derelayl_chain/p2p.py and its wire module).

Every node here is a real :class:`PeerNetwork` serving real aiohttp routes on 127.0.0.1, over a
real :class:`Chain` on an in-memory store; the blocks are trained and signed by the relay step.
Peers that must misbehave are small aiohttp servers that speak the wire format with bad data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from derelayl_chain import _p2p_wire as wire
from derelayl_chain.block import Block, BlockHeader
from derelayl_chain.chain import Chain
from derelayl_chain.chain_records import ImportResult
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import DecodeError, InvalidSignature, NonceTooLow
from derelayl_chain.genesis import ConsensusParams, GenesisConfig
from derelayl_chain.learning.data import load_miner_data
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import initial_weights
from derelayl_chain.learning.task import BUILTIN_TASKS
from derelayl_chain.learning.train import TrainingConfig
from derelayl_chain.learning.weights import model_hash
from derelayl_chain.p2p import PeerNetwork, PeerPolicy
from derelayl_chain.relay import (
    assemble_block,
    earliest_timestamp,
    train_candidate,
)
from derelayl_chain.storage.memory import MemoryStore
from derelayl_chain.transaction import Transaction, make_transfer, verify_transaction

GENESIS_MS = 1_700_000_000_000
NOW_MS = GENESIS_MS + 10**8
"""Every chain's clock: far after the test blocks, so none of them is from the future."""
CHAIN_BLOCKS = 6
MINER = KeyPair.from_seed(bytes(range(32)))
FUNDED = KeyPair.from_seed(bytes(range(1, 33)))
FAST = PeerPolicy(
    connect_timeout_s=1.0,
    request_timeout_s=10.0,
    retry_delay_s=0.02,
    exchange_interval_s=0.2,
    sync_interval_s=0.2,
)
WAIT_S = 20.0


# --- the chain the nodes share -------------------------------------------------------------------


@dataclass(frozen=True)
class SharedChain:
    genesis: GenesisConfig
    blocks: tuple[Block, ...]
    """A valid chain of CHAIN_BLOCKS blocks on genesis, in height order."""

    def chain(self, height: int = 0) -> Chain:
        """A fresh chain holding the first ``height`` blocks."""
        chain = Chain(MemoryStore(), self.genesis, clock=lambda: NOW_MS)
        for block in self.blocks[:height]:
            assert chain.submit_block(block).status == "connected"
        return chain


def make_genesis() -> GenesisConfig:
    task = BUILTIN_TASKS["digits-mlp"]
    weights = initial_weights(task)
    return GenesisConfig(
        chain_id=77,
        timestamp_ms=GENESIS_MS,
        task=task,
        initial_loss=evaluate(task, weights).loss,
        initial_model_hash=model_hash(weights),
        params=ConsensusParams(),
        allocations=((FUNDED.account, 10**15),),
    )


def build_blocks(genesis: GenesisConfig, count: int) -> tuple[Block, ...]:
    """``count`` blocks trained and signed by the relay step, each improving on the previous."""
    chain = Chain(MemoryStore(), genesis, clock=lambda: NOW_MS)
    data = load_miner_data("digits:0/1", genesis.task)
    blocks: list[Block] = []
    seed = 0
    while len(blocks) < count:
        seed += 1
        assert seed < 4 * count, "training stopped improving the model"
        candidate = train_candidate(chain, data, TrainingConfig(seed=seed))
        timestamp = earliest_timestamp(chain, candidate.evaluation.loss)
        if timestamp is None:
            continue
        block = assemble_block(chain, MINER, candidate, timestamp)
        assert chain.submit_block(block).status == "connected"
        blocks.append(block)
    return tuple(blocks)


@pytest.fixture(scope="module")
def testnet() -> SharedChain:
    genesis = make_genesis()
    return SharedChain(genesis, build_blocks(genesis, CHAIN_BLOCKS + 1))


# --- a node: the chain operations of a real Chain, served by a PeerNetwork -----------------------


class ChainNode:
    """The node side of the interface, over a real chain and a small pending-transaction pool."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.genesis_hash = chain.genesis.hash
        self.max_delta_bytes = chain.params.max_delta_bytes
        self.pool: dict[bytes, Transaction] = {}
        self._worker = ThreadPoolExecutor(max_workers=1)

    async def submit_block(self, block: Block) -> ImportResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self.chain.submit_block, block)

    async def submit_transaction(self, tx: Transaction) -> bytes:
        verify_transaction(tx, self.chain.genesis.chain_id)
        account = self.chain.get_account(tx.sender_account)
        if tx.nonce < (account.nonce if account else 0):
            raise NonceTooLow(f"nonce {tx.nonce} is used")
        self.pool[tx.txid] = tx
        return tx.txid

    def has_block(self, block_hash: bytes) -> bool:
        return block_hash in self.chain.index or block_hash in self.chain.invalid

    def has_transaction(self, txid: bytes) -> bool:
        return txid in self.pool

    def get_block_bytes(self, block_hash: bytes) -> bytes | None:
        entry = self.chain.index.get(block_hash)
        if entry is None or entry.height == 0:
            return None
        return self.chain.get_block(block_hash).encode()

    def get_transaction_bytes(self, txid: bytes) -> bytes | None:
        tx = self.pool.get(txid)
        return tx.encode() if tx is not None else None

    def tip_height(self) -> int:
        return self.chain.tip.height

    def locator(self) -> list[bytes]:
        return self.chain.locator()

    async def headers_after(self, locator: list[bytes], limit: int) -> list[BlockHeader]:
        start = self.chain.fork_height(locator) + 1
        return self.chain.canonical_headers(start, limit)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


@dataclass
class Server:
    url: str
    runner: web.AppRunner
    hits: Counter[str] = field(default_factory=Counter)
    """Requests served, by method and route pattern."""


@dataclass
class Node:
    ops: ChainNode
    net: PeerNetwork
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def tip(self) -> bytes:
        return self.ops.chain.tip.hash


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve(routes: Sequence[web.RouteDef], sock: socket.socket) -> Server:
    """Serve ``routes`` on ``sock``, counting every request by route."""
    hits: Counter[str] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        resource = request.match_info.route.resource
        hits[f"{request.method} {resource.canonical if resource else request.path}"] += 1
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[count])
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    host, port = sock.getsockname()
    return Server(f"http://{host}:{port}", runner, hits)


Spawn = Callable[..., Awaitable[Node]]


@pytest.fixture
async def spawn(testnet: SharedChain) -> AsyncIterator[Spawn]:
    """Start nodes on loopback; everything is stopped and closed after the test."""
    nodes: list[Node] = []

    async def start(
        height: int = 0,
        seeds: Sequence[str] = (),
        policy: PeerPolicy = FAST,
        sock: socket.socket | None = None,
    ) -> Node:
        """A node at ``height``; on ``sock`` if given (a port reserved before, e.g. as a seed)."""
        sock = sock or free_socket()
        host, port = sock.getsockname()
        ops = ChainNode(testnet.chain(height))
        log = structlog.get_logger().bind(node=port)
        net = PeerNetwork(ops, f"http://{host}:{port}", seeds, log=log, policy=policy)
        node = Node(ops, net, await serve(net.routes(), sock))
        nodes.append(node)
        await net.start()
        return node

    yield start
    for node in nodes:
        await node.net.stop()
        await node.server.runner.cleanup()
        node.ops.close()


class RawPeer:
    """A peer speaking the wire format with whatever data a test gives it."""

    def __init__(self, genesis_hash: bytes, height: int) -> None:
        self.genesis_hash = genesis_hash
        self.height = height
        self.blocks: dict[bytes, bytes] = {}
        self.txs: dict[bytes, bytes] = {}
        self.headers = b""
        self.announced: list[dict[str, Any]] = []
        self.hits: Counter[str] = Counter()
        self.sock = free_socket()
        """Bound at once, listening only after :meth:`listen`: until then it refuses."""
        host, port = self.sock.getsockname()
        self.url = f"http://{host}:{port}"
        self.runner: web.AppRunner | None = None

    async def listen(self) -> None:
        """Start answering on the peer's port."""
        server = await serve(self.routes(), self.sock)
        self.hits, self.runner = server.hits, server.runner

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/p2p/hello", self.hello),
            web.post("/p2p/announce", self.announce),
            web.get("/p2p/blocks/{hash}", self.block),
            web.get("/p2p/txs/{txid}", self.tx),
            web.get("/p2p/headers", self.header_list),
        ]

    async def hello(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"url": self.url, "genesis": self.genesis_hash.hex(), "height": self.height}
        )

    async def announce(self, request: web.Request) -> web.Response:
        self.announced.append(await request.json())
        return web.json_response({"accepted": 0}, status=202)

    async def block(self, request: web.Request) -> web.Response:
        data = self.blocks.get(bytes.fromhex(request.match_info["hash"]))
        return web.Response(body=data) if data is not None else web.Response(status=404)

    async def tx(self, request: web.Request) -> web.Response:
        data = self.txs.get(bytes.fromhex(request.match_info["txid"]))
        return web.Response(body=data) if data is not None else web.Response(status=404)

    async def header_list(self, request: web.Request) -> web.Response:
        return web.Response(body=self.headers)


@pytest.fixture
async def raw_peers() -> AsyncIterator[Callable[..., Awaitable[RawPeer]]]:
    """``raw_peers(genesis_hash, height, listening=True)``; all stopped after the test."""
    peers: list[RawPeer] = []

    async def start(genesis_hash: bytes, height: int, *, listening: bool = True) -> RawPeer:
        peer = RawPeer(genesis_hash, height)
        peers.append(peer)
        if listening:
            await peer.listen()
        return peer

    yield start
    for peer in peers:
        if peer.runner is not None:
            await peer.runner.cleanup()
        peer.sock.close()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def post_json(url: str, document: object, sender: str | None = None) -> tuple[int, Any]:
    headers = {wire.PEER_HEADER: sender} if sender else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=json.dumps(document), headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def introduce(raw: RawPeer, node: Node) -> None:
    """Make ``node`` know ``raw`` as a greeted peer: ``raw`` says hello, ``node`` greets back."""
    hello = {"url": raw.url, "genesis": raw.genesis_hash.hex(), "height": raw.height}
    status, _ = await post_json(node.url + "/p2p/hello", hello)
    assert status == 200
    await wait_until(lambda: peer_state(node, raw.url).get("last_seen") is not None, "greeted")


def peer_state(node: Node, url: str) -> dict[str, object]:
    return next((p for p in node.net.peers_summary() if p["url"] == url), {})


def tampered(block: Block, **changes: Any) -> Block:
    """``block`` with header fields changed and signed again by the same proposer."""
    header = dataclasses.replace(block.header, **changes, signature=b"").signed(MINER)
    return dataclasses.replace(block, header=header)


# --- peer URLs and wire parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:8600", "http://127.0.0.1:8600"),
        ("HTTP://Node-1.example:80/", "http://node-1.example:80"),
        ("http://[::1]:8601", "http://[::1]:8601"),
    ],
)
def test_peer_url_is_normalised(text: str, expected: str) -> None:
    """A peer URL is reduced to lowercase http://host:port."""
    assert wire.normalize_peer_url(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "https://127.0.0.1:8600",
        "http://127.0.0.1",
        "http://127.0.0.1:8600/p2p/peers",
        "http://user@127.0.0.1:8600",
        "http://127.0.0.1:8600?x=1",
        "http://127.0.0.1:70000",
        "http://127.0.0.1:0",
        "http://-bad-.example:80",
        "http://" + "a" * 300 + ":80",
        8600,
    ],
)
def test_peer_url_outside_the_form_is_rejected(text: object) -> None:
    """Anything but plain http://host:port (path, credentials, query, TLS, bad port) is refused."""
    with pytest.raises(DecodeError):
        wire.normalize_peer_url(text)


def test_header_list_round_trips_and_is_size_limited(testnet: SharedChain) -> None:
    """A header list decodes to the same headers; more than the limit is refused."""
    headers = [block.header for block in testnet.blocks[:3]]
    encoded = wire.encode_headers(headers)
    assert wire.decode_headers(encoded, 3) == headers
    with pytest.raises(DecodeError):
        wire.decode_headers(encoded, 2)


# --- routes --------------------------------------------------------------------------------------


def hello_doc(genesis_hash: bytes, **changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "url": "http://127.0.0.1:9",
        "genesis": genesis_hash.hex(),
        "height": 0,
    }
    document.update(changes)
    return document


MALFORMED_POSTS = [
    ("/p2p/hello", b"not json", 400),
    ("/p2p/hello", b"[1, 2]", 400),
    ("/p2p/hello", {"url": "ftp://127.0.0.1:9"}, 400),
    ("/p2p/hello", {"genesis": "zz"}, 400),
    ("/p2p/hello", {"height": -1}, 400),
    ("/p2p/hello", {"height": True}, 400),
    ("/p2p/hello", b"{" + b" " * (wire.MAX_JSON_BYTES + 1) + b"}", 413),
    ("/p2p/announce", {"blocks": ["00" * 32] * (wire.MAX_ANNOUNCE_BLOCKS + 1)}, 400),
    ("/p2p/announce", {"txs": ["xyz"]}, 400),
    ("/p2p/announce", {"blocks": "00" * 32}, 400),
    ("/p2p/announce", {}, 409),
]


@pytest.mark.parametrize(("path", "body", "status"), MALFORMED_POSTS)
async def test_malformed_post_gets_json_error(
    spawn: Spawn, path: str, body: bytes | dict[str, object], status: int
) -> None:
    """A malformed hello or announcement gets a 4xx with the JSON error shape, nothing else."""
    node = await spawn()
    data = body if isinstance(body, bytes) else json.dumps(hello_doc(node.ops.genesis_hash, **body))
    async with (
        aiohttp.ClientSession() as session,
        session.post(node.url + path, data=data) as response,
    ):
        assert response.status == status
        error = (await response.json())["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert node.net.peer_count() == 0


MALFORMED_GETS = [
    ("/p2p/blocks/xyz", 400),
    ("/p2p/blocks/" + "g" * 64, 400),
    ("/p2p/blocks/" + "00" * 32, 404),
    ("/p2p/txs/abc", 400),
    ("/p2p/txs/" + "00" * 32, 404),
    ("/p2p/headers", 400),
    ("/p2p/headers?locator=zz", 400),
    ("/p2p/headers?locator=" + ",".join(["00" * 32] * (wire.MAX_LOCATOR + 1)), 400),
    ("/p2p/headers?locator=" + "00" * 32 + "&limit=501", 400),
    ("/p2p/headers?locator=" + "00" * 32 + "&limit=0", 400),
    ("/p2p/headers?locator=" + "00" * 32 + "&limit=-1", 400),
]


@pytest.mark.parametrize(("path", "status"), MALFORMED_GETS)
async def test_malformed_get_gets_json_error(spawn: Spawn, path: str, status: int) -> None:
    """A bad hash, locator or limit, or an unknown object, gets a 4xx JSON error."""
    node = await spawn()
    async with aiohttp.ClientSession() as session, session.get(node.url + path) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


async def test_block_and_headers_are_served_in_canonical_encoding(
    spawn: Spawn, testnet: SharedChain
) -> None:
    """/p2p/blocks serves the block's canonical bytes, /p2p/headers the headers after a locator."""
    node = await spawn(height=3)
    genesis_locator = testnet.genesis.hash.hex()
    async with aiohttp.ClientSession() as session:
        block = testnet.blocks[1]
        async with session.get(f"{node.url}/p2p/blocks/{block.hash.hex()}") as response:
            assert response.content_type == wire.OCTET_STREAM
            assert await response.read() == block.encode()
        url = f"{node.url}/p2p/headers?locator={genesis_locator}&limit=2"
        async with session.get(url) as response:
            headers = wire.decode_headers(await response.read(), 2)
    assert headers == [b.header for b in testnet.blocks[:2]]


async def test_hello_from_another_network_is_refused(spawn: Spawn) -> None:
    """A hello naming another genesis gets 409 and the sender is not recorded."""
    node = await spawn()
    status, document = await post_json(node.url + "/p2p/hello", hello_doc(b"\x01" * 32))
    assert status == 409
    assert document["error"]["code"] == "genesis_mismatch"
    assert node.net.peer_count() == 0


# --- behaviour between nodes ---------------------------------------------------------------------


async def test_two_nodes_exchange_hello(spawn: Spawn) -> None:
    """A node started with a seed greets it; each records the other, reachable, with its height."""
    a = await spawn(height=2)
    b = await spawn(seeds=[a.url])
    await wait_until(lambda: peer_state(b, a.url).get("last_seen") is not None, "B greeted A")
    await wait_until(lambda: peer_state(a, b.url).get("last_seen") is not None, "A greeted B")
    assert peer_state(b, a.url)["height"] == 2
    assert a.net.peer_count() == b.net.peer_count() == 1


async def test_announced_block_is_fetched_once_and_connected(
    spawn: Spawn, testnet: SharedChain
) -> None:
    """A block announced (several times) by a peer is fetched once, connected, not echoed back."""
    a = await spawn(height=2)
    b = await spawn(height=2, seeds=[a.url])
    await wait_until(lambda: peer_state(a, b.url).get("last_seen") is not None, "A greeted B")
    block = testnet.blocks[2]
    assert (await a.ops.submit_block(block)).status == "connected"
    announcement = {"url": a.url, "height": 3, "blocks": [block.hash.hex()], "txs": []}
    await asyncio.gather(
        a.net.announce_block(block.hash),
        *(post_json(b.url + "/p2p/announce", announcement) for _ in range(3)),
    )
    await wait_until(lambda: b.tip == block.hash, "B connected the block")
    await asyncio.sleep(0.3)
    assert a.server.hits["GET /p2p/blocks/{hash}"] == 1
    assert a.server.hits["POST /p2p/announce"] == 0


async def test_node_behind_catches_up_headers_first(spawn: Spawn, testnet: SharedChain) -> None:
    """A node N blocks behind gets the headers in several replies, then each block once."""
    a = await spawn(height=CHAIN_BLOCKS)
    b = await spawn(seeds=[a.url], policy=dataclasses.replace(FAST, headers_per_request=2))
    await wait_until(lambda: b.tip == a.tip, "B caught up with A")
    await wait_until(lambda: not b.net.syncing, "B finished syncing")
    assert b.ops.tip_height() == CHAIN_BLOCKS
    assert a.server.hits["GET /p2p/headers"] >= CHAIN_BLOCKS // 2
    assert a.server.hits["GET /p2p/blocks/{hash}"] == CHAIN_BLOCKS


async def test_catch_up_fetches_the_next_window_while_importing(
    spawn: Spawn, testnet: SharedChain
) -> None:
    """Blocks of the next window are requested while the current one is still imported."""
    a = await spawn(height=CHAIN_BLOCKS)
    b = await spawn(policy=dataclasses.replace(FAST, blocks_in_flight=2))
    served_during_import: list[int] = []
    import_block = b.ops.submit_block

    def served() -> int:
        return int(a.server.hits["GET /p2p/blocks/{hash}"])

    async def slow_import(block: Block) -> ImportResult:
        if not served_during_import:  # the first import lasts until both windows are served,
            deadline = asyncio.get_running_loop().time() + WAIT_S  # or until the bound
            while served() < 4 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        served_during_import.append(served())
        return await import_block(block)

    b.ops.submit_block = slow_import  # type: ignore[method-assign]
    hello = hello_doc(testnet.genesis.hash, url=a.url, height=CHAIN_BLOCKS)
    await post_json(f"{b.url}/p2p/hello", hello)
    await wait_until(lambda: b.tip == a.tip, "B caught up with A", timeout=2 * WAIT_S)
    # Without the overlap, only the first window (2 blocks) is requested during its imports.
    assert served_during_import[0] == 4
    assert a.server.hits["GET /p2p/blocks/{hash}"] == CHAIN_BLOCKS


async def test_transaction_is_relayed_once_accepted(spawn: Spawn, testnet: SharedChain) -> None:
    """A transaction accepted by A is announced, fetched and accepted by B, not sent back."""
    a = await spawn()
    b = await spawn(seeds=[a.url])
    await wait_until(lambda: peer_state(a, b.url).get("last_seen") is not None, "A greeted B")
    tx = make_transfer(FUNDED, testnet.genesis.chain_id, 0, MINER.account, 5, 10_000)
    await a.ops.submit_transaction(tx)
    await a.net.announce_transaction(tx.txid)
    await wait_until(lambda: b.ops.has_transaction(tx.txid), "B accepted the transaction")
    await asyncio.sleep(0.3)
    assert a.server.hits["GET /p2p/txs/{txid}"] == 1
    assert a.server.hits["POST /p2p/announce"] == 0


async def test_peer_exchange_learns_a_third_peer(spawn: Spawn) -> None:
    """B and C, each seeded only with A, learn of each other through A's peer list."""
    a = await spawn()
    b = await spawn(seeds=[a.url])
    c = await spawn(seeds=[a.url])
    await wait_until(lambda: peer_state(b, c.url).get("last_seen") is not None, "B greeted C")
    await wait_until(lambda: peer_state(c, b.url).get("last_seen") is not None, "C greeted B")
    assert a.server.hits["GET /p2p/peers"] >= 1


# --- peers that are not up yet, or not any more --------------------------------------------------

SLOW_EXCHANGE = dataclasses.replace(FAST, exchange_interval_s=30.0, seed_retry_s=0.05)
"""Seeds retried quickly, everything else only every 30 s (longer than any test waits)."""


def failed_once(node: Node, url: str) -> Callable[[], bool]:
    return lambda: int(peer_state(node, url).get("failures") or 0) >= 1


async def test_seed_that_comes_up_late_is_greeted_and_synced_from(spawn: Spawn) -> None:
    """A seed that refused the first hello (not started yet) is greeted again once it is up,
    though it never says hello itself: the node then catches up with its chain."""
    reserved = free_socket()
    host, port = reserved.getsockname()
    b = await spawn(seeds=[f"http://{host}:{port}"], policy=SLOW_EXCHANGE)
    await wait_until(failed_once(b, f"http://{host}:{port}"), "B failed to reach the seed")
    a = await spawn(height=2, sock=reserved)
    await wait_until(lambda: peer_state(b, a.url).get("last_seen") is not None, "B greeted A")
    await wait_until(lambda: b.tip == a.tip, "B caught up with A")
    assert peer_state(b, a.url)["failures"] == 0


async def test_seed_forgotten_as_unreachable_is_still_retried_soon(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A seed forgotten after too many failed hellos is admitted and greeted again on the
    seed schedule, not only at the next peer exchange."""
    seed = await raw_peers(testnet.genesis.hash, 0, listening=False)
    policy = dataclasses.replace(SLOW_EXCHANGE, max_failures=2)
    with structlog.testing.capture_logs() as logs:
        b = await spawn(seeds=[seed.url], policy=policy)
        dropped = {"event": "peer_dropped", "peer": seed.url, "reason": "unreachable"}
        await wait_until(lambda: any(dropped.items() <= e.items() for e in logs), "seed dropped")
    await seed.listen()
    await wait_until(
        lambda: peer_state(b, seed.url).get("last_seen") is not None, "B greeted the seed", 10.0
    )


async def test_known_peer_saying_hello_is_greeted_back_at_once(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A hello from a peer whose URL did not answer before proves it is up: it is greeted
    back at once, not at the next retry."""
    seed = await raw_peers(testnet.genesis.hash, 0, listening=False)
    b = await spawn(seeds=[seed.url], policy=dataclasses.replace(SLOW_EXCHANGE, seed_retry_s=30.0))
    await wait_until(failed_once(b, seed.url), "B failed to reach the seed")
    await seed.listen()
    assert peer_state(b, seed.url)["last_seen"] is None
    await introduce(seed, b)
    assert seed.hits["POST /p2p/hello"] == 1


async def test_unreachable_learnt_peer_is_forgotten(spawn: Spawn, testnet: SharedChain) -> None:
    """A peer admitted on its hello whose URL never answers is tried again at each exchange
    and forgotten after the allowed failures, freeing its place in the table."""
    b = await spawn()
    dead = free_socket()
    host, port = dead.getsockname()
    url = f"http://{host}:{port}"
    status, _ = await post_json(b.url + "/p2p/hello", hello_doc(testnet.genesis.hash, url=url))
    assert status == 200
    assert peer_state(b, url)["last_seen"] is None
    await wait_until(lambda: peer_state(b, url) == {}, "B forgot the dead peer")
    dead.close()


async def test_transaction_announced_again_is_offered_again(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A transaction the node announces a second time (a reorganisation returned it to the
    mempool) is offered to the peers again, not swallowed as already announced."""
    a = await spawn()
    watcher = await raw_peers(testnet.genesis.hash, 0)
    await introduce(watcher, a)
    tx = make_transfer(FUNDED, testnet.genesis.chain_id, 0, MINER.account, 5, 10_000)
    await a.ops.submit_transaction(tx)

    def offers() -> int:
        return sum(tx.txid.hex() in message["txs"] for message in watcher.announced)

    await a.net.announce_transaction(tx.txid)
    await wait_until(lambda: offers() == 1, "the first offer")
    await a.net.announce_transaction(tx.txid)
    await wait_until(lambda: offers() == 2, "the second offer")


# --- misbehaviour --------------------------------------------------------------------------------


async def test_block_with_bad_signature_gets_its_sender_banned(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A peer serving a block whose signature fails is banned: refused, not contacted again,
    and the block is relayed to no one."""
    b = await spawn(height=2)
    mallory = await raw_peers(testnet.genesis.hash, 2)
    watcher = await raw_peers(testnet.genesis.hash, 2)
    await introduce(mallory, b)
    await introduce(watcher, b)
    good = testnet.blocks[2]
    signature = bytes([good.header.signature[0] ^ 1]) + good.header.signature[1:]
    bad = dataclasses.replace(good, header=dataclasses.replace(good.header, signature=signature))
    mallory.blocks[bad.hash] = bad.encode()
    announcement = {"url": mallory.url, "height": 3, "blocks": [bad.hash.hex()], "txs": []}
    tip = b.tip
    with structlog.testing.capture_logs() as logs:
        assert (await post_json(b.url + "/p2p/announce", announcement))[0] == 202
        await wait_until(lambda: peer_state(b, mallory.url).get("banned_until") is not None, "ban")
    assert any(entry["event"] == "peer_banned" for entry in logs)
    status, document = await post_json(b.url + "/p2p/announce", announcement, mallory.url)
    assert (status, document["error"]["code"]) == (403, "banned")
    contacted = sum(mallory.hits.values())
    await asyncio.sleep(3 * FAST.exchange_interval_s)
    assert sum(mallory.hits.values()) == contacted
    assert watcher.hits["POST /p2p/hello"] >= 2
    assert b.tip == tip
    assert watcher.announced == []


async def test_block_failing_full_validation_gets_its_sender_banned(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A well-signed block whose state root is wrong is not connected, and its sender banned."""
    b = await spawn(height=2)
    mallory = await raw_peers(testnet.genesis.hash, 2)
    watcher = await raw_peers(testnet.genesis.hash, 2)
    await introduce(mallory, b)
    await introduce(watcher, b)
    bad = tampered(testnet.blocks[2], state_root=b"\x07" * 32)
    mallory.blocks[bad.hash] = bad.encode()
    tip = b.tip
    announcement = {"url": mallory.url, "height": 3, "blocks": [bad.hash.hex()], "txs": []}
    assert (await post_json(b.url + "/p2p/announce", announcement))[0] == 202
    await wait_until(lambda: peer_state(b, mallory.url).get("banned_until") is not None, "ban")
    status, _ = await post_json(
        b.url + "/p2p/hello", hello_doc(testnet.genesis.hash, url=mallory.url)
    )
    assert status == 403
    await asyncio.sleep(0.3)
    assert b.tip == tip
    assert bad.hash in b.ops.chain.invalid
    assert watcher.announced == []


@pytest.mark.parametrize(
    "heights",
    [pytest.param([1, 2, 4, 5], id="gap"), pytest.param([2, 3, 4], id="unknown-parent")],
)
async def test_header_chain_that_does_not_link_costs_points(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain, heights: list[int]
) -> None:
    """A peer ahead whose headers skip a height or start on an unknown block earns points."""
    b = await spawn()
    mallory = await raw_peers(testnet.genesis.hash, 5)
    mallory.headers = wire.encode_headers([testnet.blocks[h - 1].header for h in heights])
    await introduce(mallory, b)
    await wait_until(lambda: peer_state(b, mallory.url).get("score") == 50, "penalty")
    assert peer_state(b, mallory.url)["banned_until"] is None
    assert b.ops.tip_height() == 0


async def test_undecodable_block_costs_points(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """Bytes that are not a canonical block earn the sender points; the hash may come again."""
    b = await spawn()
    mallory = await raw_peers(testnet.genesis.hash, 1)
    await introduce(mallory, b)
    block_hash = testnet.blocks[0].hash
    mallory.blocks[block_hash] = b"\xc0garbage"
    announcement = {"url": mallory.url, "height": 1, "blocks": [block_hash.hex()], "txs": []}
    await post_json(b.url + "/p2p/announce", announcement)
    await wait_until(lambda: peer_state(b, mallory.url).get("score") == 50, "penalty")
    assert b.ops.tip_height() == 0


async def test_block_with_a_delta_over_the_limit_is_refused_undecoded(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A served block whose delta exceeds the genesis limit fails decoding (points, no ban),
    before the chain sees it; the hash may still come from an honest peer."""
    b = await spawn()
    mallory = await raw_peers(testnet.genesis.hash, 1)
    await introduce(mallory, b)
    genuine = testnet.blocks[0]
    oversized = bytes(testnet.genesis.params.max_delta_bytes + 1)
    mallory.blocks[genuine.hash] = replace(genuine, delta=oversized).encode()
    announcement = {"url": mallory.url, "height": 1, "blocks": [genuine.hash.hex()], "txs": []}
    await post_json(b.url + "/p2p/announce", announcement)
    await wait_until(lambda: peer_state(b, mallory.url).get("score") == 50, "penalty")
    assert peer_state(b, mallory.url)["banned_until"] is None
    assert genuine.hash not in b.ops.chain.invalid


async def test_invalid_transaction_costs_points_and_is_not_relayed(
    spawn: Spawn, raw_peers: Any, testnet: SharedChain
) -> None:
    """A transaction with a bad signature is refused, not relayed, and costs its sender points."""
    b = await spawn()
    mallory = await raw_peers(testnet.genesis.hash, 0)
    watcher = await raw_peers(testnet.genesis.hash, 0)
    await introduce(mallory, b)
    await introduce(watcher, b)
    tx = make_transfer(FUNDED, testnet.genesis.chain_id, 0, MINER.account, 5, 10_000)
    forged = dataclasses.replace(tx, signature=bytes(64))
    with pytest.raises(InvalidSignature):
        verify_transaction(forged, testnet.genesis.chain_id)
    mallory.txs[forged.txid] = forged.encode()
    announcement = {"url": mallory.url, "height": 0, "blocks": [], "txs": [forged.txid.hex()]}
    await post_json(b.url + "/p2p/announce", announcement)
    await wait_until(lambda: peer_state(b, mallory.url).get("score") == 20, "penalty")
    await asyncio.sleep(0.3)
    assert not b.ops.has_transaction(forged.txid)
    assert watcher.announced == []


async def test_ban_expires(spawn: Spawn, raw_peers: Any, testnet: SharedChain) -> None:
    """After the ban time a banned peer is forgotten and may say hello again."""
    now = [1000.0]
    b = await spawn(height=2)
    b.net.clock = lambda: now[0]
    mallory = await raw_peers(testnet.genesis.hash, 2)
    await introduce(mallory, b)
    bad = tampered(testnet.blocks[2], state_root=b"\x07" * 32)
    mallory.blocks[bad.hash] = bad.encode()
    announcement = {"url": mallory.url, "height": 3, "blocks": [bad.hash.hex()], "txs": []}
    await post_json(b.url + "/p2p/announce", announcement)
    await wait_until(lambda: peer_state(b, mallory.url).get("banned_until") is not None, "ban")
    hello = hello_doc(testnet.genesis.hash, url=mallory.url)
    assert (await post_json(b.url + "/p2p/hello", hello))[0] == 403
    now[0] += FAST.ban_seconds + 1
    assert (await post_json(b.url + "/p2p/hello", hello))[0] == 200
    assert peer_state(b, mallory.url)["score"] == 0


async def test_stop_leaves_no_task_and_closes_the_session(spawn: Spawn) -> None:
    """stop() cancels every background task and closes the HTTP session; a restart works."""
    a = await spawn()
    b = await spawn(seeds=[a.url])
    await wait_until(lambda: b.net.peer_count() == 1, "B knows A")
    started = [*b.net._loops, *b.net._tasks]
    session = b.net._session
    await b.net.stop()
    assert started and all(task.done() for task in started)
    assert session is not None and session.closed
    assert b.net._session is None and not b.net._tasks and not b.net._loops
    await b.net.start()
    await wait_until(lambda: b.net.peer_count() == 1, "B still knows A")


async def test_node_recognises_itself_under_another_name(testnet: SharedChain) -> None:
    """A seed that is this node under another host name is dropped once and never greeted again."""
    sock = free_socket()
    port = sock.getsockname()[1]
    ops = ChainNode(testnet.chain())
    net = PeerNetwork(
        ops, f"http://127.0.0.1:{port}", [f"http://localhost:{port}"],
        log=structlog.get_logger(), policy=FAST,
    )  # fmt: skip
    server = await serve(net.routes(), sock)
    try:
        await net.start()
        await wait_until(lambda: server.hits["POST /p2p/hello"] == 1, "the node greeted itself")
        await asyncio.sleep(4 * FAST.exchange_interval_s)
        assert server.hits["POST /p2p/hello"] == 1
        assert net.peer_count() == 0
    finally:
        await net.stop()
        await server.runner.cleanup()
        ops.close()
