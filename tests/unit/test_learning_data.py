"""Tests for task data: the split, miner shards and user data files (learning/data.py)."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits

from derelayl_chain.exceptions import ConfigError, TaskDataError
from derelayl_chain.learning import data as data_module
from derelayl_chain.learning.data import (
    Dataset,
    load_miner_data,
    load_npz,
    load_task_split,
    shard,
)
from derelayl_chain.learning.task import DEFAULT_TASK, NUM_CLASSES

SHARDS = 3


def rows(data: Dataset) -> Counter[bytes]:
    """The samples of a data set as a multiset of (features, label) byte strings."""
    return Counter(
        x.tobytes() + int(y).to_bytes(1, "big") for x, y in zip(data.x, data.y, strict=True)
    )


def all_digits() -> Dataset:
    """The whole bundled digits data set, scaled as the task scales it."""
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
    return Dataset(x, np.asarray(digits.target, dtype=np.int64))


def label_distribution(data: Dataset) -> npt.NDArray[np.float64]:
    """The fraction of each label in a data set."""
    return np.bincount(data.y, minlength=NUM_CLASSES) / len(data)


def write_npz(path: Path, **arrays: object) -> Path:
    """Save arrays to an .npz file (pickling allowed, so object arrays can be written)."""
    with path.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return path


def valid_arrays(n: int = 20) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32]]:
    """A small valid data set: x as float64, y as int32 (the loader converts both)."""
    rng = np.random.default_rng(7)
    return rng.random((n, 64)), (np.arange(n) % NUM_CLASSES).astype(np.int32)


class TouchOnUnpickle:
    """An object whose unpickling creates a file: proof that something was unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (pathlib.Path.touch, (self.target,))


# --- the train/evaluation split -------------------------------------------------------------


def test_split_is_deterministic() -> None:
    """Recomputing the split (bypassing the cache) gives identical arrays."""
    train, evaluation = load_task_split(DEFAULT_TASK)
    train2, evaluation2 = load_task_split.__wrapped__(DEFAULT_TASK)
    assert np.array_equal(train.x, train2.x) and np.array_equal(train.y, train2.y)
    assert np.array_equal(evaluation.x, evaluation2.x)
    assert np.array_equal(evaluation.y, evaluation2.y)


def test_split_is_disjoint() -> None:
    """No sample is in both the training and the evaluation split."""
    train, evaluation = load_task_split(DEFAULT_TASK)
    assert len(rows(all_digits())) == len(all_digits())  # every sample distinct
    assert not set(rows(train)) & set(rows(evaluation))


def test_split_covers_the_whole_data_set() -> None:
    """Training and evaluation splits together are exactly the bundled data set."""
    train, evaluation = load_task_split(DEFAULT_TASK)
    assert rows(train) + rows(evaluation) == rows(all_digits())


def test_split_is_shuffled() -> None:
    """The evaluation split is not simply the first samples of the data set."""
    _, evaluation = load_task_split(DEFAULT_TASK)
    everything = all_digits()
    assert not np.array_equal(evaluation.x, everything.x[: len(evaluation)])


def test_eval_fraction_matches() -> None:
    """The evaluation split holds eval_fraction_ppm of the data set."""
    train, evaluation = load_task_split(DEFAULT_TASK)
    total = len(train) + len(evaluation)
    assert total == 1797
    assert len(evaluation) == round(total * DEFAULT_TASK.eval_fraction_ppm / 1_000_000)


def test_other_eval_fraction_matches() -> None:
    """A task with a 10% evaluation fraction holds out 10% of the data set."""
    task = dataclasses.replace(DEFAULT_TASK, eval_fraction_ppm=100_000)
    train, evaluation = load_task_split(task)
    assert (len(train), len(evaluation)) == (1797 - 180, 180)


def test_split_seed_changes_the_split() -> None:
    """Another split seed selects another evaluation set."""
    task = dataclasses.replace(DEFAULT_TASK, split_seed=b"another-seed")
    _, evaluation = load_task_split(DEFAULT_TASK)
    _, other = load_task_split(task)
    assert rows(evaluation) != rows(other)


@pytest.mark.parametrize("fraction", [1, 999_999], ids=["no evaluation", "no training"])
def test_empty_split_rejected(fraction: int) -> None:
    """A fraction that rounds to an empty evaluation or training split is a ConfigError."""
    task = dataclasses.replace(DEFAULT_TASK, eval_fraction_ppm=fraction)
    with pytest.raises(ConfigError, match="empty split"):
        load_task_split(task)


# --- miner shards ---------------------------------------------------------------------------


def test_iid_shards_partition_the_train_split() -> None:
    """The shards digits:I/N for I < N are exactly the training split, without overlap."""
    train, _ = load_task_split(DEFAULT_TASK)
    shards = [load_miner_data(f"digits:{i}/{SHARDS}", DEFAULT_TASK) for i in range(SHARDS)]
    assert sum(len(s) for s in shards) == len(train)
    assert sum((rows(s) for s in shards), Counter()) == rows(train)


def test_iid_shards_are_balanced() -> None:
    """IID shards differ in size by at most one and each holds every label."""
    shards = [load_miner_data(f"digits:{i}/{SHARDS}", DEFAULT_TASK) for i in range(SHARDS)]
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    for part in shards:
        assert set(part.y.tolist()) == set(range(NUM_CLASSES))


def test_iid_shards_have_similar_label_distributions() -> None:
    """IID shards' label distributions are close to one another."""
    shards = [load_miner_data(f"digits:{i}/{SHARDS}", DEFAULT_TASK) for i in range(SHARDS)]
    first = label_distribution(shards[0])
    for part in shards[1:]:
        assert 0.5 * np.abs(label_distribution(part) - first).sum() < 0.1


def test_noniid_shards_partition_the_train_split() -> None:
    """The shards digits:I/N:noniid are also exactly the training split."""
    train, _ = load_task_split(DEFAULT_TASK)
    shards = [load_miner_data(f"digits:{i}/{SHARDS}:noniid", DEFAULT_TASK) for i in range(SHARDS)]
    assert sum((rows(s) for s in shards), Counter()) == rows(train)


def test_noniid_shards_have_few_labels() -> None:
    """Each non-IID shard of three holds at most half of the ten labels."""
    for i in range(SHARDS):
        part = load_miner_data(f"digits:{i}/{SHARDS}:noniid", DEFAULT_TASK)
        assert len(set(part.y.tolist())) <= NUM_CLASSES // 2


def test_noniid_shards_have_different_label_distributions() -> None:
    """Non-IID shards' label distributions are far apart (total variation above 0.7)."""
    shards = [load_miner_data(f"digits:{i}/{SHARDS}:noniid", DEFAULT_TASK) for i in range(SHARDS)]
    for a in range(SHARDS):
        for b in range(a + 1, SHARDS):
            distance = 0.5 * np.abs(label_distribution(shards[a]) - label_distribution(shards[b]))
            assert distance.sum() > 0.7


def test_single_shard_is_the_train_split() -> None:
    """digits:0/1 is the whole training split."""
    train, _ = load_task_split(DEFAULT_TASK)
    part = load_miner_data("digits:0/1", DEFAULT_TASK)
    assert np.array_equal(part.x, train.x) and np.array_equal(part.y, train.y)


@pytest.mark.parametrize(
    "spec",
    [
        "digits:3/3",
        "digits:5/3",
        "digits:0/0",
        "digits:a/b",
        "digits:1",
        "digits:",
        "digits:-1/3",
        "digits:1/3:iid",
        "digits:1/3:noniid:x",
        "digits: 1/3",
        "digits:1234567/9999999",
    ],
)
def test_bad_shard_spec_rejected(spec: str) -> None:
    """A malformed or out-of-range digits spec is a TaskDataError."""
    with pytest.raises(TaskDataError):
        load_miner_data(spec, DEFAULT_TASK)


def test_too_many_shards_rejected() -> None:
    """A shard left empty because there are more shards than samples is a TaskDataError."""
    with pytest.raises(TaskDataError, match="empty"):
        load_miner_data("digits:2000/5000", DEFAULT_TASK)


def test_shard_count_zero_rejected() -> None:
    """shard() refuses a shard count of zero."""
    train, _ = load_task_split(DEFAULT_TASK)
    with pytest.raises(TaskDataError, match="at least 1"):
        shard(train, 0, 0)


# --- user data files ------------------------------------------------------------------------


def test_valid_npz_loads(tmp_path: Path) -> None:
    """A valid .npz loads with x as float32 and y as int64, values unchanged."""
    x, y = valid_arrays()
    loaded = load_npz(write_npz(tmp_path / "d.npz", x=x, y=y))
    assert loaded.x.dtype == np.float32 and loaded.y.dtype == np.int64
    assert np.array_equal(loaded.x, x.astype(np.float32))
    assert np.array_equal(loaded.y, y)


def test_npz_path_as_miner_data(tmp_path: Path) -> None:
    """load_miner_data treats a spec that is not digits:... as a path to an .npz file."""
    x, y = valid_arrays()
    path = write_npz(tmp_path / "d.npz", x=x, y=y)
    assert len(load_miner_data(str(path), DEFAULT_TASK)) == len(y)


def test_missing_file_rejected(tmp_path: Path) -> None:
    """A path that does not exist is a TaskDataError naming the file."""
    with pytest.raises(TaskDataError, match="cannot read"):
        load_npz(tmp_path / "absent.npz")


@pytest.mark.parametrize("present", ["x", "y"])
def test_missing_array_rejected(tmp_path: Path, present: str) -> None:
    """An .npz without x or without y is a TaskDataError naming the missing array."""
    x, y = valid_arrays()
    path = write_npz(tmp_path / "d.npz", **{present: x if present == "x" else y})
    absent = "y" if present == "x" else "x"
    with pytest.raises(TaskDataError, match=f"lacks array\\(s\\) {absent}"):
        load_npz(path)


@pytest.mark.parametrize("shape", [(20, 63), (20, 65), (20,), (20, 8, 8)])
def test_wrong_x_shape_rejected(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """x must be n x 64."""
    _, y = valid_arrays()
    path = write_npz(tmp_path / "d.npz", x=np.zeros(shape), y=y)
    with pytest.raises(TaskDataError, match="x must have shape"):
        load_npz(path)


@pytest.mark.parametrize("length", [19, 21])
def test_y_length_mismatch_rejected(tmp_path: Path, length: int) -> None:
    """y must have one label per row of x."""
    x, _ = valid_arrays()
    path = write_npz(tmp_path / "d.npz", x=x, y=np.zeros(length, dtype=np.int64))
    with pytest.raises(TaskDataError, match="y must have shape"):
        load_npz(path)


@pytest.mark.parametrize("bad_label", [-1, 10, 255])
def test_label_out_of_range_rejected(tmp_path: Path, bad_label: int) -> None:
    """Labels outside 0..9 are a TaskDataError."""
    x, y = valid_arrays()
    y = y.astype(np.int64)
    y[3] = bad_label
    with pytest.raises(TaskDataError, match="labels must be in"):
        load_npz(write_npz(tmp_path / "d.npz", x=x, y=y))


def test_float_labels_rejected(tmp_path: Path) -> None:
    """Labels must be integers, not floats."""
    x, y = valid_arrays()
    with pytest.raises(TaskDataError, match="integer labels"):
        load_npz(write_npz(tmp_path / "d.npz", x=x, y=y.astype(np.float64)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_x_rejected(tmp_path: Path, value: float) -> None:
    """A NaN or infinite feature is a TaskDataError."""
    x, y = valid_arrays()
    x[5, 17] = value
    with pytest.raises(TaskDataError, match="NaN or infinite"):
        load_npz(write_npz(tmp_path / "d.npz", x=x, y=y))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_x_overflowing_float32_rejected(tmp_path: Path) -> None:
    """A float64 feature too large for float32 becomes infinite and is refused."""
    x, y = valid_arrays()
    x[0, 0] = 1e300
    with pytest.raises(TaskDataError, match="NaN or infinite"):
        load_npz(write_npz(tmp_path / "d.npz", x=x, y=y))


def test_string_x_rejected(tmp_path: Path) -> None:
    """Features must be real numbers."""
    _, y = valid_arrays()
    x = np.full((20, 64), "a")
    with pytest.raises(TaskDataError, match="real numbers"):
        load_npz(write_npz(tmp_path / "d.npz", x=x, y=y))


def test_object_array_refused_without_unpickling(tmp_path: Path) -> None:
    """An object array (stored as a pickle) is refused and never unpickled."""
    target = tmp_path / "pwned"
    x = np.empty((1, 64), dtype=object)
    x[0, 0] = TouchOnUnpickle(target)
    path = write_npz(tmp_path / "d.npz", x=x, y=np.zeros(1, dtype=np.int64))
    with pytest.raises(TaskDataError, match="pickles"):
        load_npz(path)
    assert not target.exists()


def test_raw_pickle_file_refused_without_unpickling(tmp_path: Path) -> None:
    """A plain pickle named .npz (which np.load would unpickle if allowed) is refused."""
    target = tmp_path / "pwned"
    path = tmp_path / "d.npz"
    path.write_bytes(pickle.dumps(TouchOnUnpickle(target)))
    with pytest.raises(TaskDataError):
        load_npz(path)
    assert not target.exists()


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload used above does create its file when unpickled."""
    target = tmp_path / "touched"
    pickle.loads(pickle.dumps(TouchOnUnpickle(target)))
    assert target.exists()


def test_not_a_zip_rejected(tmp_path: Path) -> None:
    """A file that is neither an .npz nor an .npy is a TaskDataError."""
    path = tmp_path / "d.npz"
    path.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(TaskDataError, match="not a valid .npz"):
        load_npz(path)


def test_truncated_zip_rejected(tmp_path: Path) -> None:
    """An .npz cut short is a TaskDataError."""
    x, y = valid_arrays()
    path = write_npz(tmp_path / "d.npz", x=x, y=y)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TaskDataError):
        load_npz(path)


def test_single_npy_rejected(tmp_path: Path) -> None:
    """A lone .npy array (not an archive of x and y) is a TaskDataError."""
    path = tmp_path / "d.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((3, 64)))
    with pytest.raises(TaskDataError, match="not a valid .npz"):
        load_npz(path)


def test_directory_rejected(tmp_path: Path) -> None:
    """A directory in place of the data file is a TaskDataError."""
    path = tmp_path / "d.npz"
    path.mkdir()
    with pytest.raises(TaskDataError):
        load_npz(path)


def test_empty_arrays_rejected(tmp_path: Path) -> None:
    """A data file with no samples is a TaskDataError."""
    path = write_npz(tmp_path / "d.npz", x=np.zeros((0, 64)), y=np.zeros(0, dtype=np.int64))
    with pytest.raises(TaskDataError, match="empty"):
        load_npz(path)


def test_oversize_file_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file larger than MAX_DATA_FILE_BYTES is refused before it is parsed."""
    x, y = valid_arrays()
    path = write_npz(tmp_path / "d.npz", x=x, y=y)
    monkeypatch.setattr(data_module, "MAX_DATA_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(TaskDataError, match="over"):
        load_npz(path)


def test_file_at_size_limit_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file exactly MAX_DATA_FILE_BYTES long is accepted."""
    x, y = valid_arrays()
    path = write_npz(tmp_path / "d.npz", x=x, y=y)
    monkeypatch.setattr(data_module, "MAX_DATA_FILE_BYTES", path.stat().st_size)
    assert len(load_npz(path)) == len(y)


def test_file_expanding_beyond_limit_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed .npz whose members expand beyond MAX_DATA_ARRAY_BYTES is refused unread."""
    path = tmp_path / "d.npz"
    with path.open("wb") as handle:
        np.savez_compressed(handle, x=np.zeros((1000, 64)), y=np.zeros(1000, dtype=np.int64))
    assert path.stat().st_size < 64_000
    monkeypatch.setattr(data_module, "MAX_DATA_ARRAY_BYTES", 64 * 8 * 1000)
    with pytest.raises(TaskDataError, match="expands to"):
        load_npz(path)


def test_compressed_npz_loads(tmp_path: Path) -> None:
    """An .npz written by savez_compressed loads like an uncompressed one."""
    x, y = valid_arrays()
    path = tmp_path / "d.npz"
    with path.open("wb") as handle:
        np.savez_compressed(handle, x=x, y=y)
    assert np.array_equal(load_npz(path).x, x.astype(np.float32))


def npy_bytes(array: npt.NDArray[np.generic], shape: tuple[int, ...] | None = None) -> bytes:
    """An .npy file of ``array``, its header optionally declaring another ``shape``."""
    header = np.lib.format.header_data_from_array_1_0(array)
    if shape is not None:
        header["shape"] = shape
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(array.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("rows", [10**6, 10**9], ids=["short data", "beyond memory"])
def test_lying_array_header_rejected(tmp_path: Path, rows: int) -> None:
    """An .npy header declaring far more data than its member holds is a TaskDataError."""
    x, y = valid_arrays()
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_bytes(x, shape=(rows, 64)))
        archive.writestr("y.npy", npy_bytes(y))
    with pytest.raises(TaskDataError):
        load_npz(path)


def test_handmade_archive_loads(tmp_path: Path) -> None:
    """Control: the same archive with truthful headers loads."""
    x, y = valid_arrays()
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_bytes(x))
        archive.writestr("y.npy", npy_bytes(y))
    assert len(load_npz(path)) == len(y)
