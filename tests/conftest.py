"""Test-wide settings: one torch thread, as the node runs (deterministic and fast for tiny
models, whose per-operation threading overhead dwarfs the arithmetic)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
