"""The learning task: data, model, weight deltas, deterministic evaluation, training."""
