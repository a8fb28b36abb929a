"""Local training: how a miner turns the tip's weights and its own data into a candidate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.model import Weights, build_model
from derelayl_chain.learning.task import TaskSpec


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Local hyper-parameters; not consensus (validators only evaluate the result)."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.003
    seed: int = 0


def train(task: TaskSpec, weights: Weights, data: Dataset, config: TrainingConfig) -> Weights:
    """Adam on the miner's data from ``weights``; deterministic for a given seed."""
    model = build_model(task)
    model.load_state_dict({name: tensor.clone() for name, tensor in weights.items()})
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
