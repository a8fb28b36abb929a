"""The peer network: gossip by hash, headers-first catch-up, peer exchange, bans.

Nodes talk plain HTTP to each other under ``/p2p/``; the routes and message shapes are listed
in :mod:`derelayl_chain._p2p_wire` and ``docs/p2p.md``. The peer table (health, misbehaviour
points, bans) is :mod:`derelayl_chain._p2p_peers`; the memory of which hashes are being fetched
or were offered is :mod:`derelayl_chain._p2p_fetches`.

Only what was validated travels on: a block is announced after the chain stored or connected
it, a transaction after the mempool accepted it, never back to the peer it came from. A peer
that sends an invalid block, undecodable bytes or a header chain that does not link collects
misbehaviour points and is banned for a while; timeouts only count against its health.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web
from structlog.typing import FilteringBoundLogger

from derelayl_chain import _p2p_wire as wire
from derelayl_chain._p2p_fetches import FetchTracker
from derelayl_chain._p2p_peers import (
    PENALTY_INVALID_BLOCK,
    PENALTY_INVALID_TRANSACTION,
    PENALTY_UNDECODABLE,
    PENALTY_UNLINKED_HEADERS,
    Peer,
    PeerTable,
    TableLimits,
    seed_retry_delays,
)
from derelayl_chain._p2p_wire import (
    MAX_JSON_BYTES,
    PeerMisbehaved,
    PeerRequestRefused,
    PeerUnreachable,
)
from derelayl_chain.block import Block, BlockHeader, decode_block, max_body_bytes
from derelayl_chain.exceptions import (
    BlockFromFuture,
    ConfigError,
    DecodeError,
    DeRelayLError,
    InsufficientFunds,
    InvalidBlock,
    InvalidSignature,
    InvalidTransaction,
    KnownInvalid,
    MempoolError,
    NonceGap,
    NonceTooLow,
)
from derelayl_chain.transaction import MAX_TX_BYTES, Transaction, decode_transaction

if TYPE_CHECKING:
    from derelayl_chain.chain_records import ImportResult


class ChainOps(Protocol):
    """What the peer network needs from the node; every submit validates fully."""

    @property
    def genesis_hash(self) -> bytes: ...
    @property
    def max_delta_bytes(self) -> int: ...
    async def submit_block(self, block: Block) -> ImportResult: ...
    async def submit_transaction(self, tx: Transaction) -> bytes: ...
    def has_block(self, block_hash: bytes) -> bool: ...
    def has_transaction(self, txid: bytes) -> bool: ...
    def get_block_bytes(self, block_hash: bytes) -> bytes | None: ...
    def get_transaction_bytes(self, txid: bytes) -> bytes | None: ...
    def tip_height(self) -> int: ...
    def locator(self) -> list[bytes]: ...
    async def headers_after(self, locator: list[bytes], limit: int) -> list[BlockHeader]: ...


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Limits and timings of the peer network (local policy, not consensus)."""

    max_peers: int = 16
    max_concurrent_requests: int = 8
    connect_timeout_s: float = 3.0
    request_timeout_s: float = 20.0
    retries: int = 1
    """Extra attempts after a timeout or connection error (never after a 4xx)."""
    retry_delay_s: float = 0.25
    max_failures: int = 5
    """Consecutive failed requests after which a peer is forgotten."""
    ban_threshold: int = 100
    ban_seconds: float = 600.0
    exchange_interval_s: float = 30.0
    """How often peers are re-greeted (heights) and asked for their peers."""
    seed_retry_s: float = 1.0
    """First wait before greeting an unreached seed again; it doubles up to the exchange
    interval."""
    sync_interval_s: float = 10.0
    greet_per_exchange: int = 4
    headers_per_request: int = wire.MAX_HEADERS
    blocks_in_flight: int = 8
    recent_capacity: int = 4096
    recent_seconds: float = 120.0
    """How long a requested hash is not requested again."""
    max_background_tasks: int = 64
    max_banned: int = 256
    outbox_size: int = 1024


@dataclass(frozen=True, slots=True)
class _Window:
    """Blocks of one catch-up window being fetched: the claimed hashes, the fetch results."""

    claimed: list[bytes]
    blocks: asyncio.Future[list[Block | BaseException]]


class PeerNetwork:
    """Gossip, catch-up and peer management of one node."""

    def __init__(
        self,
        ops: ChainOps,
        self_url: str,
        seeds: Sequence[str],
        *,
        log: FilteringBoundLogger,
        policy: PeerPolicy = PeerPolicy(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ops = ops
        self.policy = policy
        self.log = log
        self.clock = clock
        try:
            self.self_url = wire.normalize_peer_url(self_url)
            self.seeds = [wire.normalize_peer_url(seed) for seed in seeds]
        except DecodeError as exc:
            raise ConfigError(f"bad peer address: {exc}") from exc
        self._node_id = secrets.token_bytes(wire.NODE_ID_SIZE)
        limits = TableLimits(
            max_peers=policy.max_peers,
            max_failures=policy.max_failures,
            ban_threshold=policy.ban_threshold,
            ban_seconds=policy.ban_seconds,
            max_banned=policy.max_banned,
        )
        self._table = PeerTable(limits, self.seeds, self.self_url)
        self._greeting: set[str] = set()
        """URLs a hello of ours is on its way to (one at a time per URL)."""
        self._fetches = FetchTracker(policy.recent_capacity, policy.recent_seconds)
        self._outbox: asyncio.Queue[tuple[str, bytes, str | None]] = asyncio.Queue(
            policy.outbox_size
        )
        self._sync_wakeup = asyncio.Event()
        self._sync_requests: list[str] = []
        self._syncing = False
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(policy.max_concurrent_requests)
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # --- public face -----------------------------------------------------------------------

    @property
    def syncing(self) -> bool:
        return self._syncing

    def peer_count(self) -> int:
        return len(self._table.active_peers(self.clock()))

    def peers_summary(self) -> list[dict[str, object]]:
        return self._table.summary(self.clock())

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/p2p/hello", wire.guard(self._refuse_banned, self._handle_hello)),
            web.post("/p2p/announce", wire.guard(self._refuse_banned, self._handle_announce)),
            web.get("/p2p/blocks/{hash}", wire.guard(self._refuse_banned, self._handle_block)),
            web.get("/p2p/txs/{txid}", wire.guard(self._refuse_banned, self._handle_transaction)),
            web.get("/p2p/headers", wire.guard(self._refuse_banned, self._handle_headers)),
            web.get("/p2p/peers", wire.guard(self._refuse_banned, self._handle_peers)),
        ]

    async def start(self) -> None:
        """Open the client session and start greeting, syncing, gossiping and exchanging."""
        if self._session is not None:
            return
        timeout = aiohttp.ClientTimeout(
            total=self.policy.request_timeout_s, sock_connect=self.policy.connect_timeout_s
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            headers={wire.PEER_HEADER: self.self_url},
            connector=aiohttp.TCPConnector(limit=self.policy.max_concurrent_requests),
        )
        for loop in (self._seed_loop, self._exchange_loop, self._sync_loop, self._gossip_loop):
            self._loops.append(asyncio.create_task(loop()))

    async def stop(self) -> None:
        """Cancel every task this network started and close the session."""
        session, self._session = self._session, None  # from here on nothing new is spawned
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        self._tasks.clear()
        if session is not None:
            await session.close()

    async def announce_block(self, block_hash: bytes, *, exclude: str | None = None) -> None:
        """Offer a validated block to every peer except ``exclude`` (its source)."""
        self._queue_announcement("block", block_hash, exclude, again=True)

    async def announce_transaction(self, txid: bytes, *, exclude: str | None = None) -> None:
        """Offer an accepted transaction to every peer except ``exclude``, even one offered
        before: a reorganisation returns transactions that the winning branch never saw."""
        self._queue_announcement("tx", txid, exclude, again=True)

    # --- peer table ------------------------------------------------------------------------

    def _forget(self, peer: Peer, reason: str) -> None:
        if self._table.forget(peer):
            self.log.info("peer_dropped", peer=peer.url, reason=reason)

    def _penalise(self, peer: Peer, points: int, reason: str) -> None:
        self.log.warning("peer_misbehaved", peer=peer.url, points=points, reason=reason)
        if self._table.penalise(peer, points, self.clock()):
            self.log.warning("peer_banned", peer=peer.url, score=peer.score)

    def _note_height(self, peer: Peer, height: int) -> None:
        """Record a reported height; wake the catch-up when it is more than one block ahead."""
        peer.height = height
        if height > self.ops.tip_height() + 1:
            self._sync_wakeup.set()

    def _request_sync(self, peer: Peer) -> None:
        if peer.url not in self._sync_requests:
            self._sync_requests.append(peer.url)
        self._sync_wakeup.set()

    # --- inbound ---------------------------------------------------------------------------

    def _refuse_banned(self, url: str) -> None:
        if self._table.is_banned(url, self.clock()):
            raise PeerRequestRefused(403, "banned", f"peer {url} is banned")

    def _hello(self) -> wire.Hello:
        return wire.Hello(
            self.self_url, self.ops.genesis_hash, self.ops.tip_height(), self._node_id
        )

    async def _handle_hello(self, request: web.Request) -> web.StreamResponse:
        hello = wire.parse_hello(await wire.read_json(request))
        self._refuse_banned(hello.url)
        if hello.genesis != self.ops.genesis_hash:
            raise PeerRequestRefused(
                409, "genesis_mismatch", f"genesis {hello.genesis.hex()} is not this network's"
            )
        if hello.node_id == self._node_id:
            self._table.note_own_url(hello.url)
            raise PeerRequestRefused(409, "self_connection", "hello from this node to itself")
        peer, _ = self._table.admit(hello.url, self.clock())
        if peer is not None:
            self._note_height(peer, hello.height)
            if not peer.greeted:  # new, or not reached before: it is up now, prove its URL
                self._spawn(peer, self._greet(peer))
        return web.json_response(self._hello().to_json())

    async def _handle_announce(self, request: web.Request) -> web.StreamResponse:
        announcement = wire.parse_announcement(await wire.read_json(request))
        self._refuse_banned(announcement.url)
        if self._session is None:
            raise PeerRequestRefused(503, "not_running", "the peer network is not running")
        peer = self._table.get(announcement.url)
        if peer is None:
            raise PeerRequestRefused(409, "hello_required", f"say hello first, {announcement.url}")
        accepted = 0
        for block_hash in announcement.blocks:
            if self._claim(block_hash, self.ops.has_block(block_hash)):
                accepted += self._spawn(peer, self._relay_block(peer, block_hash), block_hash)
        for txid in announcement.txs:
            if self._claim(txid, self.ops.has_transaction(txid)):
                accepted += self._spawn(peer, self._relay_transaction(peer, txid), txid)
        self._note_height(peer, announcement.height)
        return web.json_response({"accepted": accepted}, status=202)

    async def _handle_block(self, request: web.Request) -> web.StreamResponse:
        block_hash = wire.parse_hash(request.match_info["hash"], "block hash")
        data = self.ops.get_block_bytes(block_hash)
        if data is None:
            raise PeerRequestRefused(404, "not_found", f"no block {block_hash.hex()}")
        return wire.binary_response(data)

    async def _handle_transaction(self, request: web.Request) -> web.StreamResponse:
        txid = wire.parse_hash(request.match_info["txid"], "transaction id")
        data = self.ops.get_transaction_bytes(txid)
        if data is None:
            raise PeerRequestRefused(404, "not_found", f"no pending transaction {txid.hex()}")
        return wire.binary_response(data)

    async def _handle_headers(self, request: web.Request) -> web.StreamResponse:
        locator = wire.parse_locator(request.query.get("locator"))
        limit = wire.parse_limit(request.query.get("limit"))
        headers = await self.ops.headers_after(locator, limit)
        return wire.binary_response(wire.encode_headers(headers[:limit]))

    async def _handle_peers(self, request: web.Request) -> web.StreamResponse:
        good = self._table.reachable_urls(self.clock())
        return web.json_response({"peers": good[: wire.MAX_PEER_LIST]})

    # --- background work -------------------------------------------------------------------

    def _claim(self, item_hash: bytes, known: bool, *, again: bool = False) -> bool:
        """Whether to fetch ``item_hash`` now (never when ``known``); see :class:`FetchTracker`."""
        return not known and self._fetches.claim(item_hash, self.clock(), again=again)

    def _spawn(
        self, peer: Peer, work: Coroutine[Any, Any, None], claimed: bytes | None = None
    ) -> bool:
        """Run ``work`` in the background with the peer error policy; False when saturated."""
        if len(self._tasks) >= self.policy.max_background_tasks or self._session is None:
            work.close()
            if claimed is not None:
                self._fetches.settle(claimed, retry=True)
            return False
        task = asyncio.create_task(self._with_peer(peer, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _with_peer(self, peer: Peer, work: Awaitable[None]) -> None:
        """The one place that turns a peer's failure into points, health or a log line."""
        try:
            await work
        except PeerMisbehaved as exc:
            self._penalise(peer, exc.points, str(exc))
        except DecodeError as exc:
            self._penalise(peer, PENALTY_UNDECODABLE, f"undecodable reply: {exc}")
        except PeerUnreachable as exc:
            self.log.debug("peer_request_failed", peer=peer.url, error=str(exc))
        except DeRelayLError as exc:
            self.log.warning("peer_work_failed", peer=peer.url, error=str(exc))
        except Exception:  # a bug in one peer's handling must not stop the network
            self.log.exception("peer_work_crashed", peer=peer.url)

    # --- outbound --------------------------------------------------------------------------

    async def _request(
        self,
        peer: Peer,
        method: str,
        path: str,
        limit: int,
        *,
        body: dict[str, object] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request through the shared session; failures count against the peer's health."""
        if self._session is None:
            raise PeerUnreachable("the peer network is not running")
        try:
            async with self._slots:
                answer = await wire.send_request(
                    self._session, method, peer.url + path, limit, body, params,
                    self.policy.retries, self.policy.retry_delay_s,
                )  # fmt: skip
        except PeerUnreachable:
            if self._table.record_failure(peer):
                self.log.info("peer_dropped", peer=peer.url, reason="unreachable")
            raise
        self._table.record_success(peer, self.clock())
        return answer

    async def _greet(self, peer: Peer) -> None:
        """Exchange hellos: proves the URL reachable and on our network, learns its height.
        A hello already on its way to the URL makes this one unnecessary."""
        if peer.url in self._greeting:
            return
        self._greeting.add(peer.url)
        try:
            await self._exchange_hellos(peer)
        finally:
            self._greeting.discard(peer.url)

    async def _exchange_hellos(self, peer: Peer) -> None:
        status, data = await self._request(
            peer, "POST", "/p2p/hello", MAX_JSON_BYTES, body=self._hello().to_json()
        )
        if status in (403, 409):
            if wire.error_code(data) == "self_connection":
                self._table.note_own_url(peer.url)
            self._forget(peer, f"refused our hello with status {status}")
            return
        if status != 200:
            raise PeerUnreachable(f"hello to {peer.url} answered with status {status}")
        reply = wire.parse_hello(wire.parse_json_object(data))
        if reply.node_id == self._node_id:
            self._table.note_own_url(peer.url)
            self._forget(peer, "it is this node")
        elif reply.genesis != self.ops.genesis_hash:
            self._forget(peer, "another network")
        else:
            peer.greeted = True
            self._note_height(peer, reply.height)

    async def _fetch_block(self, peer: Peer, block_hash: bytes) -> Block:
        max_delta = self.ops.max_delta_bytes
        status, data = await self._request(
            peer, "GET", f"/p2p/blocks/{block_hash.hex()}", max_body_bytes(max_delta)
        )
        if status != 200:
            raise PeerUnreachable(f"block {block_hash.hex()} from {peer.url}: status {status}")
        block = decode_block(data, max_delta)
        if block.hash != block_hash:
            raise PeerMisbehaved(
                PENALTY_UNDECODABLE, f"served another block for {block_hash.hex()}"
            )
        return block

    async def _import_block(self, peer: Peer, block: Block) -> str:
        """Submit a fetched block; the status, or an exception naming the peer's fault."""
        try:
            result = await self.ops.submit_block(block)
        except BlockFromFuture:
            return "future"
        except (InvalidBlock, KnownInvalid) as exc:
            raise PeerMisbehaved(PENALTY_INVALID_BLOCK, f"invalid block: {exc}") from exc
        if block.hash in result.invalid:
            raise PeerMisbehaved(PENALTY_INVALID_BLOCK, f"invalid block {block.hash.hex()}")
        if result.status == "orphan":
            self._request_sync(peer)
        return result.status

    async def _relay_block(self, peer: Peer, block_hash: bytes) -> None:
        """Fetch an announced block, import it, and pass it on only if it was stored."""
        status = "failed"
        try:
            status = await self._import_block(peer, await self._fetch_block(peer, block_hash))
        finally:
            self._fetches.settle(block_hash, retry=status in ("failed", "future"))
        if status in ("connected", "stored"):
            self._queue_announcement("block", block_hash, peer.url)

    async def _relay_transaction(self, peer: Peer, txid: bytes) -> None:
        """Fetch an announced transaction; pass it on only if the mempool accepted it."""
        accepted = False
        try:
            accepted = await self._import_transaction(peer, txid)
        finally:
            self._fetches.settle(txid, retry=not accepted)
        if accepted:
            self._queue_announcement("tx", txid, peer.url)

    async def _import_transaction(self, peer: Peer, txid: bytes) -> bool:
        status, data = await self._request(peer, "GET", f"/p2p/txs/{txid.hex()}", MAX_TX_BYTES)
        if status != 200:
            raise PeerUnreachable(f"transaction {txid.hex()} from {peer.url}: status {status}")
        tx = decode_transaction(data)
        if tx.txid != txid:
            raise PeerMisbehaved(
                PENALTY_UNDECODABLE, f"served another transaction for {txid.hex()}"
            )
        try:
            await self.ops.submit_transaction(tx)
        except (NonceTooLow, NonceGap, InsufficientFunds, MempoolError):
            return False  # depends on our view of the ledger or pool: not the peer's fault
        except (InvalidTransaction, InvalidSignature) as exc:
            raise PeerMisbehaved(
                PENALTY_INVALID_TRANSACTION, f"invalid transaction: {exc}"
            ) from exc
        return True

    # --- headers-first catch-up ------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_wakeup.wait(), self.policy.sync_interval_s)
            self._sync_wakeup.clear()
            while (peer := self._next_sync_peer()) is not None:
                peer.synced_height = peer.height
                self._syncing = True
                try:
                    await self._with_peer(peer, self._sync_with(peer))
                finally:
                    self._syncing = False

    def _next_sync_peer(self) -> Peer | None:
        """A peer that asked for a catch-up, else the highest one ahead of us not yet tried."""
        active = {peer.url: peer for peer in self._table.greeted_peers(self.clock())}
        while self._sync_requests:
            peer = active.get(self._sync_requests.pop(0))
            if peer is not None:
                return peer
        tip = self.ops.tip_height()
        ahead = [p for p in active.values() if p.height > max(tip, p.synced_height)]
        return max(ahead, key=lambda p: p.height, default=None)

    async def _sync_with(self, peer: Peer) -> None:
        """Headers from the peer, checked to link, then their blocks in height order."""
        start_tip = self.ops.tip_height()
        locator = self.ops.locator()
        limit = self.policy.headers_per_request
        while self._table.get(peer.url) is peer and not peer.banned_until:
            headers = await self._fetch_headers(peer, locator, limit)
            if not headers:
                break
            self._check_header_chain(headers)
            await self._download(peer, [h for h in headers if not self.ops.has_block(h.hash)])
            if len(headers) < limit:
                break
            locator = [headers[-1].hash, *self.ops.locator()][: wire.MAX_LOCATOR]
        if self.ops.tip_height() != start_tip:
            head = self.ops.locator()[0]
            self._queue_announcement("block", head, peer.url)
            self.log.info("caught_up", peer=peer.url, height=self.ops.tip_height())

    async def _fetch_headers(
        self, peer: Peer, locator: list[bytes], limit: int
    ) -> list[BlockHeader]:
        params = {"locator": wire.format_locator(locator), "limit": str(limit)}
        status, data = await self._request(
            peer, "GET", "/p2p/headers", wire.max_headers_bytes(limit), params=params
        )
        if status != 200:
            raise PeerUnreachable(f"headers from {peer.url}: status {status}")
        return wire.decode_headers(data, limit)

    def _check_header_chain(self, headers: list[BlockHeader]) -> None:
        """Cheap linkage: a known parent, then each header on the one before it."""
        if not self.ops.has_block(headers[0].parent):
            raise PeerMisbehaved(
                PENALTY_UNLINKED_HEADERS, f"headers start on unknown {headers[0].parent.hex()}"
            )
        for before, after in pairwise(headers):
            if after.parent != before.hash or after.height != before.height + 1:
                raise PeerMisbehaved(
                    PENALTY_UNLINKED_HEADERS, f"header at height {after.height} does not link"
                )

    async def _download(self, peer: Peer, headers: list[BlockHeader]) -> None:
        """Fetch blocks a window at a time, concurrently; import them strictly in order.

        The next window is fetched while the current one is imported: receiving and decoding
        blocks runs on the event loop, validating them on the chain thread.
        """
        size = self.policy.blocks_in_flight
        windows = [headers[start : start + size] for start in range(0, len(headers), size)]
        pending = [self._fetch_window(peer, windows[0])] if windows else []
        try:
            for index in range(len(windows)):
                if index + 1 < len(windows):
                    pending.append(self._fetch_window(peer, windows[index + 1]))
                current = pending.pop(0)
                try:
                    for block in await current.blocks:
                        if isinstance(block, BaseException):
                            raise block
                        if await self._import_block(peer, block) in ("orphan", "future"):
                            return
                finally:
                    self._settle_window(current)
        finally:
            for window_left in pending:
                window_left.blocks.cancel()
                self._settle_window(window_left)

    def _fetch_window(self, peer: Peer, headers: list[BlockHeader]) -> _Window:
        """Start fetching the blocks of ``headers`` not stored or in flight already."""
        wanted = [h.hash for h in headers]
        claimed = [h for h in wanted if self._claim(h, self.ops.has_block(h), again=True)]
        fetches = (self._fetch_block(peer, h) for h in claimed)
        return _Window(claimed, asyncio.gather(*fetches, return_exceptions=True))

    def _settle_window(self, window: _Window) -> None:
        for block_hash in window.claimed:
            self._fetches.settle(block_hash, retry=not self.ops.has_block(block_hash))

    # --- gossip and peer exchange ----------------------------------------------------------

    def _queue_announcement(
        self, kind: str, item_hash: bytes, exclude: str | None, *, again: bool = False
    ) -> None:
        """Queue an offer of a hash to the peers; one relayed before only ``again``."""
        if not self._fetches.first_offer(item_hash, again=again):
            return
        try:
            self._outbox.put_nowait((kind, item_hash, exclude))
        except asyncio.QueueFull:
            self.log.warning("announcement_dropped", hash=item_hash.hex())

    async def _gossip_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < wire.MAX_ANNOUNCE_BLOCKS:
                batch.append(self._outbox.get_nowait())
            sends = []
            for peer in self._table.greeted_peers(self.clock()):
                blocks = [h for kind, h, ex in batch if kind == "block" and ex != peer.url]
                txs = [h for kind, h, ex in batch if kind == "tx" and ex != peer.url]
                if blocks or txs:
                    sends.append(self._with_peer(peer, self._send_announcement(peer, blocks, txs)))
            await asyncio.gather(*sends)

    async def _send_announcement(self, peer: Peer, blocks: list[bytes], txs: list[bytes]) -> None:
        message = wire.Announcement(self.self_url, self.ops.tip_height(), tuple(blocks), tuple(txs))
        status, _ = await self._request(
            peer, "POST", "/p2p/announce", MAX_JSON_BYTES, body=message.to_json()
        )
        if status == 403:
            self._forget(peer, "it banned us")
        elif status == 409:
            peer.greeted = False
            self._spawn(peer, self._greet(peer))

    async def _seed_loop(self) -> None:
        """Greet the seeds not greeted yet: at once, then after 1, 2, 4, ... seconds up to the
        exchange interval (nodes of a devnet start together: a seed may still be starting)."""
        interval = self.policy.exchange_interval_s
        delays = seed_retry_delays(self.policy.seed_retry_s, interval)
        while True:
            seeds = self._table.ungreeted_seeds(self.clock())
            await asyncio.gather(*(self._with_peer(p, self._greet(p)) for p in seeds))
            if self._table.ungreeted_seeds(self.clock()):
                await asyncio.sleep(next(delays))
            else:
                delays = seed_retry_delays(self.policy.seed_retry_s, interval)
                await asyncio.sleep(interval)

    async def _exchange_loop(self) -> None:
        """Greet every peer again (heights; one never reached is forgotten after a few
        tries), then learn new peers from a few of the reachable ones."""
        while True:
            known = self._table.active_peers(self.clock())
            await asyncio.gather(*(self._with_peer(p, self._greet(p)) for p in known))
            reachable = self._table.greeted_peers(self.clock())
            sample = random.sample(reachable, min(3, len(reachable)))
            await asyncio.gather(*(self._with_peer(p, self._learn_peers(p)) for p in sample))
            await asyncio.sleep(self.policy.exchange_interval_s)

    async def _learn_peers(self, peer: Peer) -> None:
        status, data = await self._request(peer, "GET", "/p2p/peers", MAX_JSON_BYTES)
        if status != 200:
            raise PeerUnreachable(f"peers from {peer.url}: status {status}")
        budget = self.policy.greet_per_exchange
        for url in wire.parse_peer_list(wire.parse_json_object(data)):
            new_peer, new = self._table.admit(url, self.clock()) if budget else (None, False)
            if new_peer is not None and new:
                budget -= 1
                self._spawn(new_peer, self._greet(new_peer))
