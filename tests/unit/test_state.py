"""Tests for the ledger: accounts, fees, nonces, licences and royalties (derelayl_chain/state.py).

Transactions here are real signed transactions; the ledger functions are called exactly as the
chain calls them, over the in-memory DictAccounts table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derelayl_chain.commitment import LtHashAccumulator
from derelayl_chain.crypto import KeyPair
from derelayl_chain.encoding import encode
from derelayl_chain.exceptions import (
    DecodeError,
    InsufficientFunds,
    InvalidSignature,
    InvalidTransaction,
    NonceGap,
    NonceTooLow,
)
from derelayl_chain.state import (
    EMPTY_ACCOUNT,
    ROYALTY_SCALE,
    Account,
    DictAccounts,
    LedgerGlobals,
    LedgerParams,
    LedgerUpdate,
    StateTransition,
    apply_block_ledger,
    apply_rewards,
    apply_transaction,
    begin_update,
    decode_account,
    decode_globals,
    genesis_transition,
)
from derelayl_chain.transaction import (
    MAX_AMOUNT,
    Transaction,
    make_access,
    make_transfer,
    verify_transaction,
)

CHAIN = 7
DRL = 10**9
PARAMS = LedgerParams(min_fee=1000, licence_price=DRL, licence_blocks=1000)
FEE = 1000
ALLOCATION = 1000 * DRL
KEYS = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
ALICE, BOB, CAROL, DAVE = KEYS
PROPOSER = b"\xee" * 20
STRANGER = b"\x5a" * 20
"""An account with no key and no allocation."""


# --- helpers -----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """A DictAccounts table with its globals, advanced block by block like the chain does."""

    accounts: DictAccounts
    globals: LedgerGlobals
    height: int = 0
    transitions: list[StateTransition] = field(default_factory=list)

    def get(self, account: bytes) -> Account:
        return self.accounts.get_account(account) or EMPTY_ACCOUNT

    def block(
        self,
        txs: tuple[Transaction, ...] = (),
        reward_to: bytes = PROPOSER,
        emission: int = 0,
        new_shares: int = 0,
    ) -> StateTransition:
        """Apply one block of ``txs`` and rewards; commit it to the table."""
        self.height += 1
        transition = apply_block_ledger(
            self.accounts, self.globals, txs, self.height, PARAMS, reward_to, emission, new_shares
        )
        self.commit(transition)
        return transition

    def commit(self, transition: StateTransition) -> None:
        self.accounts.apply(transition)
        self.globals = transition.globals
        self.transitions.append(transition)

    def update(self) -> LedgerUpdate:
        return begin_update(self.accounts, self.globals)

    def pending(self, account: bytes) -> int:
        return self.get(account).pending_royalties(self.globals.royalty_per_share)


def new_ledger(allocations: dict[bytes, int] | None = None) -> Ledger:
    """A ledger at genesis with ALLOCATION for each key unless told otherwise."""
    if allocations is None:
        allocations = {key.account: ALLOCATION for key in KEYS}
    transition = genesis_transition(allocations)
    accounts = DictAccounts()
    accounts.apply(transition)
    return Ledger(accounts, transition.globals)


def lthash_of(accounts: DictAccounts) -> bytes:
    """The set hash of the table recomputed from scratch."""
    accumulator = LtHashAccumulator()
    for account, value in accounts.accounts.items():
        accumulator.add(account + value.encode())
    return accumulator.digest()


def nonce_of(ledger: Ledger, key: KeyPair) -> int:
    return ledger.get(key.account).nonce


def transfer(ledger: Ledger, key: KeyPair, to: bytes, amount: int, fee: int = FEE) -> Transaction:
    """A signed transfer with the sender's next nonce."""
    return make_transfer(key, CHAIN, nonce_of(ledger, key), to, amount, fee)


def access(ledger: Ledger, key: KeyPair, amount: int, fee: int = FEE) -> Transaction:
    """A signed access payment with the sender's next nonce."""
    return make_access(key, CHAIN, nonce_of(ledger, key), amount, fee)


def with_contributors(shares: dict[bytes, int]) -> Ledger:
    """A ledger where each account in ``shares`` earned that many contribution shares."""
    ledger = new_ledger()
    for account, count in shares.items():
        ledger.block(reward_to=account, new_shares=count)
    return ledger


def assert_supply_invariant(ledger: Ledger) -> None:
    """Balances + pool = supply, and the pool covers every unsettled royalty."""
    g = ledger.globals
    balances = sum(value.balance for value in ledger.accounts.accounts.values())
    unsettled = sum(ledger.pending(account) for account in ledger.accounts.accounts)
    assert balances + g.royalty_pool == g.supply
    assert g.royalty_pool - unsettled >= 0
    assert sum(value.shares for value in ledger.accounts.accounts.values()) == g.total_shares


# --- transfers and fees ------------------------------------------------------------------------


def test_transfer_moves_the_exact_amount_and_pays_the_fee_to_the_proposer() -> None:
    """Sender loses amount + fee and uses its nonce; recipient gains amount; proposer the fee."""
    ledger = new_ledger()
    transition = ledger.block((transfer(ledger, ALICE, BOB.account, 7 * DRL, fee=1500),))
    assert ledger.get(ALICE.account) == Account(balance=ALLOCATION - 7 * DRL - 1500, nonce=1)
    assert ledger.get(BOB.account).balance == ALLOCATION + 7 * DRL
    assert ledger.get(PROPOSER).balance == 1500
    assert transition.fees == 1500
    assert ledger.globals.supply == 4 * ALLOCATION
    assert [(e.account, e.kind, e.amount) for e in transition.events] == [(PROPOSER, "fees", 1500)]


def test_fees_are_in_flight_until_apply_rewards_pays_them() -> None:
    """apply_transaction collects fees on the update; only apply_rewards credits them."""
    ledger = new_ledger()
    update = ledger.update()
    apply_transaction(update, transfer(ledger, ALICE, BOB.account, DRL), 1, PARAMS)
    assert update.fees == FEE
    assert update.get(PROPOSER) == EMPTY_ACCOUNT
    apply_rewards(update, PROPOSER, 0, 0)
    assert update.get(PROPOSER).balance == FEE


def test_transfer_to_a_new_account_creates_it() -> None:
    """Paying an address that never held funds creates its account."""
    ledger = new_ledger()
    ledger.block((transfer(ledger, ALICE, STRANGER, 3 * DRL),))
    assert ledger.get(STRANGER) == Account(balance=3 * DRL)


def test_transfer_to_self_costs_only_the_fee() -> None:
    """Sending to oneself leaves the balance lower by the fee and advances the nonce."""
    ledger = new_ledger()
    ledger.block((transfer(ledger, ALICE, ALICE.account, 5 * DRL),))
    assert ledger.get(ALICE.account) == Account(balance=ALLOCATION - FEE, nonce=1)


def test_several_transactions_from_one_sender_in_one_block() -> None:
    """Consecutive nonces in one block apply in order."""
    ledger = new_ledger()
    txs = tuple(make_transfer(ALICE, CHAIN, n, BOB.account, DRL, FEE) for n in range(3))
    ledger.block(txs)
    assert ledger.get(ALICE.account) == Account(balance=ALLOCATION - 3 * (DRL + FEE), nonce=3)


def test_spending_the_whole_balance_is_allowed() -> None:
    """amount + fee equal to the balance is valid; the account keeps only its nonce."""
    ledger = new_ledger()
    ledger.block((transfer(ledger, ALICE, BOB.account, ALLOCATION - FEE),))
    assert ledger.get(ALICE.account) == Account(balance=0, nonce=1)


def test_emission_is_credited_and_added_to_the_supply() -> None:
    """A block's emission goes to reward_to and grows the supply by exactly that much."""
    ledger = new_ledger()
    transition = ledger.block(emission=50 * DRL)
    assert ledger.get(PROPOSER).balance == 50 * DRL
    assert ledger.globals.supply == 4 * ALLOCATION + 50 * DRL
    assert [(e.kind, e.amount) for e in transition.events] == [("emission", 50 * DRL)]


# --- transaction rules -------------------------------------------------------------------------


def test_replayed_transaction_is_nonce_too_low() -> None:
    """The same signed transaction in a later block is a replay."""
    ledger = new_ledger()
    tx = transfer(ledger, ALICE, BOB.account, DRL)
    ledger.block((tx,))
    with pytest.raises(NonceTooLow, match=r"nonce 0 already used \(account nonce is 1\)"):
        ledger.block((tx,))


def test_nonce_ahead_of_the_account_is_a_gap() -> None:
    """A nonce that skips one is refused."""
    ledger = new_ledger()
    tx = make_transfer(ALICE, CHAIN, 1, BOB.account, DRL, FEE)
    with pytest.raises(NonceGap, match="nonce 1 skips ahead of the account nonce 0"):
        ledger.block((tx,))


def test_overspend_is_insufficient_funds() -> None:
    """amount + fee one unit above the balance is refused with both figures."""
    ledger = new_ledger()
    tx = transfer(ledger, ALICE, BOB.account, ALLOCATION - FEE + 1)
    with pytest.raises(
        InsufficientFunds, match=f"{ALLOCATION + 1} exceeds the balance {ALLOCATION}"
    ):
        ledger.block((tx,))


def test_account_without_funds_cannot_pay_a_fee() -> None:
    """A sender with no account at all is refused as insufficient funds."""
    ledger = new_ledger({ALICE.account: ALLOCATION})
    with pytest.raises(InsufficientFunds):
        ledger.block((transfer(ledger, BOB, ALICE.account, 1),))


def test_fee_below_the_minimum_is_refused() -> None:
    """A fee under min_fee is refused, naming both."""
    ledger = new_ledger()
    tx = transfer(ledger, ALICE, BOB.account, DRL, fee=999)
    with pytest.raises(InvalidTransaction, match="fee 999 is below the minimum fee 1000"):
        ledger.block((tx,))


def test_access_below_the_licence_price_is_refused() -> None:
    """An access payment under licence_price buys nothing and is refused."""
    ledger = new_ledger()
    tx = access(ledger, ALICE, DRL - 1)
    with pytest.raises(InvalidTransaction, match=f"access payment {DRL - 1} is below"):
        ledger.block((tx,))


def test_block_error_names_the_transaction_and_keeps_its_type() -> None:
    """apply_block_ledger reports which transaction failed, as the same exception class."""
    ledger = new_ledger()
    good = transfer(ledger, ALICE, BOB.account, DRL)
    bad = make_transfer(BOB, CHAIN, 5, ALICE.account, DRL, FEE)
    with pytest.raises(NonceGap, match=f"transaction 1 \\({bad.txid.hex()[:16]}\\): nonce 5"):
        ledger.block((good, bad))


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda ledger: make_transfer(ALICE, CHAIN, 3, BOB.account, DRL, FEE),
        lambda ledger: transfer(ledger, ALICE, BOB.account, 2 * ALLOCATION),
        lambda ledger: transfer(ledger, ALICE, BOB.account, DRL, fee=1),
        lambda ledger: access(ledger, ALICE, DRL // 2),
    ],
    ids=["nonce gap", "overspend", "low fee", "cheap access"],
)
def test_a_refused_transaction_changes_nothing(make_bad: Callable[[Ledger], Transaction]) -> None:
    """After a refused transaction the update holds no change and the globals are untouched."""
    ledger = new_ledger()
    update = ledger.update()
    with pytest.raises(InvalidTransaction):
        apply_transaction(update, make_bad(ledger), 1, PARAMS)
    transition = update.finish()
    assert transition.changes == {}
    assert transition.globals == ledger.globals


def test_a_refused_block_leaves_the_table_untouched() -> None:
    """A block with one bad transaction produces no transition; the stored accounts stay."""
    ledger = new_ledger()
    before = dict(ledger.accounts.accounts)
    good = transfer(ledger, ALICE, BOB.account, DRL)
    with pytest.raises(InsufficientFunds):
        ledger.block((good, transfer(ledger, CAROL, BOB.account, 2 * ALLOCATION)))
    assert ledger.accounts.accounts == before


# --- licences ----------------------------------------------------------------------------------


def test_access_buys_licence_blocks_per_whole_price_paid() -> None:
    """2.5 x the price at height 1 buys 2 x licence_blocks from the current height."""
    ledger = new_ledger()
    ledger.block((access(ledger, ALICE, 5 * DRL // 2),))
    assert ledger.get(ALICE.account).licensed_until == 1 + 2 * PARAMS.licence_blocks


def test_access_payment_leaves_the_balance_and_enters_the_pool() -> None:
    """The payer loses amount + fee and the royalty pool grows by the amount."""
    ledger = new_ledger()
    ledger.block((access(ledger, ALICE, 3 * DRL),))
    assert ledger.get(ALICE.account).balance == ALLOCATION - 3 * DRL - FEE
    assert ledger.globals.royalty_pool == 3 * DRL
    assert_supply_invariant(ledger)


def test_access_extends_an_active_licence_from_its_end() -> None:
    """Paying again while licensed adds the new blocks to the current end, not to the height."""
    ledger = new_ledger()
    ledger.block((access(ledger, ALICE, DRL),))
    ledger.block((access(ledger, ALICE, DRL),))
    assert ledger.get(ALICE.account).licensed_until == 1 + 2 * PARAMS.licence_blocks


def test_access_after_expiry_starts_from_the_current_height() -> None:
    """An expired licence is renewed from the block height, not from its old end."""
    ledger = new_ledger()
    update = ledger.update()
    apply_transaction(update, access(ledger, ALICE, DRL), 5000, PARAMS)
    ledger.commit(update.finish())
    update = ledger.update()
    apply_transaction(update, access(ledger, ALICE, DRL), 7000, PARAMS)
    assert update.get(ALICE.account).licensed_until == 7000 + PARAMS.licence_blocks


# --- royalties ---------------------------------------------------------------------------------


def test_royalties_are_shared_pro_rata_to_contribution_shares() -> None:
    """Contributors with shares 1:3 earn 1:3 of an access payment."""
    ledger = with_contributors({BOB.account: 1000, CAROL.account: 3000})
    ledger.block((access(ledger, DAVE, 8 * DRL),))
    assert ledger.pending(BOB.account) == 2 * DRL
    assert ledger.pending(CAROL.account) == 6 * DRL
    assert_supply_invariant(ledger)


def test_uneven_royalties_round_down_and_the_remainder_stays_in_the_pool() -> None:
    """A payment that does not divide evenly pays each share its floor, never more in total."""
    ledger = with_contributors({BOB.account: 1, CAROL.account: 3})
    amount = DRL + 7
    ledger.block((access(ledger, DAVE, amount),))
    bob, carol = ledger.pending(BOB.account), ledger.pending(CAROL.account)
    assert abs(bob - amount // 4) <= 1
    assert abs(carol - 3 * amount // 4) <= 1
    assert bob + carol <= amount
    assert ledger.globals.royalty_pool - (bob + carol) in (0, 1, 2)


def test_royalties_are_settled_when_the_account_is_touched() -> None:
    """Receiving a transfer moves a contributor's royalties into its balance."""
    ledger = with_contributors({BOB.account: 1000})
    ledger.block((access(ledger, DAVE, 4 * DRL),))
    pool_before = ledger.globals.royalty_pool
    before = ledger.get(BOB.account).balance
    transition = ledger.block((transfer(ledger, ALICE, BOB.account, DRL),))
    assert ledger.get(BOB.account).balance == before + 4 * DRL + DRL
    assert ledger.pending(BOB.account) == 0
    assert ledger.globals.royalty_pool == pool_before - 4 * DRL
    assert (BOB.account, "royalty", 4 * DRL) in [
        (e.account, e.kind, e.amount) for e in transition.events
    ]


def test_unsettled_royalties_are_spendable() -> None:
    """A sender's royalties are settled before its balance is checked."""
    contributor = KeyPair.from_seed(b"\x77" * 32)
    ledger = with_contributors({contributor.account: 10})
    ledger.block((access(ledger, DAVE, 10 * DRL),))
    assert ledger.get(contributor.account).balance == 0
    ledger.block((transfer(ledger, contributor, BOB.account, 10 * DRL - FEE),))
    assert ledger.get(contributor.account).balance == 0
    assert ledger.get(contributor.account).nonce == 1
    assert ledger.pending(contributor.account) == 0
    assert_supply_invariant(ledger)


def test_pending_royalties_formula() -> None:
    """Unsettled royalties are floor((shares * per_share - debt) / scale)."""
    account = Account(shares=3, royalty_debt=ROYALTY_SCALE)
    assert account.pending_royalties(ROYALTY_SCALE) == 2
    assert account.pending_royalties(ROYALTY_SCALE + ROYALTY_SCALE // 2) == 3
    assert EMPTY_ACCOUNT.pending_royalties(10**30) == 0


def test_access_touches_only_the_payer_however_many_contributors() -> None:
    """An access payment raises the per-share accumulator and changes only the payer's account."""
    contributors = {bytes([n]) * 20: n for n in range(1, 40)}
    ledger = with_contributors(contributors)
    update = ledger.update()
    apply_transaction(update, access(ledger, DAVE, 5 * DRL), ledger.height + 1, PARAMS)
    transition = update.finish()
    assert set(transition.changes) == {DAVE.account}
    assert transition.globals.royalty_per_share > ledger.globals.royalty_per_share
    assert transition.globals.royalty_pool == ledger.globals.royalty_pool + 5 * DRL


def test_payment_with_no_shares_is_carried_to_the_next_distribution() -> None:
    """Without contributors a payment waits in the carry; the next payment spreads both."""
    ledger = new_ledger()
    ledger.block((access(ledger, DAVE, 3 * DRL),))
    assert ledger.globals.royalty_per_share == 0
    assert ledger.globals.royalty_carry == 3 * DRL * ROYALTY_SCALE
    ledger.block(reward_to=BOB.account, new_shares=500)
    assert ledger.pending(BOB.account) == 0
    ledger.block((access(ledger, DAVE, 2 * DRL),))
    assert ledger.pending(BOB.account) == 5 * DRL
    assert_supply_invariant(ledger)


def test_new_shares_do_not_earn_earlier_royalties() -> None:
    """A contributor joining after a payment gets nothing from it."""
    ledger = with_contributors({BOB.account: 100})
    ledger.block((access(ledger, DAVE, 4 * DRL),))
    ledger.block(reward_to=CAROL.account, new_shares=100)
    assert ledger.pending(CAROL.account) == 0
    assert ledger.pending(BOB.account) == 4 * DRL
    ledger.block((access(ledger, DAVE, 2 * DRL),))
    assert ledger.pending(CAROL.account) == DRL
    assert ledger.pending(BOB.account) == 5 * DRL


def test_payer_with_shares_earns_from_its_own_payment() -> None:
    """The only contributor paying for access gets its payment back as royalties."""
    ledger = with_contributors({DAVE.account: 10})
    ledger.block((access(ledger, DAVE, 2 * DRL),))
    assert ledger.pending(DAVE.account) == 2 * DRL
    assert_supply_invariant(ledger)


# --- state commitment --------------------------------------------------------------------------


def test_genesis_sets_supply_accounts_and_set_hash() -> None:
    """Genesis credits each allocation, sets the supply to their sum and hashes the accounts."""
    ledger = new_ledger({ALICE.account: 5, BOB.account: 7})
    assert ledger.globals.supply == 12
    assert ledger.accounts.accounts == {ALICE.account: Account(5), BOB.account: Account(7)}
    assert ledger.globals.accounts_lthash == lthash_of(ledger.accounts)


def test_set_hash_follows_the_table_block_after_block() -> None:
    """After blocks of transfers, access and rewards, the stored set hash equals a recomputation."""
    ledger = with_contributors({BOB.account: 10})
    ledger.block((transfer(ledger, ALICE, STRANGER, DRL), access(ledger, CAROL, DRL)), emission=DRL)
    assert ledger.globals.accounts_lthash == lthash_of(ledger.accounts)
    ledger.block((transfer(ledger, BOB, CAROL.account, DRL),), reward_to=DAVE.account)
    assert ledger.globals.accounts_lthash == lthash_of(ledger.accounts)


@pytest.mark.parametrize("name", [f.name for f in fields(Account)])
def test_state_root_changes_with_any_account_field(name: str) -> None:
    """Changing any one field of one account changes the state root."""
    ledger = new_ledger()
    update = ledger.update()
    current = update.get(ALICE.account)
    update.put(ALICE.account, replace(current, **{name: getattr(current, name) + 1}))
    assert update.finish().globals.state_root != ledger.globals.state_root


@pytest.mark.parametrize("name", [f.name for f in fields(LedgerGlobals)])
def test_state_root_changes_with_any_global_value(name: str) -> None:
    """The root commits to the supply, the royalty accumulators and the set hash."""
    base = new_ledger().globals
    value = getattr(base, name)
    new_value = bytes([value[0] ^ 1]) + value[1:] if isinstance(value, bytes) else value + 1
    changed = replace(base, **{name: new_value})
    assert changed.state_root != base.state_root


def test_state_root_does_not_depend_on_the_order_of_application() -> None:
    """The same final accounts reached in a different order give the same root."""
    first, second = new_ledger(), new_ledger()
    a_to_b = transfer(first, ALICE, BOB.account, DRL)
    c_to_d = transfer(first, CAROL, DAVE.account, 2 * DRL)
    first.block((a_to_b,))
    first.block((c_to_d,))
    second.block((c_to_d, a_to_b))
    second.block()
    assert first.accounts.accounts == second.accounts.accounts
    assert first.globals.state_root == second.globals.state_root


def test_set_hash_does_not_depend_on_the_order_accounts_are_written() -> None:
    """Writing the same changes into an update in two orders gives the same set hash."""
    ledger = new_ledger()
    changes = {key.account: Account(balance=index) for index, key in enumerate(KEYS, start=1)}
    roots = []
    for order in (list(changes), list(reversed(changes))):
        update = ledger.update()
        for account in order:
            update.put(account, changes[account])
        roots.append(update.finish().globals.accounts_lthash)
    assert roots[0] == roots[1]


def test_unchanged_accounts_are_not_recorded() -> None:
    """Reading an account, or writing back its own value, is not a change."""
    ledger = new_ledger()
    update = ledger.update()
    update.get(ALICE.account)
    update.put(BOB.account, update.get(BOB.account))
    transition = update.finish()
    assert transition.changes == {} and transition.undo == {}
    assert transition.globals == ledger.globals


def test_revert_restores_accounts_globals_and_root() -> None:
    """Undoing a block restores the table exactly, deleting accounts it created."""
    ledger = with_contributors({BOB.account: 10})
    before_accounts = dict(ledger.accounts.accounts)
    before_root = ledger.globals.state_root
    transition = ledger.block(
        (transfer(ledger, ALICE, STRANGER, DRL), access(ledger, CAROL, 2 * DRL)),
        reward_to=DAVE.account,
        emission=DRL,
        new_shares=5,
    )
    assert STRANGER in ledger.accounts.accounts
    ledger.accounts.revert(transition)
    assert ledger.accounts.accounts == before_accounts
    assert transition.previous_globals.state_root == before_root
    assert lthash_of(ledger.accounts) == transition.previous_globals.accounts_lthash


# --- encodings ---------------------------------------------------------------------------------


def test_account_round_trips_through_its_encoding() -> None:
    """An account with large values decodes back to itself."""
    account = Account(2**64 - 1, 5, 12345, 2**300, 99)
    assert decode_account(account.encode()) == account
    assert account.encode() == encode(account.to_item())


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ([b"", b"", b"", b""], "account must have 5 fields, got 4"),
        ([b"\x00\x01", b"", b"", b"", b""], "balance has a leading zero"),
        ([b"", b"", b"", b"\x01" * 49, b""], "royalty debt is 49 bytes"),
        ([b"", [], b"", b"", b""], "nonce must be an integer"),
    ],
)
def test_malformed_account_encodings_are_rejected(item: list[bytes], message: str) -> None:
    """Stored accounts decode strictly, naming the bad field."""
    with pytest.raises(DecodeError, match=message):
        decode_account(encode(item))  # type: ignore[arg-type]


def test_globals_round_trip_and_reject_a_short_set_hash() -> None:
    """Ledger globals decode back to themselves; a truncated set hash is refused."""
    ledger = with_contributors({BOB.account: 3})
    assert decode_globals(ledger.globals.encode()) == ledger.globals
    broken = replace(ledger.globals, accounts_lthash=b"\x00" * 10)
    with pytest.raises(DecodeError, match="accounts set hash must be 2048 bytes"):
        decode_globals(broken.encode())


# --- properties --------------------------------------------------------------------------------

PLAYERS = [*KEYS, KeyPair.from_seed(b"\x05" * 32)]
NOBODY = b"\x99" * 20
"""A recipient nobody holds a key for."""


@dataclass(frozen=True)
class TxStep:
    """A transaction to try: valid or not depending on the drawn values."""

    kind: str
    sender: int
    recipient: int
    amount: int
    fee: int
    nonce_shift: int
    corrupt_signature: bool


@dataclass(frozen=True)
class BlockStep:
    """The end of a block: rewards, then a commit."""

    reward_to: int
    emission: int
    new_shares: int


fees = st.sampled_from([FEE, FEE, FEE, 5000, FEE - 1])
nonce_shifts = st.sampled_from([0, 0, 0, 0, 0, -1, 1])
corruptions = st.integers(0, 9).map(lambda n: n == 0)
players = st.integers(0, len(PLAYERS) - 1)
transfer_amounts = st.one_of(
    st.integers(1, 20 * DRL),
    st.integers(1, 20 * DRL),
    st.integers(ALLOCATION // 2, 3 * ALLOCATION // 2),
    st.sampled_from([0, MAX_AMOUNT + 1]),
)
access_amounts = st.one_of(
    st.integers(DRL, 20 * DRL), st.integers(DRL, 20 * DRL), st.integers(1, DRL - 1)
)
tx_steps = st.one_of(
    st.builds(
        TxStep,
        kind=st.just("transfer"),
        sender=players,
        recipient=st.integers(0, len(PLAYERS)),
        amount=transfer_amounts,
        fee=fees,
        nonce_shift=nonce_shifts,
        corrupt_signature=corruptions,
    ),
    st.builds(
        TxStep,
        kind=st.just("access"),
        sender=players,
        recipient=st.just(0),
        amount=access_amounts,
        fee=fees,
        nonce_shift=nonce_shifts,
        corrupt_signature=corruptions,
    ),
)
block_steps = st.builds(
    BlockStep,
    reward_to=st.integers(0, len(PLAYERS)),
    emission=st.integers(0, 50 * DRL),
    new_shares=st.integers(0, 10**6),
)
histories = st.lists(st.one_of(tx_steps, tx_steps, block_steps), min_size=4, max_size=30)
"""Random histories: valid and invalid transfers and accesses, and block boundaries."""


def account_for(index: int) -> bytes:
    """A player's account, or (one past the last player) an account nobody holds a key for."""
    return PLAYERS[index].account if index < len(PLAYERS) else NOBODY


def build_step_tx(update: LedgerUpdate, step: TxStep) -> Transaction:
    """The signed transaction a step describes, against the update's current nonces."""
    key = PLAYERS[step.sender]
    nonce = max(0, update.get(key.account).nonce + step.nonce_shift)
    if step.kind == "transfer":
        to = account_for(step.recipient)
        tx = make_transfer(key, CHAIN, nonce, to, step.amount, step.fee)
    else:
        tx = make_access(key, CHAIN, nonce, step.amount, step.fee)
    if step.corrupt_signature:
        tx = replace(tx, signature=bytes([tx.signature[0] ^ 1]) + tx.signature[1:])
    return tx


def try_transaction(ledger: Ledger, update: LedgerUpdate, step: TxStep) -> None:
    """Verify and apply a step's transaction; a refused one must leave the sender as it was."""
    tx = build_step_tx(update, step)
    per_share = update.globals.royalty_per_share
    before = update.get(tx.sender_account)
    try:
        verify_transaction(tx, CHAIN)
        apply_transaction(update, tx, ledger.height + 1, PARAMS)
    except (InvalidTransaction, InvalidSignature):
        after = update.get(tx.sender_account)
        assert after.nonce == before.nonce
        spendable = before.balance + before.pending_royalties(per_share)
        assert (
            after.balance + after.pending_royalties(update.globals.royalty_per_share) == spendable
        )


def run_history(history: list[TxStep | BlockStep], check_each_tx: bool = True) -> Ledger:
    """Play a random history, checking after every step that nothing is created or lost."""
    ledger = new_ledger({key.account: ALLOCATION for key in PLAYERS})
    allocations, emitted = ledger.globals.supply, 0
    update = ledger.update()
    for step in [*history, BlockStep(0, 0, 0)]:
        if isinstance(step, TxStep):
            try_transaction(ledger, update, step)
            if check_each_tx:
                view = {**ledger.accounts.accounts, **update.current}
                in_flight = sum(value.balance for value in view.values()) + update.fees
                assert in_flight + update.globals.royalty_pool == update.globals.supply
            continue
        apply_rewards(update, account_for(step.reward_to), step.emission, step.new_shares)
        emitted += step.emission
        ledger.height += 1
        ledger.commit(update.finish())
        assert ledger.globals.supply == allocations + emitted
        assert ledger.globals.accounts_lthash == lthash_of(ledger.accounts)
        assert_supply_invariant(ledger)
        update = ledger.update()
    return ledger


@settings(max_examples=60, deadline=None)
@given(histories)
def test_random_histories_conserve_the_supply(history: list[TxStep | BlockStep]) -> None:
    """Balances + unsettled royalties + remainder = allocations + emission, after every step."""
    run_history(history)


@settings(max_examples=40, deadline=None)
@given(histories)
def test_undoing_blocks_restores_every_earlier_state_exactly(
    history: list[TxStep | BlockStep],
) -> None:
    """Reverting blocks newest first restores each earlier table, globals and state root."""
    played = run_history(history, check_each_tx=False)
    ledger = new_ledger({key.account: ALLOCATION for key in PLAYERS})
    snapshots = [(dict(ledger.accounts.accounts), ledger.globals)]
    for transition in played.transitions:
        ledger.commit(transition)
        snapshots.append((dict(ledger.accounts.accounts), ledger.globals))
    for transition in reversed(ledger.transitions):
        snapshots.pop()
        ledger.accounts.revert(transition)
        accounts, previous = snapshots[-1]
        assert ledger.accounts.accounts == accounts
        assert transition.previous_globals == previous
        assert lthash_of(ledger.accounts) == previous.accounts_lthash
        assert transition.previous_globals.state_root == previous.state_root
