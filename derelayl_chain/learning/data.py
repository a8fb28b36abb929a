"""Task data: the deterministic train/evaluation split and each miner's local data."""

from __future__ import annotations

import functools
import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from derelayl_chain.exceptions import ConfigError, TaskDataError
from derelayl_chain.learning.task import INPUT_SIZE, NUM_CLASSES, TaskSpec

MAX_DATA_FILE_BYTES = 256 << 20
MAX_DATA_ARRAY_BYTES = 1 << 30
"""Bound on the uncompressed size of an .npz's members: a small compressed file cannot expand
into arrays that exhaust memory."""
_SHARD_SPEC = re.compile(r"^digits:(\d{1,6})/(\d{1,6})(:noniid)?$")


@dataclass(frozen=True)
class Dataset:
    """Features (n x 64, float32) and integer labels (n)."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _hash_order(seed: bytes, count: int) -> list[int]:
    """A permutation of ``range(count)`` from a hash: the same on every platform and version."""
    return sorted(range(count), key=lambda i: hashlib.blake2b(seed + i.to_bytes(4, "big")).digest())


@functools.lru_cache(maxsize=4)
def load_task_split(task: TaskSpec) -> tuple[Dataset, Dataset]:
    """(train, evaluation) for the task; the split is fixed by ``task.split_seed``."""
    from sklearn.datasets import load_digits  # TaskSpec admits no other data set

    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    order = _hash_order(task.split_seed, len(y))
    n_eval = round(len(y) * task.eval_fraction_ppm / 1_000_000)
    if not 0 < n_eval < len(y):
        raise ConfigError(
            f"task {task.name!r} leaves an empty split ({n_eval} of {len(y)} held out)"
        )
    eval_idx, train_idx = np.array(order[:n_eval]), np.array(order[n_eval:])
    return Dataset(x[train_idx], y[train_idx]), Dataset(x[eval_idx], y[eval_idx])


def load_miner_data(spec: str, task: TaskSpec) -> Dataset:
    """A miner's local data: ``digits:I/N[:noniid]`` or the path of an ``.npz`` file."""
    match = _SHARD_SPEC.match(spec)
    if match:
        index, count = int(match.group(1)), int(match.group(2))
        return shard(load_task_split(task)[0], index, count, non_iid=bool(match.group(3)))
    if spec.startswith("digits:"):
        raise TaskDataError(f"bad data spec {spec!r}: expected digits:I/N or digits:I/N:noniid")
    return load_npz(Path(spec))


def shard(data: Dataset, index: int, count: int, *, non_iid: bool = False) -> Dataset:
    """Shard ``index`` of ``count``: every count-th sample (IID) or a slice sorted by label."""
    if count < 1:
        raise TaskDataError(f"shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise TaskDataError(f"shard index {index} is out of range for {count} shards")
    if non_iid:
        order = np.argsort(data.y, kind="stable")
        selected = np.array_split(order, count)[index]
    else:
        selected = np.arange(index, len(data), count)
    if selected.size == 0:
        raise TaskDataError(f"shard {index}/{count} is empty: too many shards for the data")
    return Dataset(data.x[selected], data.y[selected])


def load_npz(path: Path) -> Dataset:
    """Load and validate a user's ``.npz`` with arrays ``x`` (n x 64) and ``y`` (n labels)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TaskDataError(f"cannot read data file {path}: {exc.strerror}") from exc
    if size > MAX_DATA_FILE_BYTES:
        raise TaskDataError(f"data file {path} is {size} bytes, over {MAX_DATA_FILE_BYTES}")
    try:
        _check_archive(path)
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy that also parses as a zip
            raise TaskDataError(f"data file {path} is a single .npy array, not an .npz archive")
        with loaded as archive:
            x, y = archive["x"], archive["y"]
    except TaskDataError:
        raise
    except MemoryError as exc:
        raise TaskDataError(f"data file {path} declares arrays too large to load") from exc
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise TaskDataError(f"data file {path} is not a valid .npz without pickles: {exc}") from exc
    return validate_arrays(x, y, str(path))


def _check_archive(path: Path) -> None:
    """Refuse anything but a zip archive holding ``x`` and ``y`` of bounded uncompressed size.

    Checked before numpy reads it: np.load would also open a bare .npy, and a zip's members are
    decompressed only up to the sizes its directory declares.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info.file_size for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise TaskDataError(f"data file {path} is not a valid .npz (zip) archive") from exc
    missing = {"x.npy", "y.npy"} - set(members)
    if missing:
        names = ", ".join(sorted(name.removesuffix(".npy") for name in missing))
        raise TaskDataError(f"data file {path} lacks array(s) {names}")
    declared = sum(members.values())
    if declared > MAX_DATA_ARRAY_BYTES:
        raise TaskDataError(
            f"data file {path} expands to {declared} bytes, over {MAX_DATA_ARRAY_BYTES}"
        )


def validate_arrays(x: npt.NDArray[np.generic], y: npt.NDArray[np.generic], where: str) -> Dataset:
    """Check shapes, dtypes, finiteness and label range; return float32/int64 copies."""
    if x.ndim != 2 or x.shape[1] != INPUT_SIZE:
        raise TaskDataError(f"{where}: x must have shape (n, {INPUT_SIZE}), got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise TaskDataError(f"{where}: y must have shape ({x.shape[0]},), got {y.shape}")
    if x.shape[0] == 0:
        raise TaskDataError(f"{where}: the data set is empty")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TaskDataError(f"{where}: x must be real numbers, got dtype {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TaskDataError(f"{where}: y must be integer labels, got dtype {y.dtype}")
    features = x.astype(np.float32)
    if not np.isfinite(features).all():
        raise TaskDataError(f"{where}: x contains NaN or infinite values")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise TaskDataError(
            f"{where}: labels must be in [0, {NUM_CLASSES}), got {y.min()}..{y.max()}"
        )
    return Dataset(features, y.astype(np.int64))
