"""Deterministic evaluation: the loss every validator recomputes."""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from derelayl_chain.learning.data import load_task_split
from derelayl_chain.learning.model import Weights, layer_sizes
from derelayl_chain.learning.task import LOSS_SCALE, TaskSpec

_LOCK = threading.Lock()

MAX_LOSS = (1 << 63) - 1
"""The loss recorded for weights whose loss is not finite or exceeds it (finite deltas can still
add up to overflowing weights): never an improvement, and evaluation never raises."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Loss and accuracy on the evaluation split, fixed point (x 10^6)."""

    loss: int
    accuracy: int


@functools.lru_cache(maxsize=4)
def _eval_tensors(task: TaskSpec) -> tuple[torch.Tensor, torch.Tensor]:
    _, evaluation = load_task_split(task)
    return torch.from_numpy(evaluation.x), torch.from_numpy(evaluation.y)


def forward(task: TaskSpec, weights: Weights, x: torch.Tensor) -> torch.Tensor:
    """The MLP's logits, computed layer by layer from the weight dictionary."""
    layers = len(layer_sizes(task)) - 1
    hidden = x
    for i in range(layers):
        hidden = F.linear(hidden, weights[f"{2 * i}.weight"], weights[f"{2 * i}.bias"])
        if i < layers - 1:
            hidden = F.relu(hidden)
    return hidden


def evaluate(task: TaskSpec, weights: Weights) -> Evaluation:
    """Mean cross-entropy and accuracy in float32 on one thread, as fixed-point integers."""
    x, y = _eval_tensors(task)
    with _LOCK, torch.inference_mode():
        previous = torch.get_num_threads()
        if previous != 1:
            torch.set_num_threads(1)
        try:
            logits = forward(task, weights, x)
            loss = float(F.cross_entropy(logits, y))
            correct = int((logits.argmax(dim=1) == y).sum())
        finally:
            if previous != 1:
                torch.set_num_threads(previous)
    scaled = loss * LOSS_SCALE
    fixed = round(scaled) if math.isfinite(scaled) and scaled < MAX_LOSS else MAX_LOSS
    return Evaluation(loss=fixed, accuracy=correct * LOSS_SCALE // len(y))


def loss_matches(claimed: int, recomputed: int, tolerance: int) -> bool:
    return abs(claimed - recomputed) <= tolerance
