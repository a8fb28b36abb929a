"""Fork choice and reorganisation: most work wins, state follows, finality and orphans hold.

Branches are built on separate in-memory chains that share genesis and a common prefix, then
submitted to a third chain. Two kinds of block make the work of a branch easy to control: a
*fast* block is trained and timestamped at the earliest moment its improvement allows (work up
to ``d + 1``), a *slow* block carries a zero delta timestamped ``T_decay`` after its parent
(work exactly 1). The clock sits far in the future so no block is refused as early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from derelayl_chain.block import Block
from derelayl_chain.chain import Chain
from derelayl_chain.chain_records import ImportResult
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import FinalityViolation, KnownInvalid
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, GenesisConfig
from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.weights import model_hash
from derelayl_chain.mempool import Mempool
from derelayl_chain.storage import schema
from derelayl_chain.storage.memory import MemoryStore
from derelayl_chain.transaction import Transaction, make_transfer
from tests.chainkit import (
    DERIVED_TABLES,
    Clock,
    extend,
    far_clock,
    fast_block,
    make_genesis,
    replay,
    shards,
    slow_block,
    snapshot,
)

DRL = BASE_UNITS_PER_DRL
FEE = 10_000

ALICE = KeyPair.from_seed(b"a" * 32)
BOB = KeyPair.from_seed(b"b" * 32)
CAROL = KeyPair.from_seed(b"c" * 32)
MINERS = [KeyPair.from_seed(bytes([0xA0 + i]) * 32) for i in range(3)]


# --- building blocks ---------------------------------------------------------------------------


def transfer(key: KeyPair, nonce: int, to: KeyPair, amount: int, chain_id: int) -> Transaction:
    return make_transfer(key, chain_id, nonce, to.account, amount, FEE)


def fresh_chain(genesis: GenesisConfig, clock: Clock, orphan_limit: int = 64) -> Chain:
    return Chain(MemoryStore(), genesis, clock=clock, orphan_limit=orphan_limit)


def submit_all(chain: Chain, blocks: Sequence[Block]) -> list[ImportResult]:
    return [chain.submit_block(block) for block in blocks]


def branch_work(chain: Chain, blocks: Sequence[Block]) -> int:
    """Work the blocks add on top of their first block's parent, as ``chain`` indexed them."""
    first_parent = chain.entry(blocks[0].header.parent)
    return chain.entry(blocks[-1].hash).work - first_parent.work


def assert_same_state(chain: Chain, reference: Chain) -> None:
    got, want = snapshot(chain), snapshot(reference)
    assert got.tip == want.tip
    assert got.state_root == want.state_root
    assert got.model == want.model
    for name in DERIVED_TABLES:
        assert got.tables[name] == want.tables[name], f"table {name} differs"


# --- the fork used by most tests ---------------------------------------------------------------


@dataclass(frozen=True)
class Fork:
    """A shared prefix, a long light branch A and a short heavy branch B."""

    genesis: GenesisConfig
    prefix: list[Block]
    a: list[Block]
    b: list[Block]
    a_txs: list[Transaction]
    b_txs: list[Transaction]
    a_builder: Chain
    b_builder: Chain


@pytest.fixture(scope="module")
def data() -> list[Dataset]:
    return shards(3)


@pytest.fixture(scope="module")
def fork(data: list[Dataset]) -> Fork:
    """Prefix of two trained blocks; A: three slow blocks with transfers; B: one fast, one slow.

    A moves Alice's and Bob's funds; B confirms only Alice's first transfer. Checkpoints every
    two blocks so both branches cross one.
    """
    genesis = make_genesis(
        {ALICE.account: 1_000 * DRL, BOB.account: 500 * DRL}, checkpoint_interval=2
    )
    clock = far_clock(genesis)
    x, y = fresh_chain(genesis, clock), fresh_chain(genesis, clock)
    prefix = [extend(x, fast_block(x, MINERS[0], data[0], seed=1))]
    prefix.append(extend(x, fast_block(x, MINERS[1], data[1], seed=2)))
    submit_all(y, prefix)
    cid = genesis.chain_id
    alice_0 = transfer(ALICE, 0, CAROL, 7 * DRL, cid)
    alice_1 = transfer(ALICE, 1, BOB, 3 * DRL, cid)
    bob_0 = transfer(BOB, 0, CAROL, 11 * DRL, cid)
    a = [extend(x, slow_block(x, MINERS[0], [alice_0]))]
    a.append(extend(x, slow_block(x, MINERS[1], [alice_1, bob_0])))
    a.append(extend(x, slow_block(x, MINERS[0])))
    b = [extend(y, fast_block(y, MINERS[2], data[2], seed=3, txs=[alice_0]))]
    b.append(extend(y, slow_block(y, MINERS[2])))
    return Fork(genesis, prefix, a, b, [alice_0, alice_1, bob_0], [alice_0], x, y)


def test_branches_differ_as_intended(fork: Fork) -> None:
    """Branch A is longer, branch B has more work: the setup the next tests rely on."""
    assert len(fork.a) > len(fork.b)
    assert branch_work(fork.a_builder, fork.a) == len(fork.a)
    assert branch_work(fork.b_builder, fork.b) > branch_work(fork.a_builder, fork.a)


def test_heavier_shorter_branch_wins(fork: Fork) -> None:
    """A node on the longer, lighter branch switches to the heavier one: work, not length."""
    z = replay(fork.genesis, fork.prefix + fork.a)
    results = submit_all(z, fork.b)
    assert results[0].status == "connected"
    assert [blk.hash for blk in results[0].disconnected] == [blk.hash for blk in fork.a[::-1]]
    assert z.tip.hash == fork.b[-1].hash
    assert all(z.is_canonical(blk.hash) for blk in fork.prefix + fork.b)
    assert not any(z.is_canonical(blk.hash) for blk in fork.a)


def test_lighter_branch_is_stored_not_followed(fork: Fork) -> None:
    """A node on the heavy branch stores the lighter one and keeps its tip."""
    z = replay(fork.genesis, fork.prefix + fork.b)
    statuses = [result.status for result in submit_all(z, fork.a)]
    assert statuses == ["stored"] * len(fork.a)
    assert z.tip.hash == fork.b[-1].hash
    assert_same_state(z, replay(fork.genesis, fork.prefix + fork.b))


def test_reorg_state_equals_replay_of_winning_branch(fork: Fork) -> None:
    """After the switch, balances, shares, indexes, state root and model equal a replay."""
    z = replay(fork.genesis, fork.prefix + fork.a)
    submit_all(z, fork.b)
    reference = replay(fork.genesis, fork.prefix + fork.b)
    assert_same_state(z, reference)
    for key in (ALICE, BOB, CAROL, *MINERS):
        assert z.get_account(key.account) == reference.get_account(key.account)


def test_reorg_returns_transactions_only_the_losing_branch_confirmed(fork: Fork) -> None:
    """Transfers of the losing branch come back for the mempool, unless the winner has them."""
    z = replay(fork.genesis, fork.prefix + fork.a)
    result = z.submit_block(fork.b[0])
    returned = {tx.txid for tx in result.returned_transactions}
    assert returned == {tx.txid for tx in fork.a_txs} - {tx.txid for tx in fork.b_txs}
    assert len(result.returned_transactions) == len(returned)
    bob = z.get_account(BOB.account)
    assert bob is not None and bob.nonce == 0


def test_reorg_back_to_extended_branch(fork: Fork, data: list[Dataset]) -> None:
    """When the old branch grows heavier again, the node switches back and matches a replay."""
    builder = replay(fork.genesis, fork.prefix + fork.a)
    comeback = fast_block(builder, MINERS[1], data[1], seed=4)
    z = replay(fork.genesis, fork.prefix + fork.a)
    submit_all(z, fork.b)
    result = z.submit_block(comeback)
    assert result.status == "connected"
    assert z.tip.hash == comeback.hash
    assert [blk.hash for blk in result.disconnected] == [blk.hash for blk in fork.b[::-1]]
    assert result.returned_transactions == ()  # B's only transfer is in A too
    assert_same_state(z, replay(fork.genesis, fork.prefix + fork.a + [comeback]))


def test_disconnected_branch_weights_still_rebuild(fork: Fork) -> None:
    """The model after a block of the losing branch is rebuilt exactly from stored data."""
    z = replay(fork.genesis, fork.prefix + fork.a)
    submit_all(z, fork.b)
    z._weights.clear()
    for block in fork.a:
        assert model_hash(z.weights_at(block.hash)) == block.header.model_hash


def test_reorg_survives_restart(fork: Fork) -> None:
    """A chain reopened on the store of a reorganised node has the same state."""
    store = MemoryStore()
    z = Chain(store, fork.genesis, clock=far_clock(fork.genesis))
    submit_all(z, fork.prefix + fork.a + fork.b)
    reopened = Chain(store, fork.genesis, clock=far_clock(fork.genesis))
    assert_same_state(reopened, replay(fork.genesis, fork.prefix + fork.b))


def test_heavier_branch_failing_validation_falls_back_to_the_old_tip(fork: Fork) -> None:
    """A heavier block that passes the stored-block checks but lies about its loss: the node
    disconnects its branch for it, finds it invalid, and reconnects the old branch."""
    lying = replace(fork.b[0].header, claimed_loss=fork.b[0].header.claimed_loss - 50_000)
    tampered = replace(fork.b[0], header=lying.signed(MINERS[2]))
    z = replay(fork.genesis, fork.prefix + fork.a)
    result = z.submit_block(tampered)
    assert result.invalid == (tampered.hash,)
    assert [blk.hash for blk in result.connected] == [blk.hash for blk in fork.a]
    assert z.tip.hash == fork.a[-1].hash
    assert snapshot(z) == snapshot(replay(fork.genesis, fork.prefix + fork.a))
    assert z.submit_block(slow_block(z, MINERS[0])).status == "connected"


def test_fork_choice_keeps_few_candidates_on_a_long_chain(fork: Fork) -> None:
    """Blocks with less work than the tip leave the candidate set: fork choice does not look
    at every stored block again on each import."""
    z = replay(fork.genesis, fork.prefix + fork.a + fork.b)
    for _ in range(20):
        extend(z, slow_block(z, MINERS[0]))
    assert len(z.index) > 25
    assert z._candidates <= {z.tip.hash}


def test_disconnected_transactions_are_saved_for_the_mempool(fork: Fork) -> None:
    """A disconnect saves its block's transfers as pending in the same batch; restoring them
    after a crash keeps those the winning branch did not confirm."""
    store = MemoryStore()
    z = Chain(store, fork.genesis, clock=far_clock(fork.genesis))
    submit_all(z, fork.prefix + fork.a)
    z.submit_block(fork.b[0])
    saved = [value for _, value in store.iterate(schema.PREFIXES["mempool"])]
    pending = store.iterate(schema.PREFIXES["mempool"])
    assert {schema.parse_hash_key(key, "mempool") for key, _ in pending} == {
        tx.txid for tx in fork.a_txs
    }
    reopened = Chain(store, fork.genesis, clock=far_clock(fork.genesis))
    pool = Mempool(fork.genesis.chain_id, fork.genesis.params.ledger, reopened)
    assert pool.restore(saved) == 2
    returned = {tx.txid for tx in fork.a_txs} - {tx.txid for tx in fork.b_txs}
    assert all(txid in pool for txid in returned)
    assert fork.b_txs[0].txid not in pool


# --- ties ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twins(fork: Fork) -> tuple[Block, Block]:
    """Two slow children of the prefix by different proposers: equal work, different hashes."""
    base = replay(fork.genesis, fork.prefix)
    return slow_block(base, MINERS[0]), slow_block(base, MINERS[1])


@pytest.mark.parametrize("first", [0, 1])
def test_equal_work_tie_goes_to_first_seen(
    fork: Fork, twins: tuple[Block, Block], first: int
) -> None:
    """Of two blocks with the same work, the one the node stored first stays the tip."""
    seen_first, seen_second = twins[first], twins[1 - first]
    z = replay(fork.genesis, fork.prefix)
    assert z.submit_block(seen_first).status == "connected"
    assert z.submit_block(seen_second).status == "stored"
    assert z.tip.hash == seen_first.hash
    assert z.entry(seen_first.hash).work == z.entry(seen_second.hash).work


def test_tie_survives_restart(fork: Fork, twins: tuple[Block, Block]) -> None:
    """The first-seen order is persisted: a restart keeps the same tip among equals."""
    store = MemoryStore()
    z = Chain(store, fork.genesis, clock=far_clock(fork.genesis))
    submit_all(z, [*fork.prefix, twins[1], twins[0]])
    reopened = Chain(store, fork.genesis, clock=far_clock(fork.genesis))
    assert reopened.tip.hash == twins[1].hash


def test_tie_broken_by_one_more_block(fork: Fork, twins: tuple[Block, Block]) -> None:
    """The second-seen twin's branch wins as soon as it has strictly more work."""
    builder = replay(fork.genesis, [*fork.prefix, twins[1]])
    child = slow_block(builder, MINERS[2])
    z = replay(fork.genesis, [*fork.prefix, twins[0]])
    submit_all(z, [twins[1], child])
    assert z.tip.hash == child.hash
    assert_same_state(z, replay(fork.genesis, [*fork.prefix, twins[1], child]))


# --- finality --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shallow(data: list[Dataset]) -> Fork:
    """finality_depth=3: one trained block, then A = four slow blocks and B = one fast block."""
    genesis = make_genesis({ALICE.account: 1_000 * DRL}, finality_depth=3)
    clock = far_clock(genesis)
    x, y = fresh_chain(genesis, clock), fresh_chain(genesis, clock)
    prefix = [extend(x, fast_block(x, MINERS[0], data[0], seed=1))]
    submit_all(y, prefix)
    a = [extend(x, slow_block(x, MINERS[0])) for _ in range(4)]
    b = [extend(y, fast_block(y, MINERS[1], data[1], seed=5))]
    return Fork(genesis, prefix, a, b, [], [], x, y)


def test_reorg_of_exactly_finality_depth_happens(shallow: Fork) -> None:
    """Disconnecting exactly ``finality_depth`` blocks is allowed."""
    z = replay(shallow.genesis, shallow.prefix + shallow.a[:3])
    result = z.submit_block(shallow.b[0])
    assert len(result.disconnected) == 3
    assert z.tip.hash == shallow.b[0].hash


def test_reorg_deeper_than_finality_is_refused(shallow: Fork) -> None:
    """A heavier branch forking deeper than ``finality_depth`` raises and the chain stays."""
    z = replay(shallow.genesis, shallow.prefix + shallow.a)
    before = snapshot(z)
    assert branch_work(shallow.b_builder, shallow.b) > branch_work(z, shallow.a)
    with pytest.raises(FinalityViolation):
        z.submit_block(shallow.b[0])
    assert z.tip.hash == shallow.a[-1].hash
    assert snapshot(z) == before


def test_refused_branch_is_not_followed_later(shallow: Fork, data: list[Dataset]) -> None:
    """After the refusal the branch is known invalid, its children too, even after a restart."""
    store = MemoryStore()
    z = Chain(store, shallow.genesis, clock=far_clock(shallow.genesis))
    submit_all(z, shallow.prefix + shallow.a)
    with pytest.raises(FinalityViolation):
        z.submit_block(shallow.b[0])
    child = slow_block(shallow.b_builder, MINERS[1])
    with pytest.raises(KnownInvalid):
        z.submit_block(child)
    with pytest.raises(KnownInvalid):
        z.submit_block(shallow.b[0])
    reopened = Chain(store, shallow.genesis, clock=far_clock(shallow.genesis))
    assert reopened.tip.hash == shallow.a[-1].hash
    assert reopened.submit_block(slow_block(reopened, MINERS[2])).status == "connected"


def test_branch_found_beyond_finality_at_restart_is_refused(shallow: Fork) -> None:
    """A heavier branch stored just before a crash, and beyond finality, does not stop the
    restart: it is remembered as invalid and the chain stays."""
    store = MemoryStore()
    z = Chain(store, shallow.genesis, clock=far_clock(shallow.genesis))
    submit_all(z, shallow.prefix + shallow.a)
    z._accept(shallow.b[0])  # stored, and the crash comes before fork choice runs
    z._settle()
    reopened = Chain(store, shallow.genesis, clock=far_clock(shallow.genesis))
    assert reopened.tip.hash == shallow.a[-1].hash
    assert shallow.b[0].hash in reopened.invalid
    assert snapshot(reopened) == snapshot(replay(shallow.genesis, shallow.prefix + shallow.a))


# --- orphans ---------------------------------------------------------------------------------


def test_blocks_in_reverse_order_connect_through_the_orphan_pool(fork: Fork) -> None:
    """Every block but the first waits as an orphan; the first connects them all in order."""
    blocks = fork.prefix + fork.a
    z = fresh_chain(fork.genesis, far_clock(fork.genesis))
    results = submit_all(z, blocks[::-1])
    assert [r.status for r in results] == ["orphan"] * (len(blocks) - 1) + ["connected"]
    assert [blk.hash for blk in results[-1].connected] == [blk.hash for blk in blocks]
    assert not z.orphans
    assert_same_state(z, replay(fork.genesis, blocks))


def test_orphan_branch_reorganises_when_connected(fork: Fork) -> None:
    """A heavier branch arriving child-first is followed once its first block arrives."""
    z = replay(fork.genesis, fork.prefix + fork.a)
    results = submit_all(z, fork.b[::-1])
    assert [r.status for r in results] == ["orphan", "connected"]
    assert z.tip.hash == fork.b[-1].hash
    assert_same_state(z, replay(fork.genesis, fork.prefix + fork.b))


def test_orphan_pool_is_bounded(fork: Fork) -> None:
    """The pool keeps at most ``orphan_limit`` blocks, dropping the oldest first."""
    blocks = fork.prefix + fork.a  # heights 1..5
    z = fresh_chain(fork.genesis, far_clock(fork.genesis), orphan_limit=2)
    for block in blocks[:0:-1]:  # heights 5, 4, 3, 2
        assert z.submit_block(block).status == "orphan"
        assert len(z.orphans) <= 2
    assert set(z.orphans) == {blocks[2].hash, blocks[1].hash}
    result = z.submit_block(blocks[0])
    assert [blk.hash for blk in result.connected] == [blk.hash for blk in blocks[:3]]
    assert z.submit_block(blocks[4]).status == "orphan"  # its parent was dropped
    assert z.submit_block(blocks[3]).status == "connected"
    assert z.tip.hash == blocks[-1].hash


def test_duplicate_orphan_is_reported(fork: Fork) -> None:
    """Offering the same orphan twice keeps one copy."""
    z = fresh_chain(fork.genesis, far_clock(fork.genesis))
    assert z.submit_block(fork.a[0]).status == "orphan"
    assert z.submit_block(fork.a[0]).status == "duplicate"
    assert len(z.orphans) == 1
