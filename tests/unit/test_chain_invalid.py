"""Every invalid-block category, each made by tampering with one aspect of a valid block.

Each test checks the specific error the validator raises, then submits the block and checks
that the chain's tip and state root are unchanged and the block is remembered as invalid.
"""

from __future__ import annotations

import pathlib
import pickle
import threading
from dataclasses import dataclass, replace

import pytest
import safetensors.torch
import torch

from derelayl_chain.block import Block, decode_block
from derelayl_chain.chain import Chain
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import (
    BlockBodyMismatch,
    BlockCommitmentError,
    BlockDeltaError,
    BlockFromFuture,
    BlockLossError,
    BlockRewardError,
    BlockSignatureError,
    BlockStructureError,
    BlockTimestampError,
    DecodeError,
    InsufficientImprovement,
    InvalidBlock,
    KnownInvalid,
)
from derelayl_chain.learning.delta import decode_delta
from derelayl_chain.learning.evaluate import Evaluation
from derelayl_chain.learning.model import weight_spec
from derelayl_chain.learning.train import TrainingConfig
from derelayl_chain.relay import (
    Candidate,
    build_block,
    earliest_timestamp,
    empty_candidate,
    train_candidate,
)
from derelayl_chain.storage import schema
from derelayl_chain.transaction import make_transfer
from tests.chainkit import Clock, make_genesis, new_chain, produce_block, shards


@dataclass
class Setup:
    chain: Chain
    clock: Clock
    key: KeyPair
    candidate: Candidate
    timestamp: int

    def build(self, candidate: Candidate | None = None, **overrides: object) -> Block:
        """A signed child of the tip, consistent except for the header fields overridden.

        ``timestamp_ms`` is the time the block is built for; other overrides replace header
        fields after building, and the header is signed again.
        """
        timestamp = overrides.pop("timestamp_ms", self.timestamp)
        assert isinstance(timestamp, int)
        block = build_block(self.chain, self.key, candidate or self.candidate, timestamp)
        if not overrides:
            return block
        header = replace(block.header, **overrides).signed(self.key)  # type: ignore[arg-type]
        return replace(block, header=header)

    def with_delta(self, tensors: dict[str, torch.Tensor]) -> Candidate:
        raw = bytes(safetensors.torch.save({k: tensors[k] for k in sorted(tensors)}))
        return replace(self.candidate, delta=raw)


@dataclass(frozen=True)
class Prepared:
    key: KeyPair
    blocks: tuple[Block, ...]
    candidate: Candidate
    timestamp: int


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    """Two valid blocks and a trained candidate for the third, built once per module."""
    data = shards(2)
    key = KeyPair.from_seed(bytes(range(32)))
    genesis = make_genesis({key.account: 10**12})
    clock = Clock(genesis.timestamp_ms + 1_000)
    chain = new_chain(genesis, clock)
    blocks = []
    for i in range(2):
        blocks.append(produce_block(chain, key, data[i], clock, seed=i))
        chain.submit_block(blocks[-1])
    candidate = train_candidate(chain, data[0], TrainingConfig(seed=7))
    timestamp = earliest_timestamp(chain, candidate.evaluation.loss)
    assert timestamp is not None
    return Prepared(key, tuple(blocks), candidate, max(timestamp, clock.now))


@pytest.fixture
def setup(prepared: Prepared) -> Setup:
    """A fresh chain holding the two prepared blocks."""
    genesis = make_genesis({prepared.key.account: 10**12})
    clock = Clock(prepared.timestamp)
    chain = new_chain(genesis, clock)
    for block in prepared.blocks:
        assert chain.submit_block(block).status == "connected"
    return Setup(chain, clock, prepared.key, prepared.candidate, prepared.timestamp)


def assert_rejected(setup: Setup, block: Block, error: type[Exception]) -> None:
    """The validator raises ``error``; submitting leaves the chain as it was."""
    chain = setup.chain
    tip, root = chain.tip.hash, chain.ledger.state_root
    with pytest.raises(error):
        chain.validate_child(block)
    try:
        result = chain.submit_block(block)
        assert block.hash in result.invalid
    except InvalidBlock:
        pass
    assert chain.tip.hash == tip
    assert chain.ledger.state_root == root
    assert block.hash in chain.invalid
    with pytest.raises(KnownInvalid):
        chain.submit_block(block)


def spec_tensors(setup: Setup) -> dict[str, torch.Tensor]:
    spec = weight_spec(setup.chain.genesis.task)
    return dict(decode_delta(setup.candidate.delta, spec))


def test_untampered_block_connects(setup: Setup) -> None:
    """The fixture's block is valid: the tampered variants below differ in one aspect only."""
    result = setup.chain.submit_block(setup.build())
    assert result.status == "connected"
    assert setup.chain.tip.height == 3


def test_nan_in_delta_is_rejected(setup: Setup) -> None:
    """A NaN anywhere in the delta makes the block invalid."""
    tensors = spec_tensors(setup)
    tensors["0.weight"][3, 4] = float("nan")
    assert_rejected(setup, setup.build(setup.with_delta(tensors)), BlockDeltaError)


def test_infinity_in_delta_is_rejected(setup: Setup) -> None:
    """An infinite value in the delta makes the block invalid."""
    tensors = spec_tensors(setup)
    tensors["2.bias"][0] = float("inf")
    assert_rejected(setup, setup.build(setup.with_delta(tensors)), BlockDeltaError)


def test_missing_tensor_is_rejected(setup: Setup) -> None:
    """A delta without one of the model's tensors is invalid."""
    tensors = spec_tensors(setup)
    del tensors["0.bias"]
    assert_rejected(setup, setup.build(setup.with_delta(tensors)), BlockDeltaError)


def test_extra_tensor_is_rejected(setup: Setup) -> None:
    """A delta with a tensor the model does not have is invalid."""
    tensors = spec_tensors(setup)
    tensors["9.weight"] = torch.zeros(2, 2)
    assert_rejected(setup, setup.build(setup.with_delta(tensors)), BlockDeltaError)


def test_changed_dtype_is_rejected(setup: Setup) -> None:
    """A float64 tensor where the model has float32 is invalid."""
    tensors = spec_tensors(setup)
    tensors["0.weight"] = tensors["0.weight"].to(torch.float64)
    assert_rejected(setup, setup.build(setup.with_delta(tensors)), BlockDeltaError)


def test_pickle_in_place_of_safetensors_is_never_loaded(
    setup: Setup, tmp_path: pathlib.Path
) -> None:
    """A pickle that would create a file when loaded is rejected and the file never appears."""
    target = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (pathlib.Path.touch, (target,))

    payload = pickle.dumps(Exploit())
    block = setup.build(replace(setup.candidate, delta=payload))
    assert_rejected(setup, block, BlockDeltaError)
    assert not target.exists()


def test_lying_loss_claim_is_rejected(setup: Setup) -> None:
    """A claim lower than the evaluated loss by more than the tolerance is invalid."""
    tolerance = setup.chain.params.loss_tolerance
    real = setup.candidate.evaluation
    lie = replace(setup.candidate, evaluation=Evaluation(real.loss - 10 * tolerance, real.accuracy))
    assert_rejected(setup, setup.build(lie), BlockLossError)


def test_too_little_improvement_is_rejected(setup: Setup) -> None:
    """A zero delta right after the parent cannot meet the difficulty."""
    empty = empty_candidate(setup.chain)
    parent_ts = setup.chain.tip.header.timestamp_ms
    block = build_block(setup.chain, setup.key, empty, parent_ts + 1)
    assert_rejected(setup, block, InsufficientImprovement)


def test_zero_delta_after_decay_is_valid(setup: Setup) -> None:
    """After T_decay a block with no improvement is valid and earns no emission."""
    chain = setup.chain
    empty = empty_candidate(chain)
    timestamp = chain.tip.header.timestamp_ms + chain.params.decay_ms
    setup.clock.advance_to(timestamp)
    block = build_block(chain, setup.key, empty, timestamp)
    assert block.header.reward == 0
    assert chain.submit_block(block).status == "connected"


def test_wrong_model_hash_is_rejected(setup: Setup) -> None:
    """A model hash that is not parent weights + delta is invalid."""
    assert_rejected(setup, setup.build(model_hash=bytes(32)), BlockCommitmentError)


def test_wrong_reward_is_rejected(setup: Setup) -> None:
    """A reward other than emission + fees is invalid."""
    block = setup.build()
    assert_rejected(setup, setup.build(reward=block.header.reward + 1), BlockRewardError)


def test_wrong_state_root_is_rejected(setup: Setup) -> None:
    """A state root that does not match the ledger after the block is invalid."""
    assert_rejected(setup, setup.build(state_root=bytes(32)), BlockCommitmentError)


def assert_copy_refused(setup: Setup, block: Block) -> None:
    """A body that does not match its header is refused, leaves the chain as it was, and the
    header's hash is not remembered as invalid: the header does not commit to this body."""
    chain = setup.chain
    tip, root = chain.tip.hash, chain.ledger.state_root
    with pytest.raises(BlockBodyMismatch):
        chain.validate_child(block)
    with pytest.raises(BlockBodyMismatch):
        chain.submit_block(block)
    assert chain.tip.hash == tip
    assert chain.ledger.state_root == root
    assert block.hash not in chain.invalid
    assert block.hash not in chain.index


def test_wrong_transactions_root_is_rejected(setup: Setup) -> None:
    """A transactions root that does not match the body is refused."""
    assert_copy_refused(setup, setup.build(tx_root=bytes(32)))


def test_wrong_delta_hash_is_rejected(setup: Setup) -> None:
    """A delta hash that does not match the body is refused."""
    assert_copy_refused(setup, setup.build(delta_hash=bytes(32)))


def test_swapped_body_does_not_condemn_the_genuine_block(setup: Setup) -> None:
    """A peer that serves a valid header with another body cannot get the block blacklisted:
    the copy is refused and the genuine block still connects."""
    genuine = setup.build()
    tensors = spec_tensors(setup)
    tensors["2.weight"][0, 0] += 0.5
    swapped = replace(genuine, delta=setup.with_delta(tensors).delta)
    assert swapped.hash == genuine.hash and swapped.delta != genuine.delta
    assert_copy_refused(setup, swapped)
    assert setup.chain.submit_block(genuine).status == "connected"


@pytest.mark.parametrize("flaw", ["delta hash", "NaN"])
def test_block_with_a_bad_body_leaves_nothing_stored(setup: Setup, flaw: str) -> None:
    """The delta is compressed while the body is checked; a block whose body fails has none of
    its data written, and no writer thread outlives the import."""
    if flaw == "NaN":
        tensors = spec_tensors(setup)
        tensors["2.weight"][1, 2] = float("nan")
        block = setup.build(setup.with_delta(tensors))
    else:
        block = setup.build(delta_hash=bytes(32))
    with pytest.raises(InvalidBlock):
        setup.chain.submit_block(block)
    store = setup.chain.store
    assert store.get(schema.delta_key(block.hash)) is None
    assert store.get(schema.header_key(block.hash)) is None
    assert not [t for t in threading.enumerate() if t.name == "block-write"]


def test_timestamp_not_after_median_time_past_is_rejected(setup: Setup) -> None:
    """A timestamp at or before the median of the last blocks is invalid."""
    genesis_ts = setup.chain.genesis.timestamp_ms
    assert_rejected(setup, setup.build(timestamp_ms=genesis_ts), BlockTimestampError)


def test_timestamp_too_far_ahead_is_not_remembered_as_invalid(setup: Setup) -> None:
    """A block from the future is refused now but accepted once the clock catches up."""
    chain = setup.chain
    future = setup.clock.now + chain.params.max_future_ms + 60_000
    block = build_block(chain, setup.key, setup.candidate, future)
    with pytest.raises(BlockFromFuture):
        chain.submit_block(block)
    assert block.hash not in chain.invalid
    assert chain.tip.height == 2
    setup.clock.advance_to(future)
    assert chain.submit_block(block).status == "connected"


def test_bad_signature_is_rejected(setup: Setup) -> None:
    """A header whose signature has one flipped bit is invalid."""
    block = setup.build()
    signature = bytearray(block.header.signature)
    signature[5] ^= 0x01
    tampered = replace(block, header=replace(block.header, signature=bytes(signature)))
    assert_rejected(setup, tampered, BlockSignatureError)


def test_signature_by_another_key_is_rejected(setup: Setup) -> None:
    """A header naming one proposer but signed by another is invalid."""
    block = setup.build()
    other = KeyPair.generate()
    forged = replace(block.header, signature=other.sign(block.header.signing_bytes()))
    assert_rejected(setup, replace(block, header=forged), BlockSignatureError)


def test_wrong_height_is_rejected(setup: Setup) -> None:
    """A height other than parent height + 1 is invalid."""
    assert_rejected(setup, setup.build(height=7), BlockStructureError)


def test_wrong_chain_id_is_rejected(setup: Setup) -> None:
    """A block for another network is invalid."""
    assert_rejected(setup, setup.build(chain_id=1), BlockStructureError)


def test_wrong_difficulty_is_rejected(setup: Setup) -> None:
    """A difficulty other than the retarget rule's is invalid."""
    block = setup.build()
    assert_rejected(setup, setup.build(difficulty=block.header.difficulty - 1), BlockStructureError)


def test_wrong_version_is_rejected(setup: Setup) -> None:
    """An unknown header version is invalid."""
    assert_rejected(setup, setup.build(version=2), BlockStructureError)


def test_wrong_parent_is_rejected(setup: Setup) -> None:
    """A block whose parent is a known block other than its height implies is invalid."""
    genesis_hash = setup.chain.genesis.hash
    block = setup.build(parent=genesis_hash)
    with pytest.raises(BlockStructureError):
        setup.chain.submit_block(block)
    assert setup.chain.tip.height == 2


def test_unknown_parent_waits_as_orphan(setup: Setup) -> None:
    """A block whose parent is unknown is kept aside, not connected and not marked invalid."""
    block = setup.build(parent=b"\x11" * 32)
    assert setup.chain.submit_block(block).status == "orphan"
    assert block.hash not in setup.chain.invalid
    assert setup.chain.tip.height == 2


def test_oversized_delta_is_refused_by_the_decoder(setup: Setup) -> None:
    """A block larger than the delta limit is refused before it is parsed."""
    block = setup.build()
    with pytest.raises(DecodeError):
        decode_block(block.encode(), max_delta_bytes=len(block.delta) - 1)


def test_oversized_delta_is_rejected_by_the_chain(setup: Setup) -> None:
    """A delta over the genesis limit is invalid even if it reaches the validator."""
    chain = setup.chain
    small = replace(chain.genesis, params=replace(chain.params, max_delta_bytes=1024))
    chain.genesis, chain.params = small, small.params
    assert_rejected(setup, setup.build(), BlockDeltaError)


def test_overspending_transaction_makes_block_invalid(setup: Setup) -> None:
    """A block carrying a transaction that overspends is invalid (built by hand: the
    proposer's own assembly would leave the transaction out)."""
    chain = setup.chain
    spender = setup.key
    balance = chain.get_account(spender.account).balance  # type: ignore[union-attr]
    tx = make_transfer(spender, chain.genesis.chain_id, 0, b"\x01" * 20, balance * 2, 10_000)
    block = setup.build()
    from derelayl_chain.block import transactions_root

    header = replace(block.header, tx_root=transactions_root([tx])).signed(spender)
    assert_rejected(setup, Block(header, (tx,), block.delta), InvalidBlock)
