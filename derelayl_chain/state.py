"""The ledger: accounts, the royalty pool, and the pure functions that change them.

Royalties use a reward-per-share accumulator: an ``access`` payment raises
``royalty_per_share`` once (O(1) however many contributors there are) and each account's share
is settled -- moved into its balance -- whenever the account is touched. All arithmetic is on
integers; the accumulator is scaled by :data:`ROYALTY_SCALE` and every rounding remainder stays
in the pool, so at all times::

    sum(balances) + royalty_pool == supply
    royalty_pool == sum(unsettled royalties) + rounding remainder,  remainder >= 0
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from derelayl_chain import encoding
from derelayl_chain.commitment import EMPTY_LTHASH, LTHASH_BYTES, LtHashAccumulator
from derelayl_chain.encoding import (
    Item,
    as_bytes,
    as_list,
    as_uint,
    encode,
    encode_uint,
    encode_uints,
)
from derelayl_chain.exceptions import (
    InsufficientFunds,
    InvalidTransaction,
    NonceGap,
    NonceTooLow,
)
from derelayl_chain.transaction import Access, Transaction, Transfer

ROYALTY_SCALE = 10**18
_BIG = 48  # bytes allowed for scaled accumulator values


@dataclass(frozen=True, slots=True)
class Account:
    """One account's ledger entry; an all-zero account is the same as no account."""

    balance: int = 0
    """Spendable base units (settled royalties included)."""
    nonce: int = 0
    """Number of transactions sent."""
    shares: int = 0
    """Contribution shares: the loss improvement (fixed point) this account was paid for."""
    royalty_debt: int = 0
    """Scaled royalties already accounted for: ``shares * royalty_per_share`` at last settle."""
    licensed_until: int = 0
    """Last height at which the account holds a model licence."""

    def is_empty(self) -> bool:
        return self == EMPTY_ACCOUNT

    def pending_royalties(self, royalty_per_share: int) -> int:
        """Royalties earned but not yet settled into the balance."""
        return (self.shares * royalty_per_share - self.royalty_debt) // ROYALTY_SCALE

    def credited(self, amount: int) -> Account:
        """A copy with ``amount`` added to the balance."""
        # Direct construction: dataclasses.replace costs twice as much on this hot path.
        return Account(
            self.balance + amount, self.nonce, self.shares, self.royalty_debt, self.licensed_until
        )

    def charged(self, cost: int) -> Account:
        """A copy that paid ``cost`` for a transaction and so used up its nonce."""
        return Account(
            self.balance - cost, self.nonce + 1, self.shares, self.royalty_debt, self.licensed_until
        )

    def to_item(self) -> list[Item]:
        return [
            encode_uint(self.balance),
            encode_uint(self.nonce),
            encode_uint(self.shares),
            encode_uint(self.royalty_debt),
            encode_uint(self.licensed_until),
        ]

    def encode(self) -> bytes:
        return encode_uints(
            (self.balance, self.nonce, self.shares, self.royalty_debt, self.licensed_until)
        )


EMPTY_ACCOUNT = Account()


def account_from_item(item: Item) -> Account:
    f = as_list(item, 5, "account")
    return Account(
        balance=as_uint(f[0], "balance"),
        nonce=as_uint(f[1], "nonce"),
        shares=as_uint(f[2], "shares"),
        royalty_debt=as_uint(f[3], "royalty debt", _BIG),
        licensed_until=as_uint(f[4], "licensed until"),
    )


def decode_account(data: bytes) -> Account:
    return account_from_item(encoding.decode(data, 256))


@dataclass(frozen=True, slots=True)
class LedgerGlobals:
    """Chain-wide ledger values; with the account set hash they make the state root."""

    supply: int = 0
    """Genesis allocations plus all emission so far."""
    total_shares: int = 0
    royalty_per_share: int = 0
    """Scaled royalties earned per share since genesis."""
    royalty_carry: int = 0
    """Scaled remainder of past payments not yet spread over the shares."""
    royalty_pool: int = 0
    """Base units paid in by ``access`` and not yet settled to accounts."""
    accounts_lthash: bytes = EMPTY_LTHASH
    """Set hash of all non-empty accounts (see :mod:`derelayl_chain.commitment`)."""

    def to_item(self) -> list[Item]:
        return [
            encode_uint(self.supply),
            encode_uint(self.total_shares),
            encode_uint(self.royalty_per_share),
            encode_uint(self.royalty_carry),
            encode_uint(self.royalty_pool),
            self.accounts_lthash,
        ]

    def encode(self) -> bytes:
        return encode(self.to_item())

    @property
    def state_root(self) -> bytes:
        """The commitment a header carries."""
        return encoding.hash_domain(b"drl-state", self.encode())


def decode_globals(data: bytes) -> LedgerGlobals:
    f = as_list(encoding.decode(data, LTHASH_BYTES + 512), 6, "ledger globals")
    return LedgerGlobals(
        supply=as_uint(f[0], "supply"),
        total_shares=as_uint(f[1], "total shares"),
        royalty_per_share=as_uint(f[2], "royalty per share", _BIG),
        royalty_carry=as_uint(f[3], "royalty carry", _BIG),
        royalty_pool=as_uint(f[4], "royalty pool"),
        accounts_lthash=as_bytes(f[5], LTHASH_BYTES, "accounts set hash"),
    )


@dataclass(frozen=True, slots=True)
class LedgerParams:
    """The genesis parameters the ledger rules need."""

    min_fee: int
    """Smallest fee a transaction may pay (base units)."""
    licence_price: int
    """Smallest ``access`` payment; each multiple buys :attr:`licence_blocks` blocks."""
    licence_blocks: int


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """A credit worth recording in an account's history."""

    account: bytes
    kind: str
    """``emission``, ``fees`` or ``royalty``."""
    amount: int


@dataclass(frozen=True, slots=True)
class StateTransition:
    """The result of applying a block: new values, and the old ones to undo it."""

    globals: LedgerGlobals
    previous_globals: LedgerGlobals
    changes: dict[bytes, Account]
    """New value of every touched account (empty accounts are deleted by the writer)."""
    undo: dict[bytes, Account]
    """Value of every touched account before the block (EMPTY_ACCOUNT if absent)."""
    events: tuple[LedgerEvent, ...]
    fees: int


class AccountReader(Protocol):
    def get_account(self, account: bytes) -> Account | None: ...


@dataclass(slots=True)
class LedgerUpdate:
    """Scratch space for applying one block's transactions and rewards in memory.

    Reads fall through to ``reader``; nothing is written anywhere until :meth:`finish` turns the
    scratch into an immutable :class:`StateTransition` that the chain manager commits.
    """

    reader: AccountReader
    globals: LedgerGlobals
    initial_globals: LedgerGlobals
    original: dict[bytes, Account] = field(default_factory=dict)
    current: dict[bytes, Account] = field(default_factory=dict)
    events: list[LedgerEvent] = field(default_factory=list)
    fees: int = 0

    def get(self, account: bytes) -> Account:
        found = self.current.get(account)
        if found is not None:
            return found
        stored = self.reader.get_account(account) or EMPTY_ACCOUNT
        self.original[account] = stored
        self.current[account] = stored
        return stored

    def put(self, account: bytes, value: Account) -> None:
        self.get(account)
        self.current[account] = value

    def settle(self, account: bytes) -> Account:
        """Move the account's unsettled royalties into its balance; return the account."""
        value = self.get(account)
        pending = value.pending_royalties(self.globals.royalty_per_share)
        if pending:
            value = replace(
                value,
                balance=value.balance + pending,
                royalty_debt=value.royalty_debt + pending * ROYALTY_SCALE,
            )
            self.current[account] = value
            self.globals = replace(self.globals, royalty_pool=self.globals.royalty_pool - pending)
            self.events.append(LedgerEvent(account, "royalty", pending))
        return value

    def finish(self) -> StateTransition:
        changes: dict[bytes, Account] = {}
        undo: dict[bytes, Account] = {}
        removed: list[bytes] = []
        added: list[bytes] = []
        for account, new in self.current.items():
            old = self.original[account]
            if new == old:
                continue
            if not old.is_empty():
                removed.append(account + old.encode())
            if not new.is_empty():
                added.append(account + new.encode())
            changes[account] = new
            undo[account] = old
        lthash = LtHashAccumulator(self.globals.accounts_lthash)
        lthash.remove_many(removed)
        lthash.add_many(added)
        return StateTransition(
            globals=replace(self.globals, accounts_lthash=lthash.digest()),
            previous_globals=self.initial_globals,
            changes=changes,
            undo=undo,
            events=tuple(self.events),
            fees=self.fees,
        )


def begin_update(reader: AccountReader, ledger: LedgerGlobals) -> LedgerUpdate:
    """A scratch update over ``reader`` starting from ``ledger``."""
    return LedgerUpdate(reader=reader, globals=ledger, initial_globals=ledger)


def apply_transaction(
    update: LedgerUpdate, tx: Transaction, height: int, params: LedgerParams
) -> None:
    """Apply one (already signature-checked) transaction; raise if it breaks a ledger rule.

    On error the update may hold partial changes; callers discard it (blocks) or apply each
    transaction to a fresh copy (mempool checks).
    """
    if tx.fee < params.min_fee:
        raise InvalidTransaction(f"fee {tx.fee} is below the minimum fee {params.min_fee}")
    sender_id = tx.sender_account
    sender = update.settle(sender_id)
    if tx.nonce < sender.nonce:
        raise NonceTooLow(f"nonce {tx.nonce} already used (account nonce is {sender.nonce})")
    if tx.nonce > sender.nonce:
        raise NonceGap(f"nonce {tx.nonce} skips ahead of the account nonce {sender.nonce}")
    cost = tx.amount + tx.fee
    if cost > sender.balance:
        raise InsufficientFunds(
            f"amount plus fee {cost} exceeds the balance {sender.balance} of the sender"
        )
    payload = tx.payload
    if isinstance(payload, Access) and payload.amount < params.licence_price:
        raise InvalidTransaction(
            f"access payment {payload.amount} is below the licence price {params.licence_price}"
        )
    sender = sender.charged(cost)
    update.put(sender_id, sender)
    update.fees += tx.fee
    if isinstance(payload, Transfer):
        recipient = update.settle(payload.to)
        update.put(payload.to, recipient.credited(payload.amount))
    else:
        _pay_royalties(update, payload.amount)
        blocks = params.licence_blocks * (payload.amount // params.licence_price)
        start = max(sender.licensed_until, height)
        update.put(sender_id, replace(sender, licensed_until=start + blocks))


def _pay_royalties(update: LedgerUpdate, amount: int) -> None:
    """Spread a payment over all shares in O(1) by raising the per-share accumulator."""
    g = update.globals
    scaled = amount * ROYALTY_SCALE + g.royalty_carry
    if g.total_shares == 0:
        update.globals = replace(g, royalty_carry=scaled, royalty_pool=g.royalty_pool + amount)
        return
    increment, carry = divmod(scaled, g.total_shares)
    update.globals = replace(
        g,
        royalty_per_share=g.royalty_per_share + increment,
        royalty_carry=carry,
        royalty_pool=g.royalty_pool + amount,
    )


def apply_rewards(update: LedgerUpdate, reward_to: bytes, emission: int, new_shares: int) -> None:
    """Pay the proposer's reward account its emission and the block's fees, grow its shares."""
    account = update.settle(reward_to)
    g = update.globals
    update.put(
        reward_to,
        replace(
            account,
            balance=account.balance + emission + update.fees,
            shares=account.shares + new_shares,
            royalty_debt=account.royalty_debt + new_shares * g.royalty_per_share,
        ),
    )
    update.globals = replace(
        g, supply=g.supply + emission, total_shares=g.total_shares + new_shares
    )
    if emission:
        update.events.append(LedgerEvent(reward_to, "emission", emission))
    if update.fees:
        update.events.append(LedgerEvent(reward_to, "fees", update.fees))


def apply_block_ledger(
    reader: AccountReader,
    ledger: LedgerGlobals,
    transactions: tuple[Transaction, ...],
    height: int,
    params: LedgerParams,
    reward_to: bytes,
    emission: int,
    new_shares: int,
) -> StateTransition:
    """Apply a block's transactions, then its rewards; return the transition."""
    update = begin_update(reader, ledger)
    for index, tx in enumerate(transactions):
        try:
            apply_transaction(update, tx, height, params)
        except InvalidTransaction as exc:
            raise type(exc)(f"transaction {index} ({tx.txid.hex()[:16]}): {exc}") from exc
    apply_rewards(update, reward_to, emission, new_shares)
    return update.finish()


def genesis_transition(allocations: dict[bytes, int]) -> StateTransition:
    """The ledger of a new chain: the allocations and nothing else."""
    update = begin_update(_EmptyReader(), LedgerGlobals())
    for account, amount in sorted(allocations.items()):
        current = update.get(account)
        update.put(account, replace(current, balance=current.balance + amount))
        update.globals = replace(update.globals, supply=update.globals.supply + amount)
    return update.finish()


class _EmptyReader:
    def get_account(self, account: bytes) -> Account | None:
        return None


class DictAccounts:
    """An in-memory account table: for tests, benchmarks and replays."""

    def __init__(self) -> None:
        self.accounts: dict[bytes, Account] = {}

    def get_account(self, account: bytes) -> Account | None:
        return self.accounts.get(account)

    def apply(self, transition: StateTransition) -> None:
        for account, value in transition.changes.items():
            if value.is_empty():
                self.accounts.pop(account, None)
            else:
                self.accounts[account] = value

    def revert(self, transition: StateTransition) -> None:
        for account, value in transition.undo.items():
            if value.is_empty():
                self.accounts.pop(account, None)
            else:
                self.accounts[account] = value
