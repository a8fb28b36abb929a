"""A peer that pushes an invalid block is banned while the node carries on mining."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from derelayl_chain.block import Block, decode_block
from derelayl_chain.crypto import KeyPair
from tests.functional.framework import (
    TestNode,
    free_port,
    wait_for,
    wait_height,
    write_fast_genesis,
)

pytestmark = pytest.mark.functional


class EvilPeer:
    """A loopback HTTP server that speaks just enough of /p2p/ to serve one bad block."""

    def __init__(self, genesis_hex: str) -> None:
        self.port = free_port()
        self.blocks: dict[str, bytes] = {}
        self.served: list[str] = []
        self.genesis_hex = genesis_hex
        self.node_id = secrets.token_hex(16)
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hello = {"url": peer.url, "genesis": peer.genesis_hex, "height": 0,
                         "node_id": peer.node_id}  # fmt: skip
                self.reply(200, json.dumps(hello).encode(), "application/json")

            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/p2p/blocks/") and name in peer.blocks:
                    peer.served.append(name)
                    self.reply(200, peer.blocks[name], "application/octet-stream")
                else:
                    self.reply(404, b'{"error": {"code": "not_found", "message": "no"}}',
                               "application/json")  # fmt: skip

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def evil_peer_factory() -> Iterator[Callable[[str], EvilPeer]]:
    peers: list[EvilPeer] = []

    def factory(genesis_hex: str) -> EvilPeer:
        peer = EvilPeer(genesis_hex)
        peer.thread.start()
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        peer.server.shutdown()
        peer.server.server_close()


def forged_child(node: TestNode) -> Block:
    """A child of the node's tip, signed by a key that is not the proposer it names."""
    head = node.head()
    status, raw = node.request("GET", f"/p2p/blocks/{head}")
    assert status == 200
    tip = decode_block(raw, max_delta_bytes=16 << 20)
    impostor = KeyPair.generate()
    header = replace(
        tip.header,
        height=tip.header.height + 1,
        parent=tip.hash,
        timestamp_ms=tip.header.timestamp_ms + 1,
        claimed_loss=0,
    )
    header = replace(header, signature=impostor.sign(header.signing_bytes()))
    return Block(header, tip.transactions, tip.delta)


def test_peer_pushing_invalid_block_is_banned(
    make_node: Callable[..., TestNode],
    evil_peer_factory: Callable[[str], EvilPeer],
    tmp_path: Path,
) -> None:
    """The node fetches the announced block, finds it invalid, bans the sender, mines on."""
    genesis = write_fast_genesis(tmp_path / "genesis.json")
    node = make_node(genesis=genesis).start()
    wait_height(node, 2)
    status = node.status()
    evil = evil_peer_factory(status["genesis"])
    bad = forged_child(node)
    evil.blocks[bad.hash.hex()] = bad.encode()

    hello = {"url": evil.url, "genesis": status["genesis"], "height": 0, "node_id": evil.node_id}
    code, answer = node.post("/p2p/hello", hello)
    assert code == 200, answer
    announce = {"url": evil.url, "height": 0, "blocks": [bad.hash.hex()], "txs": []}
    code, answer = node.post("/p2p/announce", announce)
    assert code == 202, answer

    def banned() -> bool:
        _, peers = node.get("/peers")
        items = peers.get("items", []) if isinstance(peers, dict) else []
        return any(p["url"] == evil.url and p.get("banned_until") for p in items)

    wait_for(banned, 30, "the evil peer to be banned")
    code, answer = node.post("/p2p/announce", announce)
    assert code == 403, answer
    height = node.height()
    wait_height(node, height + 2)
    assert node.running
    assert evil.served == [bad.hash.hex()]  # fetched once, from the peer that announced it
    code, block = node.get(f"/blocks/{bad.hash.hex()}")
    assert code == 404 or block["canonical"] is False
    _, metrics = node.request("GET", "/metrics")
    assert b'derelayl_blocks_rejected_total{reason="' in metrics
