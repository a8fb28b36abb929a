"""The mempool: signed transactions waiting for a block.

The pool is a plain in-memory structure with no I/O. The node persists it by writing
:meth:`Mempool.snapshot` (or the ids each call reports as added and removed) to its store, and
loads it back on start with :meth:`Mempool.restore`.

Admission order (cheapest check first, the signature last but one)::

    duplicate -> chain id and amounts -> fee >= min fee -> nonce not used -> nonce within the
    sender's window -> sender limit -> replacement fee bump -> pool full -> signature -> balance

Nonces: a transaction is admitted when its nonce lies in ``[account nonce, account nonce +
max_per_sender)``. Nonces beyond the next contiguous one are *queued*: they stay in the pool and
become *ready* (eligible for a block) once the missing nonces arrive. A nonce past the window
raises :class:`NonceGap`.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from derelayl_chain.exceptions import (
    DeRelayLError,
    DuplicateTransaction,
    FeeTooLowToReplace,
    InsufficientFunds,
    InvalidTransaction,
    MempoolFull,
    NonceGap,
    NonceTooLow,
)
from derelayl_chain.state import (
    EMPTY_ACCOUNT,
    Account,
    AccountReader,
    LedgerGlobals,
    LedgerParams,
    apply_transaction,
    begin_update,
)
from derelayl_chain.transaction import (
    Access,
    Transaction,
    check_transaction_form,
    decode_transaction,
    txid_of,
    verify_transaction,
)


class SenderLimitReached(MempoolFull):
    """The sender already has ``max_per_sender`` transactions pending."""


def now_ms() -> int:
    """Wall-clock milliseconds: the default clock for expiry."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class MempoolPolicy:
    """Local limits; they are not consensus rules and may differ between nodes."""

    max_transactions: int = 10_000
    """Pool capacity; beyond it the cheapest transaction is evicted or the new one refused."""
    max_per_sender: int = 64
    """Most transactions one sender may have pending; also the width of its nonce window."""
    expiry_ms: int = 3 * 3600 * 1000
    """Age after which a pending transaction is dropped by :meth:`Mempool.expire`."""
    replacement_bump_percent: int = 10
    """A same-nonce replacement must pay more, and at least this many percent more."""


@dataclass(frozen=True, slots=True)
class AddResult:
    """What :meth:`Mempool.add` did, so the node can update its persisted copy."""

    txid: bytes
    replaced: bytes | None = None
    """Id of the same-nonce transaction this one replaced."""
    evicted: tuple[bytes, ...] = ()
    """Ids of cheaper transactions dropped to make room."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """A pending transaction with the values computed once at admission."""

    tx: Transaction
    txid: bytes
    encoded: bytes
    sender: bytes
    """20-byte account id of the sender."""
    added_ms: int
    seq: int
    """Arrival order: breaks fee ties and tells stale heap records from live ones."""


class Mempool:
    """Pending transactions, ordered per sender by nonce and across senders by fee.

    Priority is the plain fee per transaction: transactions are near-constant in size, so fee
    per byte would rank them the same way. :meth:`select` takes, among the senders whose next
    nonce is pending, the one whose next transaction pays most, then moves to that sender's
    following nonce; a sender's cheap transaction therefore holds back its later ones.

    Eviction removes the cheapest *tail*: the highest-nonce transaction of the sender whose tail
    pays least, so evicting never leaves a gap in front of another pending transaction.

    Every public method holds one lock, so the node may call from its event loop and its chain
    worker thread alike. The ledger globals (needed to settle unpaid royalties into a balance)
    come from ``ledger`` when given, else from the reader's own ``ledger`` attribute (a Chain
    has one), else the empty ledger.
    """

    def __init__(
        self,
        chain_id: int,
        params: LedgerParams,
        accounts: AccountReader,
        policy: MempoolPolicy = MempoolPolicy(),
        clock: Callable[[], int] = now_ms,
        *,
        ledger: Callable[[], LedgerGlobals] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.params = params
        self.policy = policy
        self._accounts = accounts
        self._clock = clock
        self._ledger = ledger
        self._lock = threading.RLock()
        self._entries: dict[bytes, _Entry] = {}
        self._senders: dict[bytes, dict[int, _Entry]] = {}
        # Lazy heaps: records of removed or superseded entries are skipped when met.
        self._tails: list[tuple[int, int, bytes]] = []  # (fee, -seq, txid) of sender tails
        self._ages: list[tuple[int, int, bytes]] = []  # (added_ms, seq, txid)
        self._seq = 0
        self._total_fees = 0
        self._total_bytes = 0

    # --- queries ---------------------------------------------------------------------------

    def __contains__(self, txid: object) -> bool:
        return txid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, txid: bytes) -> Transaction | None:
        entry = self._entries.get(txid)
        return entry.tx if entry is not None else None

    def get_bytes(self, txid: bytes) -> bytes | None:
        """The canonical encoding of a pending transaction (kept from admission)."""
        entry = self._entries.get(txid)
        return entry.encoded if entry is not None else None

    def pending_for(self, sender_account: bytes) -> list[Transaction]:
        """The sender's pending transactions in nonce order (queued ones included)."""
        with self._lock:
            queue = self._senders.get(sender_account, {})
            return [queue[nonce].tx for nonce in sorted(queue)]

    def next_nonce(self, sender_account: bytes) -> int:
        """The nonce a wallet should use next: account nonce plus contiguous pending ones."""
        with self._lock:
            nonce = self._account(sender_account).nonce
            queue = self._senders.get(sender_account, {})
            while nonce in queue:
                nonce += 1
            return nonce

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {
                "count": len(self._entries),
                "senders": len(self._senders),
                "total_fees": self._total_fees,
                "bytes": self._total_bytes,
            }

    # --- admission -------------------------------------------------------------------------

    def add(self, tx: Transaction) -> AddResult:
        """Admit ``tx`` or raise the error naming why not (see the module docstring)."""
        encoded = tx.encode()
        txid = txid_of(encoded)
        with self._lock:
            if txid in self._entries:
                raise DuplicateTransaction(f"transaction {txid.hex()} is already pending")
            self._check_form(tx)
            sender = tx.sender_account
            account = self._account(sender)
            queue = self._senders.get(sender, {})
            replaced = queue.get(tx.nonce)
            self._check_nonce(tx, account.nonce, len(queue), replaced)
            victim = None if replaced is not None else self._find_victim(tx, sender)
            verify_transaction(tx, self.chain_id)
            self._check_balance(tx, account, queue)
            evicted: tuple[bytes, ...] = ()
            if replaced is not None:
                self._remove(replaced)
            elif victim is not None:
                self._remove(victim)
                evicted = (victim.txid,)
            self._insert(_Entry(tx, txid, encoded, sender, self._clock(), self._next_seq()))
            return AddResult(txid, replaced.txid if replaced else None, evicted)

    def readmit(self, transactions: Iterable[Transaction]) -> list[bytes]:
        """Take back transactions of disconnected blocks; return the ids admitted."""
        admitted = []
        for tx in transactions:
            try:
                admitted.append(self.add(tx).txid)
            except DeRelayLError:
                continue  # confirmed again on the new branch, or no longer valid
        return admitted

    def restore(self, encoded: Iterable[bytes]) -> int:
        """Re-add persisted transactions that decode and are still valid; return how many."""
        count = 0
        for data in encoded:
            try:
                self.add(decode_transaction(data))
            except DeRelayLError:  # DecodeError included
                continue
            count += 1
        return count

    def snapshot(self) -> list[bytes]:
        """Encoded transactions in sender and nonce order, for :meth:`restore`."""
        with self._lock:
            return [
                queue[nonce].encoded
                for _, queue in sorted(self._senders.items())
                for nonce in sorted(queue)
            ]

    def _check_form(self, tx: Transaction) -> None:
        check_transaction_form(tx, self.chain_id)
        if tx.fee < self.params.min_fee:
            raise InvalidTransaction(f"fee {tx.fee} is below the minimum fee {self.params.min_fee}")
        if isinstance(tx.payload, Access) and tx.amount < self.params.licence_price:
            raise InvalidTransaction(
                f"access payment {tx.amount} is below the licence price {self.params.licence_price}"
            )

    def _check_nonce(
        self, tx: Transaction, account_nonce: int, pending: int, replaced: _Entry | None
    ) -> None:
        if tx.nonce < account_nonce:
            raise NonceTooLow(f"nonce {tx.nonce} already used (account nonce is {account_nonce})")
        window_end = account_nonce + self.policy.max_per_sender
        if tx.nonce >= window_end:
            raise NonceGap(
                f"nonce {tx.nonce} is too far ahead: the account nonce is {account_nonce} and "
                f"the pool holds nonces up to {window_end - 1} for one sender"
            )
        if replaced is None:
            if pending >= self.policy.max_per_sender:
                raise SenderLimitReached(
                    f"sender already has {pending} pending transactions "
                    f"(limit {self.policy.max_per_sender})"
                )
            return
        bump = self.policy.replacement_bump_percent
        if tx.fee <= replaced.tx.fee or tx.fee * 100 < replaced.tx.fee * (100 + bump):
            raise FeeTooLowToReplace(
                f"fee {tx.fee} does not replace pending nonce {tx.nonce} with fee "
                f"{replaced.tx.fee}: at least {bump}% more is required"
            )

    def _check_balance(self, tx: Transaction, account: Account, queue: dict[int, _Entry]) -> None:
        """The sender's lower-nonce pending transactions plus this one must be affordable.

        Incoming pending transfers are not counted: they may never confirm.
        """
        spendable = account.balance + self._unsettled(account)
        committed = sum(
            e.tx.amount + e.tx.fee for n, e in queue.items() if account.nonce <= n < tx.nonce
        )
        cost = committed + tx.amount + tx.fee
        if cost > spendable:
            raise InsufficientFunds(
                f"amount plus fee {tx.amount + tx.fee}, with {committed} already pending at "
                f"lower nonces, exceeds the balance {spendable} of the sender"
            )

    def _find_victim(self, tx: Transaction, sender: bytes) -> _Entry | None:
        """The tail to evict for ``tx`` when the pool is full; raise if ``tx`` pays too little."""
        if len(self._entries) < self.policy.max_transactions:
            return None
        victim = self._cheapest_tail()
        if victim is None:  # max_transactions == 0
            raise MempoolFull("the mempool accepts no transactions")
        if tx.fee <= victim.tx.fee:
            raise MempoolFull(
                f"mempool is full ({len(self._entries)} transactions) and fee {tx.fee} does "
                f"not beat the cheapest pending fee {victim.tx.fee}"
            )
        if victim.sender == sender and victim.tx.nonce < tx.nonce:
            raise MempoolFull(
                f"mempool is full and the sender's own pending nonce {victim.tx.nonce} is the "
                f"cheapest; replace it with a higher fee instead"
            )
        return victim

    # --- block building and chain updates --------------------------------------------------

    def select(self, max_count: int, height: int) -> list[Transaction]:
        """Up to ``max_count`` transactions that apply in sequence on the current ledger.

        Each sender contributes a contiguous run from its account nonce; senders interleave by
        the fee of their next transaction. A sender's remaining transactions are skipped once
        one of them fails to apply (balance dropped, fee below a changed minimum, ...).
        """
        with self._lock:
            update = begin_update(self._accounts, self._current_ledger())
            heap: list[tuple[int, int, bytes, int]] = []  # (-fee, seq, sender, nonce)
            for sender, queue in self._senders.items():
                self._push_ready(heap, sender, queue, self._account(sender).nonce)
            chosen: list[Transaction] = []
            while heap and len(chosen) < max_count:
                _, _, sender, nonce = heapq.heappop(heap)
                tx = self._senders[sender][nonce].tx
                try:
                    # Every rule is checked before the update is written, so a failure
                    # leaves at most a royalty settlement behind, which later
                    # transactions would perform anyway.
                    apply_transaction(update, tx, height, self.params)
                except InvalidTransaction:
                    continue
                chosen.append(tx)
                self._push_ready(heap, sender, self._senders[sender], nonce + 1)
            return chosen

    def remove_confirmed(self, transactions: Iterable[Transaction]) -> list[bytes]:
        """Drop a connected block's transactions and every pending nonce it made stale.

        Returns the ids removed, for the node's persisted copy.
        """
        with self._lock:
            removed: list[bytes] = []
            senders: set[bytes] = set()
            for tx in transactions:
                sender = tx.sender_account
                queue = self._senders.get(sender)
                if queue is None:
                    continue
                senders.add(sender)
                entry = queue.get(tx.nonce)
                if entry is not None and entry.tx == tx:
                    self._remove(entry)
                    removed.append(entry.txid)
            for sender in senders:
                removed.extend(self._drop_stale(sender))
            self._compact_heaps()
            return removed

    def expire(self) -> list[bytes]:
        """Remove transactions older than ``expiry_ms``; return their ids.

        A sender's later nonces stay (queued) so that re-sending the expired one revives them;
        they expire in their own time.
        """
        with self._lock:
            cutoff = self._clock() - self.policy.expiry_ms
            removed: list[bytes] = []
            while self._ages and self._ages[0][0] < cutoff:
                _, seq, txid = heapq.heappop(self._ages)
                entry = self._entries.get(txid)
                if entry is not None and entry.seq == seq:
                    self._remove(entry)
                    removed.append(txid)
            self._compact_heaps()
            return removed

    # --- internals -------------------------------------------------------------------------

    def _account_nonce(self, sender: bytes) -> int:
        return self._account(sender).nonce

    def _account(self, sender: bytes) -> Account:
        return self._accounts.get_account(sender) or EMPTY_ACCOUNT

    def _current_ledger(self) -> LedgerGlobals:
        if self._ledger is not None:
            return self._ledger()
        found = getattr(self._accounts, "ledger", None)
        return found if isinstance(found, LedgerGlobals) else LedgerGlobals()

    def _unsettled(self, account: Account) -> int:
        """Royalties earned but not yet in the balance: spendable all the same."""
        if not account.shares:
            return 0
        return max(0, account.pending_royalties(self._current_ledger().royalty_per_share))

    def _push_ready(
        self,
        heap: list[tuple[int, int, bytes, int]],
        sender: bytes,
        queue: dict[int, _Entry],
        nonce: int,
    ) -> None:
        entry = queue.get(nonce)
        if entry is not None:
            heapq.heappush(heap, (-entry.tx.fee, entry.seq, sender, nonce))

    def _drop_stale(self, sender: bytes) -> list[bytes]:
        queue = self._senders.get(sender)
        if queue is None:
            return []
        account_nonce = self._account_nonce(sender)
        stale = [entry for nonce, entry in queue.items() if nonce < account_nonce]
        for entry in stale:
            self._remove(entry)
        return [entry.txid for entry in stale]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _insert(self, entry: _Entry) -> None:
        self._entries[entry.txid] = entry
        queue = self._senders.setdefault(entry.sender, {})
        queue[entry.tx.nonce] = entry
        self._total_fees += entry.tx.fee
        self._total_bytes += len(entry.encoded)
        heapq.heappush(self._ages, (entry.added_ms, entry.seq, entry.txid))
        if entry.tx.nonce == max(queue):
            heapq.heappush(self._tails, (entry.tx.fee, -entry.seq, entry.txid))
        self._compact_heaps()

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry.txid]
        queue = self._senders[entry.sender]
        del queue[entry.tx.nonce]
        self._total_fees -= entry.tx.fee
        self._total_bytes -= len(entry.encoded)
        if not queue:
            del self._senders[entry.sender]
            return
        tail = queue[max(queue)]
        if tail.tx.nonce < entry.tx.nonce:  # the sender has a new tail
            heapq.heappush(self._tails, (tail.tx.fee, -tail.seq, tail.txid))

    def _is_tail(self, entry: _Entry) -> bool:
        return entry.tx.nonce == max(self._senders[entry.sender])

    def _cheapest_tail(self) -> _Entry | None:
        while self._tails:
            _, neg_seq, txid = self._tails[0]
            entry = self._entries.get(txid)
            if entry is not None and entry.seq == -neg_seq and self._is_tail(entry):
                return entry
            heapq.heappop(self._tails)
        return None

    def _compact_heaps(self) -> None:
        """Rebuild the lazy heaps once stale records outnumber live ones."""
        limit = 2 * len(self._entries) + 1024
        if len(self._ages) > limit:
            self._ages = [(e.added_ms, e.seq, e.txid) for e in self._entries.values()]
            heapq.heapify(self._ages)
        if len(self._tails) > limit:
            self._tails = [
                (queue[tail].tx.fee, -queue[tail].seq, queue[tail].txid)
                for queue in self._senders.values()
                for tail in (max(queue),)
            ]
            heapq.heapify(self._tails)
