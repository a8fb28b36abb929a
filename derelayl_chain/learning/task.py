"""The learning task a network fixes at genesis: data set, split, architecture, loss."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from derelayl_chain.encoding import Item, as_bytes, as_list, as_uint, encode_uint
from derelayl_chain.exceptions import ConfigError, DecodeError

LOSS_SCALE = 1_000_000
"""Losses and accuracies are fixed-point integers: value x 10^6."""

INPUT_SIZE = 64
NUM_CLASSES = 10
DATASETS = frozenset({"sklearn-digits"})
LOSSES = frozenset({"cross_entropy"})
MAX_TEXT_BYTES = 64
MAX_SEED_BYTES = 64
MAX_HIDDEN_LAYERS = 8
MAX_WIDTH = 1 << 14
MAX_PARAMETERS = 1 << 24
"""16M float32 parameters (64 MB): a genesis cannot name a model no node could hold."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What miners train and validators evaluate; construction refuses a task no node can run."""

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

    def __post_init__(self) -> None:
        check_task(self)

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
        fields = (
            _text(f[0], "task name"),
            _text(f[1], "task dataset"),
            tuple(as_uint(w, "hidden width", 4) for w in hidden),
            as_uint(f[3], "evaluation fraction"),
            as_bytes(f[4], what="split seed", max_len=MAX_SEED_BYTES),
            as_bytes(f[5], what="init seed", max_len=MAX_SEED_BYTES),
            _text(f[6], "task loss"),
        )
        try:
            return cls(*fields)
        except ConfigError as exc:
            raise DecodeError(str(exc)) from exc


def check_task(task: TaskSpec) -> None:
    """Raise ConfigError naming the first field that makes ``task`` impossible to run."""
    for what, text in (("name", task.name), ("dataset", task.dataset), ("loss", task.loss)):
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:
            raise ConfigError(f"task {what} {text!r} is not valid UTF-8 text") from exc
        if not 0 < size <= MAX_TEXT_BYTES:
            raise ConfigError(f"task {what} must be 1 to {MAX_TEXT_BYTES} bytes, got {size}")
    if task.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {task.dataset!r}; built in: {sorted(DATASETS)}")
    if task.loss not in LOSSES:
        raise ConfigError(f"unknown loss {task.loss!r}; built in: {sorted(LOSSES)}")
    if not 0 < len(task.hidden) <= MAX_HIDDEN_LAYERS:
        raise ConfigError(f"task must have 1 to {MAX_HIDDEN_LAYERS} hidden layers")
    if not all(0 < width <= MAX_WIDTH for width in task.hidden):
        raise ConfigError(f"hidden widths must be 1 to {MAX_WIDTH}, got {list(task.hidden)}")
    sizes = [INPUT_SIZE, *task.hidden, NUM_CLASSES]
    parameters = sum((a + 1) * b for a, b in pairwise(sizes))
    if parameters > MAX_PARAMETERS:
        raise ConfigError(f"task model has {parameters} parameters, over {MAX_PARAMETERS}")
    if not 0 < task.eval_fraction_ppm < 1_000_000:
        raise ConfigError(
            f"evaluation fraction must be strictly between 0 and 1000000 ppm, "
            f"got {task.eval_fraction_ppm}"
        )
    for what, seed in (("split", task.split_seed), ("init", task.init_seed)):
        if len(seed) > MAX_SEED_BYTES:
            raise ConfigError(f"{what} seed is {len(seed)} bytes, over {MAX_SEED_BYTES}")


def _text(item: Item, what: str) -> str:
    raw = as_bytes(item, what=what, max_len=MAX_TEXT_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not valid UTF-8") from exc


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
