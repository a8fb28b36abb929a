"""The node: one process that owns the store, the chain, the mempool, the peers and the miner.

All chain work (block import, evaluation, block assembly) runs on one dedicated worker thread,
so the chain sees one caller at a time and the event loop stays free to answer the API and the
peers while a block is evaluated; training has a thread of its own in the miner. The mempool
lives on the event loop. The node implements the peer network's ``ChainOps``: every block or
transaction, from a peer, the API or the local miner, enters through :meth:`Node.submit_block`
and :meth:`Node.submit_transaction`, which log, count and keep the mempool in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import ParamSpec, TypeVar

import torch
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from derelayl_chain.block import Block, BlockHeader
from derelayl_chain.chain import Chain, now_ms
from derelayl_chain.chain_records import ImportResult
from derelayl_chain.config import NodeConfig
from derelayl_chain.crypto import SEED_SIZE, KeyPair
from derelayl_chain.exceptions import (
    BlockFromFuture,
    ChainError,
    ConfigError,
    DeRelayLError,
    DuplicateTransaction,
    FinalityViolation,
    InvalidBlock,
    NotFound,
    StorageError,
)
from derelayl_chain.genesis import GenesisConfig
from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.task import LOSS_SCALE
from derelayl_chain.log import Logger, get_logger
from derelayl_chain.mempool import Mempool
from derelayl_chain.mining import Miner
from derelayl_chain.p2p import PeerNetwork
from derelayl_chain.storage import schema
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch
from derelayl_chain.transaction import Transaction, txid_of

NODE_KEY_FILE = "node_key"
EXPIRY_INTERVAL_S = 30.0
_P = ParamSpec("_P")
_T = TypeVar("_T")


# --- the node key -------------------------------------------------------------------------------


def load_or_create_node_key(data_dir: Path) -> KeyPair:
    """The node's signing key from ``<data_dir>/node_key``, created (mode 0600) on first use.

    The file holds the 32-byte seed in hex. It is written to a temporary file, synced, then
    hard-linked into place, so a crash never leaves a half-written key and two processes
    racing to create it end up with the same one.
    """
    path = data_dir / NODE_KEY_FILE
    if not path.exists():
        _write_new_key(path, KeyPair.generate())
    try:
        text = path.read_text(encoding="ascii").strip()
        return KeyPair.from_seed(bytes.fromhex(text))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the node key {path}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"node key {path} is not {SEED_SIZE} bytes of hex") from exc


def _write_new_key(path: Path, key: KeyPair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(prefix=".node_key.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.seed.hex().encode("ascii") + b"\n")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(temporary)


# --- metrics ------------------------------------------------------------------------------------


class NodeMetrics:
    """The node's Prometheus metrics, in a registry of its own (several nodes per process work)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("derelayl_chain_height", "Height of the best chain's tip", registry=r)
        self.peers = Gauge("derelayl_peers", "Connected peers", registry=r)
        self.mempool_size = Gauge("derelayl_mempool_transactions", "Pending txs", registry=r)
        self.model_loss = Gauge("derelayl_model_loss", "Claimed loss of the tip", registry=r)
        self.blocks_connected = Counter(
            "derelayl_blocks_connected", "Blocks connected to the best chain", registry=r
        )
        self.blocks_disconnected = Counter(
            "derelayl_blocks_disconnected", "Blocks disconnected by reorganisations", registry=r
        )
        self.blocks_rejected = Counter(
            "derelayl_blocks_rejected", "Blocks refused, by reason", ["reason"], registry=r
        )
        self.blocks_mined = Counter("derelayl_blocks_mined", "Blocks this node mined", registry=r)
        self.txs_accepted = Counter(
            "derelayl_transactions_accepted", "Transactions accepted to the mempool", registry=r
        )
        self.txs_rejected = Counter(
            "derelayl_transactions_rejected", "Transactions refused, by reason", ["reason"],
            registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "derelayl_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )


# --- the node -----------------------------------------------------------------------------------


class Node:
    """One node: open with :meth:`start`, close with :meth:`stop`."""

    def __init__(
        self,
        config: NodeConfig,
        genesis: GenesisConfig,
        *,
        data: Dataset | None = None,
        clock: Callable[[], int] = now_ms,
        log: Logger | None = None,
    ) -> None:
        self.config = config
        self.genesis = genesis
        self.data = data
        self.clock = clock
        self.log = log or get_logger()
        self.genesis_hash = genesis.hash
        self.max_delta_bytes = genesis.params.max_delta_bytes
        self.metrics = NodeMetrics()
        self.peers = PeerNetwork(
            self, config.self_url, config.peers, log=self.log.bind(component="p2p")
        )
        self.key: KeyPair | None = None
        self.miner: Miner | None = None
        self._store: KeyValueStore | None = None
        self._chain: Chain | None = None
        self._mempool: Mempool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._announcements: set[asyncio.Task[None]] = set()
        self._bind_gauges()

    # --- parts that exist only while running ---------------------------------------------

    @property
    def started(self) -> bool:
        return self._chain is not None

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            raise StorageError("the node is not running")
        return self._chain

    @property
    def store(self) -> KeyValueStore:
        if self._store is None:
            raise StorageError("the node is not running")
        return self._store

    @property
    def mempool(self) -> Mempool:
        if self._mempool is None:
            raise StorageError("the node is not running")
        return self._mempool

    @property
    def node_key(self) -> KeyPair:
        if self.key is None:
            raise StorageError("the node is not running")
        return self.key

    async def run_chain(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn`` on the chain worker thread (the only thread that changes the chain)."""
        if self._executor is None:
            raise StorageError("the node is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (taking the data-dir lock), the chain and the mempool; start work."""
        if self.started:
            return
        torch.set_num_threads(1)
        self._store = schema.open_store(self.config.data_dir)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="derelayl-chain")
        try:
            self.key = load_or_create_node_key(self.config.data_dir)
            self._chain = await self.run_chain(Chain, self._store, self.genesis, self.clock)
            self._mempool = Mempool(
                self.genesis.chain_id, self.genesis.params.ledger, self._chain, clock=self.clock
            )
            self._restore_mempool()
            await self.peers.start()
        except BaseException:
            await self._close_store()
            raise
        self._tasks.append(asyncio.create_task(self._expire_loop()))
        if self.config.mine and self.data is not None:
            self.miner = Miner(
                self,
                self.data,
                self.key,
                self.config.reward_account,
                log=self.log.bind(component="miner"),
                clock=self.clock,
            )
            self._tasks.append(asyncio.create_task(self.miner.run()))
        tip = self.chain.tip
        self.log.info(
            "node_started",
            chain_id=self.genesis.chain_id,
            genesis=self.genesis_hash.hex()[:16],
            height=tip.height,
            head=tip.hash.hex()[:16],
            address=self.key.address,
            mining=self.miner is not None,
            url=self.config.self_url,
        )

    async def stop(self) -> None:
        """Stop mining and peers, save the mempool, close the store; safe to call twice."""
        if not self.started:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.miner is not None:
            await self.miner.close()
            self.miner = None
        await self.peers.stop()
        await self._close_store()
        self.log.info("node_stopped")

    async def _close_store(self) -> None:
        """Let queued chain work finish, persist the mempool, then close the store."""
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            self._executor = None
        if self._store is not None:
            try:
                if self._mempool is not None:
                    self._persist_mempool()
            finally:
                self._store.close()
                self._store, self._chain, self._mempool = None, None, None

    def _restore_mempool(self) -> None:
        saved = [value for _, value in self.store.iterate(schema.PREFIXES["mempool"])]
        if saved:
            restored = self.mempool.restore(saved)
            self.log.info("mempool_restored", saved=len(saved), restored=restored)

    def _persist_mempool(self) -> None:
        """Replace the saved pending transactions with the current ones, in one batch."""
        batch = WriteBatch()
        for key, _ in self.store.iterate(schema.PREFIXES["mempool"]):
            batch.delete(key)
        pending = self.mempool.snapshot()
        for encoded in pending:
            batch.put(schema.mempool_key(txid_of(encoded)), encoded)
        self.store.write(batch)
        self.log.info("mempool_saved", transactions=len(pending))

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            expired = self.mempool.expire()
            if expired:
                self.log.info("mempool_expired", transactions=len(expired))

    def _bind_gauges(self) -> None:
        m = self.metrics
        m.height.set_function(lambda: self._chain.tip.height if self._chain else 0)
        m.peers.set_function(self.peers.peer_count)
        m.mempool_size.set_function(lambda: len(self._mempool) if self._mempool else 0)
        m.model_loss.set_function(
            lambda: self._chain.tip.header.claimed_loss / LOSS_SCALE if self._chain else 0
        )

    # --- ChainOps: what the peer network, the API and the miner call ----------------------

    async def submit_block(self, block: Block) -> ImportResult:
        """Import a block on the chain thread; update the mempool and the miner; log it."""
        before = self.chain.tip.hash
        try:
            result = await self.run_chain(self.chain.submit_block, block)
        except BlockFromFuture as exc:
            self.log.info("block_deferred", hash=block.hash.hex()[:16], reason=str(exc))
            raise
        except (InvalidBlock, ChainError) as exc:
            self._note_rejected(block.hash, block.height, exc)
            raise
        self._after_import(result, before)
        return result

    def _note_rejected(self, block_hash: bytes, height: int, exc: Exception) -> None:
        self.metrics.blocks_rejected.labels(reason=type(exc).__name__).inc()
        self.log.warning(
            "block_rejected", height=height, hash=block_hash.hex()[:16], reason=str(exc)
        )

    def _note_rejected_stored(self, block_hash: bytes, exc: Exception) -> None:
        entry = self.chain.index.get(block_hash)
        self._note_rejected(block_hash, entry.height if entry else -1, exc)

    def _after_import(self, result: ImportResult, before: bytes) -> None:
        for block in result.disconnected:
            self.metrics.blocks_disconnected.inc()
            self.log.info("block_disconnected", height=block.height, hash=block.hash.hex()[:16])
        for block in result.connected:
            self.metrics.blocks_connected.inc()
            entry = self.chain.index.get(block.hash)
            self.log.info(
                "block_connected",
                height=block.height,
                hash=block.hash.hex()[:16],
                loss=block.header.claimed_loss / LOSS_SCALE,
                accuracy=(entry.accuracy / LOSS_SCALE) if entry else None,
                txs=len(block.transactions),
            )
        for block_hash in result.invalid:
            self._note_rejected_stored(block_hash, InvalidBlock("failed full validation"))
        for block_hash in result.refused:
            self._note_rejected_stored(block_hash, FinalityViolation("forks past finality"))
        if result.connected or result.disconnected:
            self.mempool.remove_confirmed([tx for b in result.connected for tx in b.transactions])
            returned = result.returned_transactions
            if returned:
                readmitted = self.mempool.readmit(list(returned))
                if readmitted:
                    # Peers on the winning branch never saw these: offer them again so they
                    # are confirmed there too.
                    self._announce_later(readmitted)
        if self.chain.tip.hash != before and self.miner is not None:
            self.miner.notify_tip()

    def _announce_later(self, txids: list[bytes]) -> None:
        async def announce() -> None:
            for txid in txids:
                await self.peers.announce_transaction(txid)

        task = asyncio.get_running_loop().create_task(announce())
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)

    async def submit_transaction(self, tx: Transaction) -> bytes:
        """Check a transaction (signature included) and add it to the mempool; its txid."""
        txid = tx.txid
        try:
            if self.store.get(schema.tx_index_key(txid)) is not None:
                raise DuplicateTransaction(f"transaction {txid.hex()} is already confirmed")
            self.mempool.add(tx)  # checks the signature too
        except DeRelayLError as exc:
            self.metrics.txs_rejected.labels(reason=type(exc).__name__).inc()
            raise
        self.metrics.txs_accepted.inc()
        return txid

    def has_block(self, block_hash: bytes) -> bool:
        chain = self.chain
        return (
            block_hash in chain.index
            or block_hash in chain.orphans
            or (block_hash in chain.invalid)
        )

    def has_transaction(self, txid: bytes) -> bool:
        return txid in self.mempool or self.store.get(schema.tx_index_key(txid)) is not None

    def get_block_bytes(self, block_hash: bytes) -> bytes | None:
        try:
            block = self.chain.get_block(block_hash)
        except (NotFound, StorageError):
            return None
        return block.encode() if block.height else None

    def get_transaction_bytes(self, txid: bytes) -> bytes | None:
        return self.mempool.get_bytes(txid)

    def tip_height(self) -> int:
        return self.chain.tip.height

    def locator(self) -> list[bytes]:
        return self.chain.locator()

    async def headers_after(self, locator: list[bytes], limit: int) -> list[BlockHeader]:
        def find() -> list[BlockHeader]:
            start = self.chain.fork_height(locator) + 1
            return self.chain.canonical_headers(start, limit)

        return await self.run_chain(find)


# --- running a node process ---------------------------------------------------------------------


class PortUnavailable(DeRelayLError):
    """The HTTP port is taken or not ours to bind (a runtime failure, like a locked data dir)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` before anything else starts, so a taken port fails fast."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise PortUnavailable(f"cannot listen on {host}:{port}: {reason}") from exc
    sock.setblocking(False)
    return sock


async def run_node(config: NodeConfig, genesis: GenesisConfig, data: Dataset | None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""
    from derelayl_chain.api import create_app

    sock = bind_socket(config.host, config.port)
    if config.port == 0:
        config = replace(config, port=sock.getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config, genesis, data=data)
    runner = web.AppRunner(
        create_app(node), access_log=None, handle_signals=False, shutdown_timeout=5.0
    )
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        node.log.info("listening", url=f"http://{config.host}:{config.port}")
        await stop.wait()
        node.log.info("shutting_down")
    finally:
        await runner.cleanup()
        sock.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
