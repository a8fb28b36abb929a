"""The learning task a network fixes at genesis: data set, split, architecture, loss."""

from __future__ import annotations

from dataclasses import dataclass

from derelayl_chain.encoding import Item, as_bytes, as_list, as_uint, encode_uint
from derelayl_chain.exceptions import DecodeError

LOSS_SCALE = 1_000_000
"""Losses and accuracies are fixed-point integers: value x 10^6."""

INPUT_SIZE = 64
NUM_CLASSES = 10
_MAX_NAME = 64
_MAX_LAYERS = 8


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What miners train and validators evaluate."""

    name: str
    """Short identifier, e.g. ``digits-mlp``."""
    dataset: str
    """Data source; only ``sklearn-digits`` (bundled with scikit-learn) is built in."""
    hidden: tuple[int, ...]
    """Hidden layer widths of the MLP (input 64, output 10)."""
    eval_fraction_ppm: int
    """Part of the data set held out for evaluation, parts per million."""
    split_seed: bytes
    """Seed of the deterministic train/evaluation split."""
    init_seed: bytes
    """Seed of the deterministic initial weights."""
    loss: str
    """Loss function; only ``cross_entropy``."""

    def to_item(self) -> list[Item]:
        return [
            self.name.encode(),
            self.dataset.encode(),
            [encode_uint(width) for width in self.hidden],
            encode_uint(self.eval_fraction_ppm),
            self.split_seed,
            self.init_seed,
            self.loss.encode(),
        ]

    @classmethod
    def from_item(cls, item: Item) -> TaskSpec:
        f = as_list(item, 7, "task")
        hidden = as_list(f[2], what="task hidden layers")
        if not 0 < len(hidden) <= _MAX_LAYERS:
            raise DecodeError(f"task must have 1 to {_MAX_LAYERS} hidden layers")
        return cls(
            name=_text(f[0], "task name"),
            dataset=_text(f[1], "task dataset"),
            hidden=tuple(as_uint(w, "hidden width", 4) for w in hidden),
            eval_fraction_ppm=as_uint(f[3], "evaluation fraction"),
            split_seed=as_bytes(f[4], what="split seed", max_len=64),
            init_seed=as_bytes(f[5], what="init seed", max_len=64),
            loss=_text(f[6], "task loss"),
        )


def _text(item: Item, what: str) -> str:
    raw = as_bytes(item, what=what, max_len=_MAX_NAME)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} must be ASCII") from exc


DEFAULT_TASK = TaskSpec(
    name="digits-mlp",
    dataset="sklearn-digits",
    hidden=(32,),
    eval_fraction_ppm=250_000,
    split_seed=b"derelayl-digits-split-v1",
    init_seed=b"derelayl-digits-mlp-init-v1",
    loss="cross_entropy",
)
"""The default task: a small MLP that trains in well under a second per block on one core."""

LARGE_TASK = TaskSpec(
    name="digits-large",
    dataset="sklearn-digits",
    hidden=(1024, 896),
    eval_fraction_ppm=250_000,
    split_seed=b"derelayl-digits-split-v1",
    init_seed=b"derelayl-digits-large-init-v1",
    loss="cross_entropy",
)
"""About 10^6 parameters: realistic delta sizes and evaluation cost, for benchmarks."""

BUILTIN_TASKS: dict[str, TaskSpec] = {DEFAULT_TASK.name: DEFAULT_TASK, LARGE_TASK.name: LARGE_TASK}
