"""The task's model: an MLP, its weight layout and deterministic initial weights."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn

from derelayl_chain.learning.task import INPUT_SIZE, NUM_CLASSES, TaskSpec

Weights = dict[str, torch.Tensor]
WeightSpec = dict[str, tuple[tuple[int, ...], str]]


def layer_sizes(task: TaskSpec) -> list[int]:
    return [INPUT_SIZE, *task.hidden, NUM_CLASSES]


def build_model(task: TaskSpec) -> nn.Sequential:
    """Linear layers with ReLU between them; parameter names ``0.weight``, ``0.bias``, ..."""
    sizes = layer_sizes(task)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def weight_spec(task: TaskSpec) -> WeightSpec:
    """Name -> (shape, safetensors dtype) of every tensor of the model."""
    sizes = layer_sizes(task)
    spec: WeightSpec = {}
    for i in range(len(sizes) - 1):
        spec[f"{2 * i}.weight"] = ((sizes[i + 1], sizes[i]), "F32")
        spec[f"{2 * i}.bias"] = ((sizes[i + 1],), "F32")
    return spec


def parameter_count(task: TaskSpec) -> int:
    return sum(math.prod(shape) for shape, _ in weight_spec(task).values())


def initial_weights(task: TaskSpec) -> Weights:
    """Weights drawn from a SHAKE-256 stream: identical on every platform and library version.

    Each weight is uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)] (PyTorch's default range),
    computed from 32-bit integers with exact float32 arithmetic; biases start at zero.
    """
    weights: Weights = {}
    for name, (shape, _) in weight_spec(task).items():
        if name.endswith(".bias"):
            weights[name] = torch.zeros(shape, dtype=torch.float32)
            continue
        count = math.prod(shape)
        stream = hashlib.shake_256(task.init_seed + b"/" + name.encode()).digest(4 * count)
        integers = np.frombuffer(stream, dtype="<u4").astype(np.float64)
        unit = (integers / 2.0**32) * 2.0 - 1.0  # exact in float64, in [-1, 1)
        bound = 1.0 / math.sqrt(shape[1])
        values = (unit * bound).astype(np.float32).reshape(shape)
        weights[name] = torch.from_numpy(values.copy())
    return weights
