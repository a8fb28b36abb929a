"""The chain manager: block import, fork choice, connect and disconnect, reorganisation.

This is the one place that writes consensus state. A block is first *accepted* (context-free
rules checked, header, body and delta stored in one batch), then *connected* when it extends
the best chain (full validation, then one batch with the ledger changes, the undo record and the
new head). A heavier branch is activated by disconnecting back to the fork point and connecting
the branch, one atomic batch per block, so a crash at any instant leaves a consistent chain that
:meth:`Chain.activate_best_chain` carries on from at the next start.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from derelayl_chain._background_write import BackgroundWrite
from derelayl_chain.block import (
    Block,
    BlockHeader,
    decode_header,
    decode_transactions,
    encode_transactions,
)
from derelayl_chain.chain_records import (
    STATUS_CONNECTED,
    STATUS_INVALID,
    STATUS_STORED,
    ImportResult,
    IndexEntry,
    UndoRecord,
    event_record,
)
from derelayl_chain.consensus import (
    MEDIAN_TIME_SPAN,
    ParentContext,
    ValidatedBlock,
    Weights,
    block_work,
    check_body,
    check_header,
    check_learning,
    check_ledger,
    effective_difficulty,
    next_difficulty,
)
from derelayl_chain.encoding import encode, encode_uint
from derelayl_chain.exceptions import (
    BlockBodyMismatch,
    BlockFromFuture,
    ChainError,
    DuplicateBlock,
    FinalityViolation,
    InvalidBlock,
    KnownInvalid,
    NotFound,
    StorageError,
    UnknownParent,
)
from derelayl_chain.genesis import GenesisConfig
from derelayl_chain.learning.delta import compress, decompress
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import initial_weights, weight_spec
from derelayl_chain.learning.weights import apply_delta, decode_weights, encode_weights
from derelayl_chain.state import (
    Account,
    StateTransition,
    decode_account,
    decode_globals,
)
from derelayl_chain.storage import schema
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch

DEFAULT_ORPHAN_LIMIT = 64
_WEIGHT_CACHE_SIZE = 4


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Chain:
    """One node's view of the chain, backed by a key-value store.

    Methods are serialised by an internal lock; call them from worker threads, not the event
    loop, since connecting a block evaluates a model.
    """

    def __init__(
        self,
        store: KeyValueStore,
        genesis: GenesisConfig,
        clock: Callable[[], int] = now_ms,
        orphan_limit: int = DEFAULT_ORPHAN_LIMIT,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.params = genesis.params
        self.clock = clock
        self.orphan_limit = orphan_limit
        self.lock = threading.RLock()
        self.index: dict[bytes, IndexEntry] = {}
        self.invalid: set[bytes] = set()
        self.orphans: OrderedDict[bytes, Block] = OrderedDict()
        self._weights: OrderedDict[bytes, Weights] = OrderedDict()
        self._decoded: dict[bytes, tuple[Block, Weights]] = {}
        """Blocks accepted during the current import with their checked, decoded deltas: so
        connecting them neither reads them back nor decodes and hashes the delta again."""
        self._pending: tuple[Block, BackgroundWrite] | None = None
        """The block whose data is being written in the background, if any."""
        self._seq = 0
        self._candidates: set[bytes] = set()
        """Stored blocks that may be the best: every block not known invalid with at least the
        tip's work, so fork choice looks at a handful of blocks instead of the whole index."""
        self._open()

    # --- start-up --------------------------------------------------------------------------

    def _open(self) -> None:
        stored_genesis = self.store.get(schema.meta_key("genesis_hash"))
        if stored_genesis is None:
            self._write_genesis()
        elif stored_genesis != self.genesis.hash:
            raise StorageError(
                f"data directory belongs to network {stored_genesis.hex()[:16]}, "
                f"not {self.genesis.hash.hex()[:16]}"
            )
        self._load_index()
        head = self.store.get(schema.meta_key("head"))
        if head is None or head not in self.index:
            raise StorageError("database has no valid head block")
        self.tip = self.index[head]
        self._candidates = {
            entry.hash
            for entry in self.index.values()
            if entry.work >= self.tip.work and entry.status != STATUS_INVALID
        }
        self.ledger = decode_globals(self._require(schema.global_state_key()))
        # Carry on with what a crash interrupted. A branch stored before the crash but found
        # beyond finality only now is remembered as invalid; the chain stays where it is.
        with contextlib.suppress(FinalityViolation):
            self.activate_best_chain()

    def _write_genesis(self) -> None:
        block = self.genesis.block()
        transition = self.genesis.ledger_transition()
        weights = initial_weights(self.genesis.task)
        result = evaluate(self.genesis.task, weights)
        entry = IndexEntry(block.header, 0, 0, STATUS_CONNECTED, result.loss, result.accuracy)
        batch = WriteBatch()
        self._put_block_data(batch, block, entry)
        self._put_accounts(batch, transition.changes)
        batch.put(schema.global_state_key(), transition.globals.encode())
        batch.put(schema.canonical_key(0), block.hash)
        batch.put(schema.checkpoint_key(0, block.hash), compress(encode_weights(weights)))
        batch.put(schema.meta_key("genesis_hash"), block.hash)
        batch.put(schema.meta_key("head"), block.hash)
        self.store.write(batch)

    def _load_index(self) -> None:
        for key, value in self.store.iterate(schema.PREFIXES["header"]):
            header = decode_header(value)
            entry = IndexEntry.decode(header, self._require(schema.block_index_key(key[1:])))
            self.index[header.hash] = entry
            self._seq = max(self._seq, entry.seq + 1)
            if entry.status == STATUS_INVALID:
                self.invalid.add(header.hash)
        # Blocks refused on arrival have a marker but no header or index entry.
        for key, _ in self.store.iterate(schema.PREFIXES["invalid"]):
            self.invalid.add(schema.parse_hash_key(key, "invalid"))

    def _require(self, key: bytes) -> bytes:
        value = self.store.get(key)
        if value is None:
            raise StorageError(f"database is missing key {key[:1]!r}{key[1:].hex()}")
        return value

    # --- reads -----------------------------------------------------------------------------

    def get_account(self, account: bytes) -> Account | None:
        raw = self.store.get(schema.account_key(account))
        return decode_account(raw) if raw is not None else None

    def hash_at(self, height: int) -> bytes | None:
        return self.store.get(schema.canonical_key(height))

    def entry(self, block_hash: bytes) -> IndexEntry:
        found = self.index.get(block_hash)
        if found is None:
            raise NotFound(f"no block {block_hash.hex()}")
        return found

    def get_block(self, block_hash: bytes) -> Block:
        header = self.entry(block_hash).header
        if header.height == 0:
            return self.genesis.block()
        pending = self._pending
        if pending is not None and pending[0].hash == block_hash:
            return pending[0]  # its data may still be on the way to the store
        body = decode_transactions(self._require(schema.body_key(block_hash)))
        delta = decompress(self._require(schema.delta_key(block_hash)), self.params.max_delta_bytes)
        return Block(header, body, delta)

    def is_canonical(self, block_hash: bytes) -> bool:
        entry = self.index.get(block_hash)
        return entry is not None and self.hash_at(entry.height) == block_hash

    def ancestors(self, block_hash: bytes) -> Iterator[IndexEntry]:
        """The block and its ancestors, newest first."""
        entry: IndexEntry | None = self.index.get(block_hash)
        while entry is not None:
            yield entry
            entry = self.index.get(entry.header.parent) if entry.height else None

    def weights_at(self, block_hash: bytes) -> Weights:
        """Weights after a block: cached, or rebuilt from the nearest checkpoint."""
        with self.lock:
            cached = self._weights.get(block_hash)
            if cached is not None:
                self._weights.move_to_end(block_hash)
                return cached
            path: list[IndexEntry] = []
            for entry in self.ancestors(block_hash):
                raw = self.store.get(schema.checkpoint_key(entry.height, entry.hash))
                if raw is not None or entry.hash in self._weights:
                    base = self._weights.get(entry.hash) or decode_weights(
                        decompress(raw or b"", 1 << 30), weight_spec(self.genesis.task), 1 << 30
                    )
                    break
                path.append(entry)
            else:
                raise StorageError(f"no checkpoint below block {block_hash.hex()}")
            for entry in reversed(path):
                base = apply_delta(base, self._load_delta(entry.hash))
            self._cache_weights(block_hash, base)
            return base

    def _load_delta(self, block_hash: bytes) -> Weights:
        from derelayl_chain.learning.delta import decode_delta

        raw = decompress(self._require(schema.delta_key(block_hash)), self.params.max_delta_bytes)
        return decode_delta(raw, weight_spec(self.genesis.task), self.params.max_delta_bytes)

    def _cache_weights(self, block_hash: bytes, weights: Weights) -> None:
        self._weights[block_hash] = weights
        self._weights.move_to_end(block_hash)
        while len(self._weights) > _WEIGHT_CACHE_SIZE:
            self._weights.popitem(last=False)

    def parent_context(self, parent_hash: bytes) -> ParentContext:
        """The rule inputs for a child of ``parent_hash`` (ledger: the current tip's)."""
        parent = self.entry(parent_hash)
        chain = []
        span: int | None = None
        window = self.params.retarget_window
        for depth, entry in enumerate(self.ancestors(parent_hash)):
            if depth < MEDIAN_TIME_SPAN:
                chain.append(entry.header.timestamp_ms)
            if depth == window - 1 and (parent.height + 1) % window == 0:
                span = parent.header.timestamp_ms - entry.header.timestamp_ms
            if depth >= max(MEDIAN_TIME_SPAN, window):
                break
        if (parent.height + 1) % window == 0 and span is None and parent.height + 1 >= window:
            span = parent.header.timestamp_ms - self.genesis.timestamp_ms
        difficulty = next_difficulty(self.params, parent.height + 1, parent.header.difficulty, span)
        return ParentContext(parent.header, self.ledger, tuple(reversed(chain)), difficulty)

    # --- import ----------------------------------------------------------------------------

    def submit_block(self, block: Block) -> ImportResult:
        """Accept a block from anywhere; connect it (and any orphans it frees) if it wins."""
        with self.lock:
            block_hash = block.hash
            if block_hash in self.invalid or block.header.parent in self.invalid:
                self.invalid.add(block_hash)
                raise KnownInvalid(f"block {block_hash.hex()} is known invalid")
            if block_hash in self.index or block_hash in self.orphans:
                return ImportResult("duplicate")
            if block.header.parent not in self.index:
                self._add_orphan(block)
                return ImportResult("orphan")
            try:
                self._accept(block)
                for child in self._take_orphans(block_hash):
                    try:
                        self._accept(child)
                    except (InvalidBlock, ChainError, BlockFromFuture):
                        continue
                return self.activate_best_chain()
            finally:
                try:
                    self._settle()
                finally:
                    self._decoded.clear()

    def _add_orphan(self, block: Block) -> None:
        self.orphans[block.hash] = block
        while len(self.orphans) > self.orphan_limit:
            self.orphans.popitem(last=False)

    def _take_orphans(self, parent_hash: bytes) -> list[Block]:
        found: list[Block] = []
        frontier = [parent_hash]
        while frontier:
            parent = frontier.pop()
            children = [b for b in self.orphans.values() if b.header.parent == parent]
            for child in children:
                del self.orphans[child.hash]
                found.append(child)
                frontier.append(child.hash)
        return found

    def _accept(self, block: Block) -> IndexEntry:
        """Check the context-free rules and store the block (not yet connected)."""
        block_hash = block.hash
        if block_hash in self.index:
            raise DuplicateBlock(f"block {block_hash.hex()} is already stored")
        parent = self.index.get(block.header.parent)
        if parent is None:
            raise UnknownParent(f"parent {block.header.parent.hex()} is unknown")
        context = self.parent_context(parent.hash)
        try:
            d_eff = check_header(block.header, context, self.genesis, self.clock())
        except InvalidBlock:
            self._remember_invalid(block_hash)
            raise
        # The delta (megabytes) is compressed while the body is checked, then written with the
        # block's data while the block is validated; every later write waits for it (_settle),
        # so the store sees the batches in order.
        write = BackgroundWrite(self.store, block_hash, block.delta)
        try:
            try:
                delta = check_body(block, self.genesis)
            except InvalidBlock as exc:
                write.cancel()
                if not isinstance(exc, BlockBodyMismatch):  # else the genuine body may come
                    self._remember_invalid(block_hash)
                raise
            entry = IndexEntry(
                block.header, parent.work + block_work(d_eff), self._seq, STATUS_STORED
            )
            batch = WriteBatch()
            self._put_block_data(batch, block, entry)
            self._settle()
        except BaseException:
            write.cancel()
            raise
        write.commit(batch)
        self._seq += 1
        self._pending = (block, write)
        self.index[block_hash] = entry
        if entry.work >= self.tip.work:
            self._candidates.add(block_hash)
        self._decoded[block_hash] = (block, delta)
        return entry

    def _settle(self) -> None:
        """Wait for the block data being written in the background; if it failed, forget it."""
        if self._pending is None:
            return
        block, write = self._pending
        try:
            write.wait()
        except BaseException:
            self.index.pop(block.hash, None)
            self._decoded.pop(block.hash, None)
            raise
        finally:
            self._pending = None

    def _put_block_data(self, batch: WriteBatch, block: Block, entry: IndexEntry) -> None:
        """Header, index entry and body; the delta is added by :class:`BackgroundWrite`."""
        block_hash = block.hash
        batch.put(schema.header_key(block_hash), block.header.encode())
        batch.put(schema.block_index_key(block_hash), encode(entry.to_item()))
        if block.height:
            batch.put(schema.body_key(block_hash), encode_transactions(block.transactions))

    def _remember_invalid(self, block_hash: bytes) -> None:
        self._settle()
        self.invalid.add(block_hash)
        batch = WriteBatch()
        batch.put(schema.invalid_key(block_hash), b"\x01")
        entry = self.index.get(block_hash)
        if entry is not None:
            entry.status = STATUS_INVALID
            batch.put(schema.block_index_key(block_hash), encode(entry.to_item()))
        self.store.write(batch)

    # --- fork choice -----------------------------------------------------------------------

    def best_candidate(self) -> IndexEntry:
        """The stored block with most work whose branch holds no known-invalid block.

        Only the candidate set is looked at, best first. A block leaves it for good once it has
        less work than the tip (some block with more work, the tip included, stays in the set
        or on the chain to come back to) or once its branch holds a known-invalid block.
        """
        tip = self.tip
        live: list[IndexEntry] = []
        for block_hash in list(self._candidates):
            entry = self.index.get(block_hash)
            if entry is None or entry.work < tip.work or entry.status == STATUS_INVALID:
                self._candidates.discard(block_hash)
            else:
                live.append(entry)
        for entry in sorted(live, key=lambda e: (-e.work, e.seq)):
            if entry.work == tip.work and entry.seq >= tip.seq:
                break  # the tip itself, or stored after it with equal work: first seen wins
            if not self._branch_has_invalid(entry):
                return entry
            self._candidates.discard(entry.hash)
        return tip

    def _branch_has_invalid(self, entry: IndexEntry) -> bool:
        """Whether a known-invalid block lies between ``entry`` and the current chain.

        The walk stops at the first connected ancestor: connected blocks were fully validated,
        and so were theirs, so a new tip costs a step, not a walk back to genesis.
        """
        for ancestor in self.ancestors(entry.hash):
            if ancestor.hash in self.invalid:
                return True
            if ancestor.status == STATUS_CONNECTED:
                return False
        return False

    def activate_best_chain(self) -> ImportResult:
        """Move the tip to the best valid candidate, one atomic batch per block."""
        with self.lock:
            connected: list[Block] = []
            disconnected: list[Block] = []
            invalid: list[bytes] = []
            refused: list[FinalityViolation] = []
            while True:
                best = self.best_candidate()
                if best.hash == self.tip.hash:
                    break
                branch = self._branch_to(best)
                fork = self.index[branch[0].header.parent] if branch else self.tip
                if self.tip.height - fork.height > self.params.finality_depth:
                    # Remembered like an invalid branch, so fork choice stops proposing it;
                    # the next-best candidate may still be a valid move.
                    self._remember_invalid(branch[0].hash)
                    refused.append(
                        FinalityViolation(
                            f"switching to block {best.hash.hex()[:16]} would disconnect "
                            f"{self.tip.height - fork.height} blocks (finality depth "
                            f"{self.params.finality_depth})",
                            branch_root=branch[0].hash,
                        )
                    )
                    continue
                while self.tip.hash != fork.hash:
                    disconnected.append(self._disconnect_tip())
                for entry in branch:
                    try:
                        connected.append(self._connect(*self._connectable(entry.hash)))
                    except InvalidBlock:
                        invalid.append(entry.hash)
                        self._remember_invalid(entry.hash)
                        break
            if refused and not connected and not disconnected:
                raise refused[0]
            status = "connected" if connected else "stored"
            refused_roots = tuple(violation.branch_root for violation in refused)
            return ImportResult(
                status, tuple(connected), tuple(disconnected), tuple(invalid), refused_roots
            )

    def _branch_to(self, target: IndexEntry) -> list[IndexEntry]:
        """Blocks from the fork point with the current chain (exclusive) up to ``target``."""
        branch: list[IndexEntry] = []
        for entry in self.ancestors(target.hash):
            if self.is_canonical(entry.hash):
                break
            branch.append(entry)
        return list(reversed(branch))

    # --- connect / disconnect --------------------------------------------------------------

    def validate_child(self, block: Block) -> ValidatedBlock:
        """Full validation of a child of the current tip, without writing anything."""
        return self._validate(block, None)

    def _validate(self, block: Block, delta: Weights | None) -> ValidatedBlock:
        """:meth:`validate_child`; ``delta`` is the block's delta if its body already passed."""
        if block.header.parent != self.tip.hash:
            raise InvalidBlock("block does not extend the current tip")
        context = self.parent_context(self.tip.hash)
        d_eff = check_header(block.header, context, self.genesis, self.clock())
        if delta is None:
            delta = check_body(block, self.genesis)
        transition, emission, shares = check_ledger(block, context, self, self.genesis, d_eff)
        weights, result = check_learning(
            block.header, self.weights_at(self.tip.hash), delta, self.genesis
        )
        return ValidatedBlock(block, transition, weights, result, d_eff, emission, shares)

    def _connectable(self, block_hash: bytes) -> tuple[Block, Weights | None]:
        """A stored block to connect, with its decoded delta if this import already checked it."""
        found = self._decoded.pop(block_hash, None)
        return found if found is not None else (self.get_block(block_hash), None)

    def _connect(self, block: Block, delta: Weights | None = None) -> Block:
        validated = self._validate(block, delta)
        block_hash = block.hash
        transition = validated.transition
        entry = self.index[block_hash]
        entry.status = STATUS_CONNECTED
        entry.loss, entry.accuracy = validated.evaluation.loss, validated.evaluation.accuracy
        undo = UndoRecord(transition.undo, transition.previous_globals)
        batch = WriteBatch()
        self._put_accounts(batch, transition.changes)
        self._put_indexes(batch, block, transition, undo)
        batch.put(schema.global_state_key(), transition.globals.encode())
        batch.put(schema.canonical_key(block.height), block_hash)
        batch.put(schema.meta_key("head"), block_hash)
        batch.put(schema.block_index_key(block_hash), encode(entry.to_item()))
        if block.height % self.params.checkpoint_interval == 0:
            key = schema.checkpoint_key(block.height, block_hash)
            batch.put(key, compress(encode_weights(validated.weights)))
        batch.put(schema.undo_key(block_hash), undo.encode())
        self._settle()
        self.store.write(batch)
        self.tip, self.ledger = entry, transition.globals
        self._cache_weights(block_hash, validated.weights)
        return block

    def _put_accounts(self, batch: WriteBatch, changes: dict[bytes, Account]) -> None:
        for account, value in changes.items():
            if value.is_empty():
                batch.delete(schema.account_key(account))
            else:
                batch.put(schema.account_key(account), value.encode())

    def _put_indexes(
        self, batch: WriteBatch, block: Block, transition: StateTransition, undo: UndoRecord
    ) -> None:
        """Transaction index, account history and reward records; keys noted for undo."""
        height, seq = block.height, 0

        def put(key: bytes, value: bytes) -> None:
            batch.put(key, value)
            undo.extra_keys.append(key)

        for position, tx in enumerate(block.transactions):
            put(schema.tx_index_key(tx.txid), encode([block.hash, encode_uint(position)]))
            parties = {tx.sender_account}
            to = getattr(tx.payload, "to", None)
            if isinstance(to, bytes):
                parties.add(to)
            for account in sorted(parties):
                put(schema.history_key(account, height, seq), encode([b"tx", tx.encode()]))
                seq += 1
        for event in transition.events:
            put(schema.history_key(event.account, height, seq), event_record(block, event))
            seq += 1
        header = block.header
        put(
            schema.reward_key(header.reward_to, height),
            encode([block.hash, encode_uint(header.reward), encode_uint(transition.fees)]),
        )

    def _disconnect_tip(self) -> Block:
        entry = self.tip
        if entry.height == 0:
            raise ChainError("cannot disconnect the genesis block")
        self._settle()
        block = self.get_block(entry.hash)
        undo = UndoRecord.decode(self._require(schema.undo_key(entry.hash)))
        batch = WriteBatch()
        self._put_accounts(batch, undo.accounts)
        for key in undo.extra_keys:
            batch.delete(key)
        batch.put(schema.global_state_key(), undo.globals_before.encode())
        batch.delete(schema.canonical_key(entry.height))
        batch.put(schema.meta_key("head"), entry.header.parent)
        batch.delete(schema.undo_key(entry.hash))
        # Saved beside the node's pending transactions in this same batch: a crash before the
        # node takes them back (mid-reorganisation, say) leaves them to the mempool's restore,
        # which drops those the new branch confirms.
        for tx in block.transactions:
            batch.put(schema.mempool_key(tx.txid), tx.encode())
        entry.status = STATUS_STORED
        batch.put(schema.block_index_key(entry.hash), encode(entry.to_item()))
        self.store.write(batch)
        self.tip = self.index[entry.header.parent]
        self.ledger = undo.globals_before
        self._candidates.add(entry.hash)  # more work than the new tip: a way back
        return block

    # --- helpers for proposers and peers ---------------------------------------------------

    def effective_difficulty_at(self, timestamp_ms: int) -> int:
        """The improvement (ppm) a child of the tip timestamped ``timestamp_ms`` must deliver."""
        context = self.parent_context(self.tip.hash)
        elapsed = timestamp_ms - self.tip.header.timestamp_ms
        return effective_difficulty(context.expected_difficulty, elapsed, self.params.decay_ms)

    def canonical_headers(self, start: int, limit: int) -> list[BlockHeader]:
        """Up to ``limit`` canonical headers from height ``start``."""
        headers = []
        for height in range(start, min(start + limit, self.tip.height + 1)):
            block_hash = self.hash_at(height)
            if block_hash is None:
                break
            headers.append(self.index[block_hash].header)
        return headers

    def fork_height(self, locator: list[bytes]) -> int:
        """Height of the first locator hash on our canonical chain (0 if none)."""
        for block_hash in locator:
            if self.is_canonical(block_hash):
                return self.index[block_hash].height
        return 0

    def locator(self) -> list[bytes]:
        """Canonical hashes at exponentially spaced heights back from the tip."""
        hashes, step, height = [], 1, self.tip.height
        while height > 0:
            found = self.hash_at(height)
            if found is not None:
                hashes.append(found)
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self.genesis.hash)
        return hashes
