"""Local training: how a miner turns the tip's weights and its own data into a candidate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from derelayl_chain.learning.data import Dataset
from derelayl_chain.learning.model import Weights, build_model
from derelayl_chain.learning.task import NUM_CLASSES, TaskSpec


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Local hyper-parameters; not consensus (validators only evaluate the result)."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 0.003
    seed: int = 0


def train(task: TaskSpec, weights: Weights, data: Dataset, config: TrainingConfig) -> Weights:
    """Adam on the miner's data from ``weights``; deterministic for a given seed.

    The softmax runs over the classes the data holds only. With every class present this is
    plain cross-entropy; on label-skewed data it teaches the miner's classes apart without
    pushing the absent ones down, which would raise the loss on the evaluation split (the
    restricted softmax of federated learning on non-IID data).
    """
    with torch.device("meta"):  # no random initialisation: every tensor is loaded below
        model = build_model(task)
    model.load_state_dict({name: tensor.clone() for name, tensor in weights.items()}, assign=True)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x = torch.from_numpy(data.x)
    classes, targets = _present_classes(data)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(targets), config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = model(x[batch])
            if classes is not None:
                logits = logits[:, classes]
            optimiser.zero_grad()
            loss = F.cross_entropy(logits, targets[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}


def _present_classes(data: Dataset) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The classes ``data`` holds (None when it holds all) and its labels renumbered among them."""
    labels = torch.from_numpy(data.y)
    classes = torch.unique(labels)
    if len(classes) == NUM_CLASSES:
        return None, labels
    position = torch.zeros(NUM_CLASSES, dtype=torch.int64)
    position[classes] = torch.arange(len(classes))
    return classes, position[labels]
