"""Ledger invariants across random block sequences with competing branches and reorgs.

Hypothesis draws a list of steps. A step either extends the node's best chain or builds a
competing branch from a recent ancestor (on a replay of the node's chain up to the fork point)
and submits it, sometimes child first. Blocks come from different proposers and carry random
transfers and access payments from funded accounts. Most blocks are zero-delta blocks
timestamped ``T_decay`` after their parent (cheap, work 1); a few are trained (work up to
``d + 1``), and trained deltas are cached by parent model so each is computed once per run.

After every step the node must satisfy::

    sum(balances) + royalty_pool == supply == allocations + sum(canonical emission)
    total_shares == sum(account shares) == initial_loss - tip claimed_loss
    royalty_pool >= sum(unsettled royalties)

and its tip must carry the most work of all stored blocks. At the end, every table derived from
the canonical chain equals a replay of that chain on a fresh node.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derelayl_chain.block import Block
from derelayl_chain.chain import Chain
from derelayl_chain.crypto import KeyPair
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, GenesisConfig
from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.delta import encode_delta
from derelayl_chain.learning.train import TrainingConfig, train
from derelayl_chain.learning.weights import model_hash, subtract_weights
from derelayl_chain.relay import (
    Candidate,
    assemble_block,
    candidate_from_delta,
    earliest_timestamp,
    empty_candidate,
)
from derelayl_chain.state import Account, decode_account
from derelayl_chain.storage import schema
from derelayl_chain.transaction import Transaction, make_access, make_transfer
from tests.chainkit import (
    canonical_blocks,
    derived_tables,
    far_clock,
    make_genesis,
    new_chain,
    replay,
    shards,
)

DRL = BASE_UNITS_PER_DRL
FEE = 10_000
PAYERS = [KeyPair.from_seed(bytes([0x10 + i]) * 32) for i in range(3)]
MINERS = [KeyPair.from_seed(bytes([0x20 + i]) * 32) for i in range(3)]
OUTSIDER = KeyPair.from_seed(b"\x30" * 32)
RECIPIENTS = [k.account for k in (*PAYERS, *MINERS, OUTSIDER)]
GENESIS = make_genesis(
    {PAYERS[0].account: 40 * DRL, PAYERS[1].account: 25 * DRL, PAYERS[2].account: 3 * DRL},
    checkpoint_interval=3,
)
DATA = shards(1)[0]
_TRAINED: dict[bytes, Candidate] = {}
"""Trained candidates by parent model hash: training is deterministic, so compute each once."""


# --- steps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    access: bool
    payer: int
    recipient: int
    share_ppm: int
    """Part of the payer's balance to send (access payments round it up to the licence price)."""


@dataclass(frozen=True)
class Step:
    delay: int
    """Extra ms on slow blocks' timestamps, so a branch does not rebuild the same blocks."""
    depth: int
    """0: extend the tip; otherwise fork this many blocks below it."""
    proposers: tuple[int, ...]
    """One entry per block of the step."""
    trained: tuple[bool, ...]
    payments: tuple[Payment, ...]
    """Transactions of the step's first block."""
    reverse: bool
    """Submit a branch child first (through the orphan pool)."""


payments = st.builds(
    Payment,
    access=st.booleans(),
    payer=st.integers(0, len(PAYERS) - 1),
    recipient=st.integers(0, len(RECIPIENTS) - 1),
    share_ppm=st.integers(1, 600_000),
)


@st.composite
def steps(draw: st.DrawFn) -> Step:
    size = draw(st.integers(1, 3))
    return Step(
        delay=draw(st.integers(0, 3)),
        depth=draw(st.sampled_from([0, 1, 2, 3])),
        proposers=tuple(draw(st.integers(0, len(MINERS) - 1)) for _ in range(size)),
        trained=tuple(draw(st.integers(0, 5)) == 0 for _ in range(size)),
        payments=tuple(draw(st.lists(payments, max_size=4))),
        reverse=draw(st.booleans()),
    )


# --- building blocks ---------------------------------------------------------------------------


def fresh_chain() -> Chain:
    return new_chain(GENESIS, far_clock(GENESIS))


def trained_candidate(chain: Chain, data: Dataset) -> Candidate:
    parent_weights = chain.weights_at(chain.tip.hash)
    key = model_hash(parent_weights)
    cached = _TRAINED.get(key)
    if cached is None:
        trained = train(GENESIS.task, parent_weights, data, TrainingConfig(seed=1))
        delta = subtract_weights(trained, parent_weights)
        cached = candidate_from_delta(chain, chain.tip.hash, delta)
        assert encode_delta(delta) == cached.delta
        _TRAINED[key] = cached
    return replace(cached, parent=chain.tip.hash)


def transactions(chain: Chain, payments: tuple[Payment, ...]) -> list[Transaction]:
    """Signed transactions with the next nonces on ``chain`` (some may not apply: left out)."""
    nonces: dict[int, int] = {}
    txs = []
    licence = chain.params.licence_price
    for p in payments:
        key = PAYERS[p.payer]
        account = chain.get_account(key.account) or Account()
        nonce = nonces.get(p.payer, account.nonce)
        nonces[p.payer] = nonce + 1
        amount = max(1, account.balance * p.share_ppm // 1_000_000)
        if p.access:
            amount = max(licence, amount)
            tx = make_access(key, GENESIS.chain_id, nonce, amount, FEE)
        else:
            to = RECIPIENTS[p.recipient]
            tx = make_transfer(key, GENESIS.chain_id, nonce, to, amount, FEE)
        txs.append(tx)
    return txs


def next_block(chain: Chain, step: Step, index: int, txs: list[Transaction]) -> Block:
    """Build the step's ``index``-th block on ``chain``'s tip and connect it there."""
    key = MINERS[step.proposers[index]]
    if step.trained[index]:
        candidate = trained_candidate(chain, DATA)
        timestamp = earliest_timestamp(chain, candidate.evaluation.loss)
        if timestamp is not None:
            block = assemble_block(chain, key, candidate, timestamp, txs)
            assert chain.submit_block(block).status == "connected"
            return block
    timestamp = chain.tip.header.timestamp_ms + chain.params.decay_ms + step.delay
    block = assemble_block(chain, key, empty_candidate(chain), timestamp, txs)
    assert chain.submit_block(block).status == "connected"
    return block


def run_step(node: Chain, step: Step) -> None:
    """Extend the node, or build a branch on a replay of its chain below the tip and submit it."""
    if step.depth == 0:
        builder = node
    else:
        builder = replay(GENESIS, canonical_blocks(node, max(0, node.tip.height - step.depth)))
    branch = []
    for index in range(len(step.proposers)):
        txs = transactions(builder, step.payments) if index == 0 else []
        branch.append(next_block(builder, step, index, txs))
    if builder is not node:
        for block in branch[::-1] if step.reverse else branch:
            node.submit_block(block)


# --- invariants --------------------------------------------------------------------------------


def accounts(chain: Chain) -> list[Account]:
    return [decode_account(value) for _, value in chain.store.iterate(schema.PREFIXES["account"])]


def check_invariants(chain: Chain, genesis: GenesisConfig) -> None:
    ledger, everyone = chain.ledger, accounts(chain)
    assert not chain.orphans
    assert sum(a.balance for a in everyone) + ledger.royalty_pool == ledger.supply
    emitted = sum(
        block.header.reward - sum(tx.fee for tx in block.transactions)
        for block in canonical_blocks(chain, chain.tip.height)
    )
    assert ledger.supply == sum(amount for _, amount in genesis.allocations) + emitted
    assert ledger.total_shares == sum(a.shares for a in everyone)
    assert ledger.total_shares == genesis.initial_loss - chain.tip.header.claimed_loss
    pending = sum(a.pending_royalties(ledger.royalty_per_share) for a in everyone)
    assert ledger.royalty_pool >= pending
    heaviest = max(entry.work for entry in chain.index.values())
    assert chain.tip.work == heaviest


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(steps(), min_size=3, max_size=8))
def test_supply_and_shares_hold_across_random_reorgs(plan: list[Step]) -> None:
    """Supply, shares and the royalty pool stay consistent, and state equals a replay."""
    node = fresh_chain()
    for step in plan:
        run_step(node, step)
        check_invariants(node, GENESIS)
    reference = replay(GENESIS, canonical_blocks(node, node.tip.height))
    assert derived_tables(node) == derived_tables(reference)
    node._weights.clear()
    assert model_hash(node.weights_at(node.tip.hash)) == node.tip.header.model_hash
