"""Tests for local training (learning/train.py)."""

from __future__ import annotations

import numpy as np
import torch

from derelayl_chain.learning.data import Dataset, load_miner_data
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import initial_weights, layer_sizes, weight_spec
from derelayl_chain.learning.task import DEFAULT_TASK, NUM_CLASSES
from derelayl_chain.learning.train import TrainingConfig, train
from derelayl_chain.learning.weights import model_hash

SHARDS = 3
CONFIG = TrainingConfig(epochs=1)


def shard(index: int) -> Dataset:
    """Shard ``index`` of three of the default task's training data."""
    return load_miner_data(f"digits:{index}/{SHARDS}", DEFAULT_TASK)


def test_training_is_deterministic() -> None:
    """The same weights, data and seed give bit-identical weights."""
    weights, data = initial_weights(DEFAULT_TASK), shard(0)
    first = train(DEFAULT_TASK, weights, data, CONFIG)
    second = train(DEFAULT_TASK, weights, data, CONFIG)
    assert model_hash(first) == model_hash(second)


def test_different_seeds_give_different_weights() -> None:
    """Another seed shuffles the data otherwise and gives other weights."""
    weights, data = initial_weights(DEFAULT_TASK), shard(0)
    first = train(DEFAULT_TASK, weights, data, TrainingConfig(epochs=1, seed=1))
    second = train(DEFAULT_TASK, weights, data, TrainingConfig(epochs=1, seed=2))
    assert model_hash(first) != model_hash(second)


def test_training_changes_weights() -> None:
    """Training moves every tensor away from its starting point."""
    weights = initial_weights(DEFAULT_TASK)
    trained = train(DEFAULT_TASK, weights, shard(0), CONFIG)
    for name, tensor in trained.items():
        assert not torch.equal(tensor, weights[name]), name


def test_result_follows_weight_spec() -> None:
    """Trained weights have the model's names, shapes and float32 dtype."""
    trained = train(DEFAULT_TASK, initial_weights(DEFAULT_TASK), shard(0), CONFIG)
    assert {name: (tuple(t.shape), t.dtype) for name, t in trained.items()} == {
        name: (shape, torch.float32) for name, (shape, _) in weight_spec(DEFAULT_TASK).items()
    }


def test_training_leaves_weights_untouched() -> None:
    """The starting weights are not modified, and the result does not alias them."""
    weights = initial_weights(DEFAULT_TASK)
    before = {name: tensor.clone() for name, tensor in weights.items()}
    trained = train(DEFAULT_TASK, weights, shard(0), CONFIG)
    for tensor in trained.values():
        tensor.add_(1.0)
    for name, tensor in weights.items():
        assert torch.equal(tensor, before[name]), name


def test_training_leaves_data_untouched() -> None:
    """The miner's data arrays are not modified."""
    data = shard(0)
    x_before, y_before = data.x.copy(), data.y.copy()
    train(DEFAULT_TASK, initial_weights(DEFAULT_TASK), data, CONFIG)
    assert np.array_equal(data.x, x_before) and np.array_equal(data.y, y_before)


def test_training_reduces_loss() -> None:
    """One round of training on a shard lowers the evaluation loss."""
    weights = initial_weights(DEFAULT_TASK)
    trained = train(DEFAULT_TASK, weights, shard(0), CONFIG)
    assert evaluate(DEFAULT_TASK, trained).loss < evaluate(DEFAULT_TASK, weights).loss


def test_relay_across_shards_reduces_loss() -> None:
    """Training in relay (each miner from the previous result, on its own shard) keeps lowering
    the evaluation loss."""
    weights = initial_weights(DEFAULT_TASK)
    losses = [evaluate(DEFAULT_TASK, weights).loss]
    for step in range(2 * SHARDS):
        weights = train(DEFAULT_TASK, weights, shard(step % SHARDS), TrainingConfig(seed=step))
        losses.append(evaluate(DEFAULT_TASK, weights).loss)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < losses[0] // 2, losses


def non_iid_shard(index: int) -> Dataset:
    """Non-IID shard ``index`` of three: a few labels only."""
    return load_miner_data(f"digits:{index}/{SHARDS}:noniid", DEFAULT_TASK)


def test_absent_classes_left_untouched() -> None:
    """Training on label-skewed data leaves the output rows of absent classes exactly as they
    were: the softmax covers only the classes the data holds."""
    data = non_iid_shard(0)
    absent = sorted(set(range(NUM_CLASSES)) - set(data.y.tolist()))
    assert absent
    output = f"{2 * (len(layer_sizes(DEFAULT_TASK)) - 2)}"
    weights = initial_weights(DEFAULT_TASK)
    trained = train(DEFAULT_TASK, weights, data, CONFIG)
    for part in ("weight", "bias"):
        name = f"{output}.{part}"
        assert torch.equal(trained[name][absent], weights[name][absent]), name
    assert not torch.equal(trained["0.weight"], weights["0.weight"])


def test_single_class_data_changes_nothing() -> None:
    """Data holding one class teaches nothing: the weights come back unchanged."""
    data = non_iid_shard(0)
    only = data.y == data.y[0]
    weights = initial_weights(DEFAULT_TASK)
    trained = train(DEFAULT_TASK, weights, Dataset(data.x[only], data.y[only]), CONFIG)
    assert model_hash(trained) == model_hash(weights)


def test_non_iid_relay_reduces_loss() -> None:
    """Training in relay on label-skewed shards (three labels or so each) keeps lowering the
    evaluation loss."""
    weights = initial_weights(DEFAULT_TASK)
    losses = [evaluate(DEFAULT_TASK, weights).loss]
    for step in range(2 * SHARDS):
        data = non_iid_shard(step % SHARDS)
        weights = train(DEFAULT_TASK, weights, data, TrainingConfig(seed=step))
        losses.append(evaluate(DEFAULT_TASK, weights).loss)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < losses[0] * 2 // 3, losses


def test_training_leaves_global_rng_alone() -> None:
    """Training draws only from its own seeded generator, not torch's global one."""
    state = torch.get_rng_state()
    train(DEFAULT_TASK, initial_weights(DEFAULT_TASK), shard(0), CONFIG)
    assert torch.equal(torch.get_rng_state(), state)
