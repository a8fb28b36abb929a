"""Tests of the mempool: admission rules, ordering, limits, expiry, reorgs and persistence."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from derelayl_chain import mempool as mempool_module
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import (
    DuplicateTransaction,
    FeeTooLowToReplace,
    InsufficientFunds,
    InvalidSignature,
    InvalidTransaction,
    MempoolFull,
    NonceGap,
    NonceTooLow,
)
from derelayl_chain.mempool import Mempool, MempoolPolicy, SenderLimitReached
from derelayl_chain.state import (
    ROYALTY_SCALE,
    Account,
    DictAccounts,
    LedgerGlobals,
    LedgerParams,
    StateTransition,
    apply_block_ledger,
)
from derelayl_chain.transaction import Transaction, make_access, make_transfer

CHAIN_ID = 7
PARAMS = LedgerParams(min_fee=10, licence_price=1_000, licence_blocks=100)
RECIPIENT = b"\x42" * 20
MINER = b"\x24" * 20


class FakeClock:
    """A settable millisecond clock."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def ledger() -> DictAccounts:
    return DictAccounts()


def fund(ledger: DictAccounts, balance: int = 1_000_000, nonce: int = 0) -> KeyPair:
    key = KeyPair.generate()
    ledger.accounts[key.account] = Account(balance=balance, nonce=nonce)
    return key


def pay(key: KeyPair, nonce: int, fee: int = 10, amount: int = 100) -> Transaction:
    return make_transfer(key, CHAIN_ID, nonce, RECIPIENT, amount, fee)


def new_pool(ledger: DictAccounts, clock: FakeClock | None = None, **policy: int) -> Mempool:
    return Mempool(CHAIN_ID, PARAMS, ledger, MempoolPolicy(**policy), clock or FakeClock())


def confirm(
    ledger: DictAccounts, transactions: list[Transaction], height: int = 1
) -> StateTransition:
    """Apply a block's transactions to the ledger as the chain would; return the transition."""
    transition = apply_block_ledger(
        ledger, LedgerGlobals(), tuple(transactions), height, PARAMS, MINER, 0, 0
    )
    ledger.apply(transition)
    return transition


# --- admission -----------------------------------------------------------------------------


def test_add_admits_a_valid_transaction(ledger: DictAccounts) -> None:
    """A funded sender's transaction is admitted under its txid and can be read back."""
    pool = new_pool(ledger)
    tx = pay(fund(ledger), 0)
    result = pool.add(tx)
    assert result.txid == tx.txid
    assert result.replaced is None and result.evicted == ()
    assert tx.txid in pool and len(pool) == 1
    assert pool.get(tx.txid) == tx
    assert pool.get_bytes(tx.txid) == tx.encode()


def test_add_rejects_a_duplicate(ledger: DictAccounts) -> None:
    """The same transaction twice raises DuplicateTransaction."""
    pool = new_pool(ledger)
    tx = pay(fund(ledger), 0)
    pool.add(tx)
    with pytest.raises(DuplicateTransaction):
        pool.add(tx)


def test_add_rejects_another_chain_id(ledger: DictAccounts) -> None:
    """A transaction signed for another network is an InvalidTransaction."""
    pool = new_pool(ledger)
    tx = make_transfer(fund(ledger), CHAIN_ID + 1, 0, RECIPIENT, 100, 10)
    with pytest.raises(InvalidTransaction, match="chain"):
        pool.add(tx)


def test_add_rejects_a_fee_below_the_minimum(ledger: DictAccounts) -> None:
    """A fee under the genesis minimum is refused before any state is read."""
    pool = new_pool(ledger)
    with pytest.raises(InvalidTransaction, match="minimum fee"):
        pool.add(pay(fund(ledger), 0, fee=PARAMS.min_fee - 1))


def test_add_rejects_an_access_payment_below_the_licence_price(ledger: DictAccounts) -> None:
    """An access payment that could never apply is refused at admission."""
    pool = new_pool(ledger)
    tx = make_access(fund(ledger), CHAIN_ID, 0, PARAMS.licence_price - 1, 10)
    with pytest.raises(InvalidTransaction, match="licence price"):
        pool.add(tx)


def test_add_rejects_a_used_nonce(ledger: DictAccounts) -> None:
    """A nonce below the account nonce raises NonceTooLow."""
    pool = new_pool(ledger)
    with pytest.raises(NonceTooLow):
        pool.add(pay(fund(ledger, nonce=3), 2))


def test_add_rejects_a_nonce_beyond_the_window(ledger: DictAccounts) -> None:
    """A nonce at account nonce + max_per_sender or more raises NonceGap."""
    pool = new_pool(ledger, max_per_sender=4)
    key = fund(ledger, nonce=5)
    pool.add(pay(key, 8))
    with pytest.raises(NonceGap, match="too far ahead"):
        pool.add(pay(key, 9))


def test_add_rejects_a_bad_signature(ledger: DictAccounts) -> None:
    """A transaction altered after signing raises InvalidSignature and is not admitted."""
    pool = new_pool(ledger)
    forged = dataclasses.replace(pay(fund(ledger), 0), fee=50)
    with pytest.raises(InvalidSignature):
        pool.add(forged)
    assert len(pool) == 0


def test_add_rejects_spending_more_than_the_balance(ledger: DictAccounts) -> None:
    """Pending lower nonces count against the balance: the second spend raises."""
    pool = new_pool(ledger)
    key = fund(ledger, balance=300)
    pool.add(pay(key, 0, fee=10, amount=150))
    with pytest.raises(InsufficientFunds):
        pool.add(pay(key, 1, fee=10, amount=150))


def test_add_counts_unsettled_royalties_as_spendable(ledger: DictAccounts) -> None:
    """Royalties earned but not yet settled into the balance can pay for a transaction."""
    key = KeyPair.generate()
    ledger.accounts[key.account] = Account(balance=0, shares=1)
    globals_ = LedgerGlobals(total_shares=1, royalty_per_share=500 * ROYALTY_SCALE)
    pool = Mempool(CHAIN_ID, PARAMS, ledger, ledger=lambda: globals_)
    pool.add(pay(key, 0, fee=10, amount=400))
    assert pool.select(10, 1) == pool.pending_for(key.account)
    assert len(pool.select(10, 1)) == 1


# --- replacement and limits ----------------------------------------------------------------


def test_replacement_with_a_fee_bump_replaces(ledger: DictAccounts) -> None:
    """A same-nonce transaction paying at least the bump more takes the old one's place."""
    pool = new_pool(ledger, replacement_bump_percent=10)
    key = fund(ledger)
    old = pool.add(pay(key, 0, fee=100)).txid
    result = pool.add(pay(key, 0, fee=110))
    assert result.replaced == old
    assert old not in pool and result.txid in pool and len(pool) == 1


def test_replacement_without_the_bump_is_refused(ledger: DictAccounts) -> None:
    """A same-nonce transaction paying less than the bump raises FeeTooLowToReplace."""
    pool = new_pool(ledger, replacement_bump_percent=10)
    key = fund(ledger)
    old = pool.add(pay(key, 0, fee=100)).txid
    with pytest.raises(FeeTooLowToReplace):
        pool.add(pay(key, 0, fee=109))
    assert old in pool


def test_replacement_needs_a_strictly_higher_fee(ledger: DictAccounts) -> None:
    """With a zero bump an equal fee still cannot replace (different amount, same fee)."""
    pool = new_pool(ledger, replacement_bump_percent=0)
    key = fund(ledger)
    pool.add(pay(key, 0, fee=100, amount=1))
    with pytest.raises(FeeTooLowToReplace):
        pool.add(pay(key, 0, fee=100, amount=2))


def test_sender_limit_refuses_another_transaction(ledger: DictAccounts) -> None:
    """A sender holding max_per_sender transactions cannot add a new nonce."""
    pool = new_pool(ledger, max_per_sender=2)
    key = fund(ledger)
    pool.add(pay(key, 0))
    pool.add(pay(key, 1))
    # Nonce 0 was confirmed elsewhere but remove_confirmed has not run yet.
    ledger.accounts[key.account] = Account(balance=1_000_000, nonce=1)
    with pytest.raises(SenderLimitReached):
        pool.add(pay(key, 2))


def test_full_pool_evicts_the_cheapest_transaction(ledger: DictAccounts) -> None:
    """When full, a better-paying transaction evicts the cheapest pending one."""
    pool = new_pool(ledger, max_transactions=2)
    cheap = pool.add(pay(fund(ledger), 0, fee=10)).txid
    pool.add(pay(fund(ledger), 0, fee=30))
    result = pool.add(pay(fund(ledger), 0, fee=20))
    assert result.evicted == (cheap,)
    assert cheap not in pool and len(pool) == 2


def test_full_pool_refuses_a_transaction_that_pays_least(ledger: DictAccounts) -> None:
    """When full, a transaction not paying more than the cheapest raises MempoolFull."""
    pool = new_pool(ledger, max_transactions=2)
    pool.add(pay(fund(ledger), 0, fee=20))
    pool.add(pay(fund(ledger), 0, fee=30))
    with pytest.raises(MempoolFull, match="full"):
        pool.add(pay(fund(ledger), 0, fee=20))
    assert len(pool) == 2


def test_eviction_never_leaves_a_nonce_gap(ledger: DictAccounts) -> None:
    """Eviction takes a sender's highest nonce, even if a lower nonce pays less."""
    pool = new_pool(ledger, max_transactions=3)
    a = fund(ledger)
    pool.add(pay(a, 0, fee=12))
    pool.add(pay(a, 1, fee=40))
    b_tx = pool.add(pay(fund(ledger), 0, fee=20)).txid
    result = pool.add(pay(fund(ledger), 0, fee=30))
    assert result.evicted == (b_tx,)
    assert [tx.nonce for tx in pool.pending_for(a.account)] == [0, 1]


# --- selection -----------------------------------------------------------------------------


def test_select_keeps_each_sender_in_nonce_order(ledger: DictAccounts) -> None:
    """Later nonces come after earlier ones even when they pay more and arrived first."""
    pool = new_pool(ledger)
    key = fund(ledger)
    for nonce, fee in ((2, 90), (1, 50), (0, 10)):
        pool.add(pay(key, nonce, fee=fee))
    assert [tx.nonce for tx in pool.select(10, 1)] == [0, 1, 2]


def test_select_prefers_higher_fees_across_senders(ledger: DictAccounts) -> None:
    """Between senders, the transaction paying the higher fee comes first."""
    pool = new_pool(ledger)
    low, high, mid = fund(ledger), fund(ledger), fund(ledger)
    pool.add(pay(low, 0, fee=10))
    pool.add(pay(high, 0, fee=90))
    pool.add(pay(mid, 0, fee=50))
    assert [tx.fee for tx in pool.select(10, 1)] == [90, 50, 10]


def test_select_respects_max_count(ledger: DictAccounts) -> None:
    """No more than max_count transactions are returned, the best-paying ones."""
    pool = new_pool(ledger)
    for fee in (10, 20, 30, 40):
        pool.add(pay(fund(ledger), 0, fee=fee))
    assert [tx.fee for tx in pool.select(2, 1)] == [40, 30]


def test_queued_transaction_waits_for_the_missing_nonce(ledger: DictAccounts) -> None:
    """A nonce past a gap is admitted but only selected once the gap is filled."""
    pool = new_pool(ledger)
    key = fund(ledger)
    pool.add(pay(key, 1))
    assert pool.select(10, 1) == []
    pool.add(pay(key, 0))
    assert [tx.nonce for tx in pool.select(10, 1)] == [0, 1]


def test_select_skips_a_sender_whose_balance_dropped(ledger: DictAccounts) -> None:
    """A transaction that no longer applies is skipped with the sender's later nonces."""
    pool = new_pool(ledger)
    poor, rich = fund(ledger, balance=1_000), fund(ledger)
    pool.add(pay(poor, 0, fee=50, amount=500))
    pool.add(pay(poor, 1, fee=50, amount=100))
    rich_tx = pool.add(pay(rich, 0, fee=10)).txid
    ledger.accounts[poor.account] = Account(balance=100)
    assert [tx.txid for tx in pool.select(10, 1)] == [rich_tx]


def test_selected_transactions_apply_as_a_block(ledger: DictAccounts) -> None:
    """The selection applies on the ledger in its order, as a block would be checked."""
    pool = new_pool(ledger)
    keys = [fund(ledger, balance=400) for _ in range(3)]
    for i, key in enumerate(keys):
        for nonce in range(3):
            pool.add(pay(key, nonce, fee=10 + i * 7 + nonce, amount=100))
    chosen = pool.select(100, 1)
    assert len(chosen) == 9
    confirm(ledger, chosen)  # raises if any transaction fails in this order


# --- chain updates, expiry, persistence ----------------------------------------------------


def test_remove_confirmed_drops_included_and_stale(ledger: DictAccounts) -> None:
    """A connected block removes its transactions and pending rivals of the same nonces."""
    pool = new_pool(ledger)
    key, other = fund(ledger), fund(ledger)
    pending = pool.add(pay(key, 0, fee=10)).txid
    later = pool.add(pay(key, 1, fee=10)).txid
    included = pay(other, 0)
    pool.add(included)
    rival = pay(key, 0, fee=99)  # the same nonce, confirmed through another node
    confirm(ledger, [rival, included])
    removed = pool.remove_confirmed([rival, included])
    assert set(removed) == {pending, included.txid}
    assert [tx.txid for tx in pool.pending_for(key.account)] == [later]
    assert len(pool) == 1


def test_expire_removes_only_old_transactions(ledger: DictAccounts) -> None:
    """Transactions older than expiry_ms are removed; younger ones stay."""
    clock = FakeClock()
    pool = new_pool(ledger, clock, expiry_ms=1_000)
    old = pool.add(pay(fund(ledger), 0)).txid
    clock.now += 600
    young = pool.add(pay(fund(ledger), 0)).txid
    clock.now += 500
    assert pool.expire() == [old]
    assert old not in pool and young in pool


def test_readmit_returns_transactions_after_a_reorg(ledger: DictAccounts) -> None:
    """Transactions of a disconnected block come back once the ledger is reverted."""
    pool = new_pool(ledger)
    key = fund(ledger)
    txs = [pay(key, 0), pay(key, 1)]
    for tx in txs:
        pool.add(tx)
    transition = confirm(ledger, txs)
    pool.remove_confirmed(txs)
    assert len(pool) == 0
    ledger.revert(transition)
    assert pool.readmit(txs) == [tx.txid for tx in txs]
    assert pool.select(10, 1) == txs


def test_readmit_skips_transactions_no_longer_valid(ledger: DictAccounts) -> None:
    """A returned transaction already confirmed on the new branch is silently left out."""
    pool = new_pool(ledger)
    key = fund(ledger)
    confirmed, returned = pay(key, 0), pay(key, 1)
    confirm(ledger, [confirmed])
    assert pool.readmit([confirmed, returned]) == [returned.txid]


def test_snapshot_and_restore_round_trip(ledger: DictAccounts) -> None:
    """A new pool restored from a snapshot holds the same transactions."""
    pool = new_pool(ledger)
    key = fund(ledger)
    for nonce in (2, 0, 1):
        pool.add(pay(key, nonce))
    pool.add(pay(fund(ledger), 0))
    copy = new_pool(ledger)
    assert copy.restore(pool.snapshot()) == 4
    assert copy.snapshot() == pool.snapshot()
    assert copy.summary() == pool.summary()


def test_restore_skips_undecodable_and_invalid_entries(ledger: DictAccounts) -> None:
    """Garbage bytes and now-invalid transactions are dropped, not raised."""
    key = fund(ledger, nonce=1)
    good, stale = pay(key, 1), pay(key, 0)
    pool = new_pool(ledger)
    assert pool.restore([b"\xff\x00", stale.encode(), good.encode()]) == 1
    assert good.txid in pool


def test_next_nonce_counts_contiguous_pending(ledger: DictAccounts) -> None:
    """next_nonce is the account nonce plus the contiguous pending run, ignoring queued ones."""
    pool = new_pool(ledger)
    key = fund(ledger, nonce=4)
    assert pool.next_nonce(key.account) == 4
    pool.add(pay(key, 4))
    pool.add(pay(key, 5))
    pool.add(pay(key, 7))
    assert pool.next_nonce(key.account) == 6


def test_summary_totals_count_senders_fees_and_bytes(ledger: DictAccounts) -> None:
    """summary() adds up the pending transactions."""
    pool = new_pool(ledger)
    key = fund(ledger)
    txs = [pay(key, 0, fee=11), pay(key, 1, fee=12), pay(fund(ledger), 0, fee=13)]
    for tx in txs:
        pool.add(tx)
    assert pool.summary() == {
        "count": 3,
        "senders": 2,
        "total_fees": 36,
        "bytes": sum(len(tx.encode()) for tx in txs),
    }


def test_mempool_module_does_no_io() -> None:
    """The pool stays a pure in-memory structure: no asyncio, aiohttp or plyvel imports."""
    tree = ast.parse(Path(mempool_module.__file__).read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert not imported & {"asyncio", "aiohttp", "plyvel"}
