"""Building a block (relay.build_block) and assembling one the chain accepts (assemble_block)."""

from __future__ import annotations

import pytest

from derelayl_chain.chain import Chain
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import InsufficientImprovement
from derelayl_chain.relay import assemble_block, build_block, empty_candidate
from derelayl_chain.transaction import make_transfer
from tests.chainkit import Clock, make_genesis, new_chain

KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(32))


@pytest.fixture
def chain() -> Chain:
    """A chain at genesis whose clock stands at T_decay after it: a zero delta is then valid."""
    genesis = make_genesis({KEY.account: 10**12})
    return new_chain(genesis, Clock(genesis.timestamp_ms + genesis.params.decay_ms))


def test_assemble_block_is_build_block_once_validated(chain: Chain) -> None:
    """With the same arguments, positional or keyword, both give the same signed block."""
    timestamp = chain.tip.header.timestamp_ms + chain.params.decay_ms
    tx = make_transfer(KEY, chain.genesis.chain_id, 0, OTHER.account, 5_000, 10_000)
    candidate = empty_candidate(chain)
    built = build_block(chain, KEY, candidate, timestamp, [tx], OTHER.account)
    assembled = assemble_block(
        chain, KEY, candidate, timestamp, transactions=[tx], reward_to=OTHER.account
    )
    assert assembled == built
    assert assembled.transactions == (tx,)
    assert assembled.header.reward_to == OTHER.account
    assert chain.submit_block(assembled).status == "connected"


def test_assemble_block_refuses_a_block_the_chain_would_reject(chain: Chain) -> None:
    """A zero delta just after the parent is built, but assembling it raises the chain's error."""
    timestamp = chain.tip.header.timestamp_ms + 1
    candidate = empty_candidate(chain)
    built = build_block(chain, KEY, candidate, timestamp)
    with pytest.raises(InsufficientImprovement):
        chain.validate_child(built)
    with pytest.raises(InsufficientImprovement):
        assemble_block(chain, KEY, candidate, timestamp)
    assert chain.tip.height == 0
