"""Tests for deterministic evaluation (learning/evaluate.py)."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from derelayl_chain.learning.data import load_miner_data, load_task_split
from derelayl_chain.learning.delta import decode_delta, encode_delta
from derelayl_chain.learning.evaluate import (
    MAX_LOSS,
    Evaluation,
    evaluate,
    forward,
    loss_matches,
)
from derelayl_chain.learning.model import Weights, build_model, initial_weights, weight_spec
from derelayl_chain.learning.task import DEFAULT_TASK, LOSS_SCALE
from derelayl_chain.learning.train import TrainingConfig, train
from derelayl_chain.learning.weights import apply_delta


@pytest.fixture(scope="module")
def trained() -> Weights:
    """The initial weights trained on the whole training split for a few epochs."""
    data = load_miner_data("digits:0/1", DEFAULT_TASK)
    return train(DEFAULT_TASK, initial_weights(DEFAULT_TASK), data, TrainingConfig(epochs=5))


def test_evaluation_is_deterministic() -> None:
    """Evaluating the same weights twice gives identical results."""
    weights = initial_weights(DEFAULT_TASK)
    assert evaluate(DEFAULT_TASK, weights) == evaluate(DEFAULT_TASK, weights)


def test_trained_evaluation_is_deterministic(trained: Weights) -> None:
    """Evaluating the same trained weights (and a copy of them) gives identical results."""
    copy = {name: tensor.clone() for name, tensor in trained.items()}
    assert evaluate(DEFAULT_TASK, trained) == evaluate(DEFAULT_TASK, copy)


def test_evaluation_is_fixed_point_integers() -> None:
    """Loss and accuracy are integers, the accuracy within 0..LOSS_SCALE."""
    result = evaluate(DEFAULT_TASK, initial_weights(DEFAULT_TASK))
    assert type(result.loss) is int and type(result.accuracy) is int
    assert 0 <= result.accuracy <= LOSS_SCALE


def test_initial_loss_is_about_ln10() -> None:
    """Untrained weights score a loss near ln(10): chance level for ten classes."""
    loss = evaluate(DEFAULT_TASK, initial_weights(DEFAULT_TASK)).loss
    assert 2_200_000 <= loss <= 2_400_000
    assert abs(loss - round(math.log(10) * LOSS_SCALE)) < 100_000


def test_zero_weights_score_exactly_ln10() -> None:
    """All-zero weights give uniform predictions: loss is ln(10) to fixed-point precision."""
    zeros = {name: torch.zeros_like(t) for name, t in initial_weights(DEFAULT_TASK).items()}
    assert abs(evaluate(DEFAULT_TASK, zeros).loss - round(math.log(10) * LOSS_SCALE)) <= 1


def test_trained_model_has_higher_accuracy(trained: Weights) -> None:
    """Trained weights classify the evaluation split far better than the initial ones."""
    before = evaluate(DEFAULT_TASK, initial_weights(DEFAULT_TASK))
    after = evaluate(DEFAULT_TASK, trained)
    assert after.accuracy > before.accuracy + 300_000
    assert after.accuracy > 800_000


def test_trained_model_has_lower_loss(trained: Weights) -> None:
    """Trained weights have a lower evaluation loss than the initial ones."""
    before = evaluate(DEFAULT_TASK, initial_weights(DEFAULT_TASK))
    assert evaluate(DEFAULT_TASK, trained).loss < before.loss // 2


def test_accuracy_counts_correct_predictions(trained: Weights) -> None:
    """The accuracy is the share of evaluation samples whose top logit is the label."""
    _, evaluation = load_task_split(DEFAULT_TASK)
    model = build_model(DEFAULT_TASK)
    model.load_state_dict(trained)
    with torch.no_grad():
        predicted = model(torch.from_numpy(evaluation.x)).argmax(dim=1)
    correct = int((predicted == torch.from_numpy(evaluation.y)).sum())
    expected = correct * LOSS_SCALE // len(evaluation)
    assert evaluate(DEFAULT_TASK, trained).accuracy == expected


def test_forward_matches_built_model(trained: Weights) -> None:
    """forward() computes the same logits as build_model loaded with the weights."""
    _, evaluation = load_task_split(DEFAULT_TASK)
    x = torch.from_numpy(evaluation.x)
    model = build_model(DEFAULT_TASK)
    model.load_state_dict(trained)
    with torch.no_grad():
        assert torch.allclose(forward(DEFAULT_TASK, trained, x), model(x), atol=1e-5)


def test_evaluation_leaves_weights_untouched(trained: Weights) -> None:
    """Evaluating does not modify the weights."""
    before = {name: tensor.clone() for name, tensor in trained.items()}
    evaluate(DEFAULT_TASK, trained)
    for name, tensor in trained.items():
        assert torch.equal(tensor, before[name])


def test_evaluation_restores_thread_count() -> None:
    """Evaluation runs on one thread and puts the caller's thread count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate(DEFAULT_TASK, initial_weights(DEFAULT_TASK))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_evaluation_same_across_thread_counts(trained: Weights) -> None:
    """The result does not depend on the caller's thread count."""
    previous = torch.get_num_threads()
    expected = evaluate(DEFAULT_TASK, trained)
    torch.set_num_threads(2)
    try:
        assert evaluate(DEFAULT_TASK, trained) == expected
    finally:
        torch.set_num_threads(previous)


def test_evaluation_in_worker_thread_matches(trained: Weights) -> None:
    """Evaluating from another thread gives the same result as from the main thread."""
    expected = evaluate(DEFAULT_TASK, trained)
    results: list[Evaluation] = []
    workers = [
        threading.Thread(target=lambda: results.append(evaluate(DEFAULT_TASK, trained)))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [expected] * 4


@pytest.mark.parametrize("value", [1e30, 3e38], ids=["huge", "overflowing"])
def test_overflowing_weights_score_max_loss(value: float) -> None:
    """A delta that decodes (every value finite) but drives the logits to infinity or NaN is
    scored MAX_LOSS, never an exception."""
    weights = initial_weights(DEFAULT_TASK)
    delta = {name: torch.full_like(tensor, value) for name, tensor in weights.items()}
    delta = decode_delta(encode_delta(delta), weight_spec(DEFAULT_TASK))
    assert evaluate(DEFAULT_TASK, apply_delta(weights, delta)).loss == MAX_LOSS


def test_infinite_weights_score_max_loss() -> None:
    """Weights holding infinities score MAX_LOSS."""
    weights = initial_weights(DEFAULT_TASK)
    weights["0.bias"][0] = float("inf")
    assert evaluate(DEFAULT_TASK, weights).loss == MAX_LOSS


def test_evaluation_is_a_value_object() -> None:
    """Evaluation compares by value."""
    assert Evaluation(loss=1, accuracy=2) == Evaluation(loss=1, accuracy=2)
    assert Evaluation(loss=1, accuracy=2) != Evaluation(loss=1, accuracy=3)


@pytest.mark.parametrize("claimed", [1_000_000, 998_000, 1_002_000, 999_999])
def test_loss_matches_within_tolerance(claimed: int) -> None:
    """A claim within the tolerance (bounds included, either side) matches."""
    assert loss_matches(claimed, 1_000_000, 2_000)


@pytest.mark.parametrize("claimed", [997_999, 1_002_001, 0])
def test_loss_mismatch_beyond_tolerance(claimed: int) -> None:
    """A claim beyond the tolerance on either side does not match."""
    assert not loss_matches(claimed, 1_000_000, 2_000)


def test_loss_matches_zero_tolerance() -> None:
    """With zero tolerance only the exact value matches."""
    assert loss_matches(5, 5, 0)
    assert not loss_matches(5, 6, 0)
