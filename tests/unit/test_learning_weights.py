"""Tests for the model layout, initial weights, weight encoding and hashing, delta arithmetic
(learning/model.py and learning/weights.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from derelayl_chain.exceptions import InvalidDelta
from derelayl_chain.genesis import DEVNET_INITIAL_LOSS, DEVNET_MODEL_HASH, devnet_genesis
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import (
    Weights,
    build_model,
    initial_weights,
    parameter_count,
    weight_spec,
)
from derelayl_chain.learning.task import DEFAULT_TASK, LARGE_TASK, TaskSpec
from derelayl_chain.learning.weights import (
    apply_delta,
    decode_weights,
    encode_weights,
    model_hash,
    subtract_weights,
)

SPEC = weight_spec(DEFAULT_TASK)
LIMIT = 1 << 20
DEFAULT_INITIAL_HASH = "4b0918f331831487db625bb8f4b81ca49d25667b194d91272a3c5d924eda1862"


def random_weights(seed: int) -> Weights:
    """Random float32 tensors in the default task's layout."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(shape, generator=generator, dtype=torch.float32)
        for name, (shape, _) in SPEC.items()
    }


def cloned(weights: Weights) -> Weights:
    return {name: tensor.clone() for name, tensor in weights.items()}


def assert_same(a: Weights, b: Weights) -> None:
    """Same names and bit-identical tensors."""
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- model layout and initial weights ------------------------------------------------------


@pytest.mark.parametrize("task", [DEFAULT_TASK, LARGE_TASK], ids=lambda t: t.name)
def test_weight_spec_matches_build_model(task: TaskSpec) -> None:
    """weight_spec names and shapes are exactly those of build_model's state_dict."""
    state = build_model(task).state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == {
        name: shape for name, (shape, _) in weight_spec(task).items()
    }
    assert all(t.dtype == torch.float32 for t in state.values())
    assert {dtype for _, dtype in weight_spec(task).values()} == {"F32"}


def test_parameter_count_matches_model() -> None:
    """parameter_count equals the number of parameters of the built model."""
    model = build_model(DEFAULT_TASK)
    assert parameter_count(DEFAULT_TASK) == sum(p.numel() for p in model.parameters())


def test_initial_weights_follow_spec() -> None:
    """Initial weights have the spec's names, shapes and float32 dtype."""
    weights = initial_weights(DEFAULT_TASK)
    assert {name: tuple(t.shape) for name, t in weights.items()} == {
        name: shape for name, (shape, _) in SPEC.items()
    }
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_initial_weights_load_into_model() -> None:
    """The initial weights load into build_model with strict name checking."""
    build_model(DEFAULT_TASK).load_state_dict(initial_weights(DEFAULT_TASK), strict=True)


def test_initial_weights_are_deterministic() -> None:
    """Two calls give bit-identical initial weights."""
    assert_same(initial_weights(DEFAULT_TASK), initial_weights(DEFAULT_TASK))


def test_initial_weights_depend_on_seed() -> None:
    """Tasks with different init seeds start from different weights."""
    other = replace(DEFAULT_TASK, init_seed=b"another-init-seed")
    assert model_hash(initial_weights(other)) != model_hash(initial_weights(DEFAULT_TASK))


def test_initial_weights_in_pytorch_range() -> None:
    """Weights lie within +-1/sqrt(fan_in) and biases start at zero."""
    for name, tensor in initial_weights(DEFAULT_TASK).items():
        if name.endswith(".bias"):
            assert not tensor.any()
        else:
            bound = 1.0 / tensor.shape[1] ** 0.5
            assert float(tensor.abs().max()) <= bound
            assert float(tensor.abs().max()) > 0.9 * bound


def test_default_initial_model_hash_pinned() -> None:
    """The default task's initial model hash is the pinned constant (a change forks the chain)."""
    assert model_hash(initial_weights(DEFAULT_TASK)).hex() == DEFAULT_INITIAL_HASH


def test_devnet_genesis_model_hash_matches() -> None:
    """The devnet genesis carries the default task's initial model hash."""
    assert model_hash(initial_weights(DEFAULT_TASK)) == DEVNET_MODEL_HASH
    assert devnet_genesis().initial_model_hash == DEVNET_MODEL_HASH


def test_devnet_initial_loss_matches() -> None:
    """The devnet genesis loss is the evaluated initial loss, within the genesis tolerance."""
    genesis = devnet_genesis()
    loss = evaluate(DEFAULT_TASK, initial_weights(DEFAULT_TASK)).loss
    assert abs(loss - DEVNET_INITIAL_LOSS) <= genesis.params.loss_tolerance
    assert genesis.initial_loss == DEVNET_INITIAL_LOSS


# --- hashing ---------------------------------------------------------------------------------


def test_model_hash_is_32_bytes() -> None:
    """A model hash is a 32-byte digest."""
    assert len(model_hash(initial_weights(DEFAULT_TASK))) == 32


def test_model_hash_changes_with_one_value() -> None:
    """Changing a single weight by one float32 ulp changes the model hash."""
    weights = initial_weights(DEFAULT_TASK)
    changed = cloned(weights)
    value = changed["2.weight"][3, 7]
    changed["2.weight"][3, 7] = torch.nextafter(value, torch.tensor(1.0))
    assert model_hash(changed) != model_hash(weights)


def test_model_hash_changes_with_bias() -> None:
    """Changing one bias changes the model hash."""
    weights = initial_weights(DEFAULT_TASK)
    changed = cloned(weights)
    changed["0.bias"][0] = 1e-6
    assert model_hash(changed) != model_hash(weights)


def test_model_hash_covers_names() -> None:
    """Renaming a tensor (same values) changes the model hash."""
    weights = {"a": torch.zeros(3), "b": torch.ones(3)}
    assert model_hash(weights) != model_hash({"a": torch.zeros(3), "c": torch.ones(3)})


def test_model_hash_covers_shapes() -> None:
    """Reshaping a tensor (same bytes) changes the model hash."""
    assert model_hash({"w": torch.zeros(2, 3)}) != model_hash({"w": torch.zeros(3, 2)})


def test_model_hash_ignores_dict_order_and_layout() -> None:
    """The hash depends on contents only, not insertion order or memory layout."""
    weights = random_weights(1)
    reordered = {name: weights[name].t().contiguous().t() for name in reversed(list(weights))}
    assert model_hash(reordered) == model_hash(weights)


# --- encoding --------------------------------------------------------------------------------


def test_encode_decode_weights_round_trip() -> None:
    """decode_weights(encode_weights(w)) gives back bit-identical tensors."""
    weights = random_weights(2)
    assert_same(decode_weights(encode_weights(weights), SPEC, LIMIT), weights)


def test_encode_weights_is_canonical() -> None:
    """Equal weights encode to equal bytes, whatever the dict order."""
    weights = random_weights(3)
    reordered = {name: weights[name].clone() for name in reversed(list(weights))}
    assert encode_weights(reordered) == encode_weights(weights)


def test_decode_weights_checks_layout() -> None:
    """Weights of another task's layout are refused."""
    with pytest.raises(InvalidDelta, match="weights tensor names differ"):
        decode_weights(encode_weights(random_weights(4)), weight_spec(LARGE_TASK), 1 << 24)


def test_decode_weights_preserves_hash() -> None:
    """The model hash of decoded weights equals that of the originals."""
    weights = initial_weights(DEFAULT_TASK)
    decoded = decode_weights(encode_weights(weights), SPEC, LIMIT)
    assert model_hash(decoded) == model_hash(weights)


# --- delta arithmetic ------------------------------------------------------------------------


def test_apply_delta_adds_elementwise() -> None:
    """apply_delta gives weights + delta for every tensor."""
    weights, delta = random_weights(5), random_weights(6)
    result = apply_delta(weights, delta)
    for name in SPEC:
        assert torch.equal(result[name], weights[name] + delta[name])
        assert result[name].dtype == torch.float32 and result[name].is_contiguous()


def test_apply_delta_takes_tensors_that_track_gradients() -> None:
    """Weights fresh from training (requires_grad) are applied like any others."""
    weights, delta = random_weights(5), random_weights(6)
    tracked = {name: tensor.clone().requires_grad_(True) for name, tensor in weights.items()}
    result = apply_delta(tracked, delta)
    assert model_hash(result) == model_hash(apply_delta(weights, delta))


def test_apply_zero_delta_keeps_hash() -> None:
    """Applying a zero delta leaves the model hash unchanged."""
    weights = initial_weights(DEFAULT_TASK)
    zero = {name: torch.zeros_like(t) for name, t in weights.items()}
    assert model_hash(apply_delta(weights, zero)) == model_hash(weights)


def test_subtract_then_apply_recovers_weights() -> None:
    """apply_delta(old, subtract_weights(new, old)) is new (up to float32 rounding)."""
    old, new = random_weights(7), random_weights(8)
    recovered = apply_delta(old, subtract_weights(new, old))
    for name in SPEC:
        assert torch.allclose(recovered[name], new[name], atol=1e-6)


def test_subtract_exact_for_representable_values() -> None:
    """For values whose difference is exact in float32, the round trip is bit-exact."""
    old = {name: torch.full(shape, 0.5) for name, (shape, _) in SPEC.items()}
    new = {name: torch.full(shape, 0.75) for name, (shape, _) in SPEC.items()}
    assert model_hash(apply_delta(old, subtract_weights(new, old))) == model_hash(new)


def test_apply_delta_leaves_inputs_untouched() -> None:
    """apply_delta neither modifies its inputs nor returns tensors aliasing them."""
    weights, delta = random_weights(9), random_weights(10)
    weights_before, delta_before = cloned(weights), cloned(delta)
    result = apply_delta(weights, delta)
    for tensor in result.values():
        tensor.add_(1.0)
    assert_same(weights, weights_before)
    assert_same(delta, delta_before)


def test_subtract_weights_leaves_inputs_untouched() -> None:
    """subtract_weights modifies neither input."""
    new, old = random_weights(11), random_weights(12)
    new_before, old_before = cloned(new), cloned(old)
    subtract_weights(new, old)
    assert_same(new, new_before)
    assert_same(old, old_before)
