"""Tests for the task specification (derelayl_chain/learning/task.py)."""

from __future__ import annotations

import dataclasses

import pytest

from derelayl_chain.encoding import Item, decode, encode, encode_uint
from derelayl_chain.exceptions import ConfigError, DecodeError
from derelayl_chain.learning.model import parameter_count
from derelayl_chain.learning.task import (
    BUILTIN_TASKS,
    DEFAULT_TASK,
    LARGE_TASK,
    MAX_PARAMETERS,
    MAX_WIDTH,
    TaskSpec,
)

LIMIT = 1 << 16


def default_fields() -> list[Item]:
    """The default task's encoded fields, as a fresh list a test may break."""
    return DEFAULT_TASK.to_item()


@pytest.mark.parametrize("task", [DEFAULT_TASK, LARGE_TASK], ids=lambda t: t.name)
def test_item_round_trip(task: TaskSpec) -> None:
    """A built-in task survives to_item/from_item unchanged."""
    assert TaskSpec.from_item(task.to_item()) == task


@pytest.mark.parametrize("task", [DEFAULT_TASK, LARGE_TASK], ids=lambda t: t.name)
def test_bytes_round_trip(task: TaskSpec) -> None:
    """A built-in task survives the canonical byte encoding unchanged."""
    assert TaskSpec.from_item(decode(encode(task.to_item()), LIMIT)) == task


def test_different_tasks_encode_differently() -> None:
    """The encoding keeps every field: the two built-in tasks do not collide."""
    assert encode(DEFAULT_TASK.to_item()) != encode(LARGE_TASK.to_item())


@pytest.mark.parametrize("count", [0, 6, 8])
def test_wrong_field_count_rejected(count: int) -> None:
    """A task item with other than seven fields is a DecodeError."""
    fields = (default_fields() + [b"extra"])[:count]
    with pytest.raises(DecodeError, match="7 fields"):
        TaskSpec.from_item(fields)


def test_task_as_byte_string_rejected() -> None:
    """A byte string where the task list belongs is a DecodeError."""
    with pytest.raises(DecodeError, match="list"):
        TaskSpec.from_item(b"digits-mlp")


@pytest.mark.parametrize("index", [0, 1, 6], ids=["name", "dataset", "loss"])
def test_invalid_utf8_text_rejected(index: int) -> None:
    """Name, dataset and loss must be valid UTF-8."""
    fields = default_fields()
    fields[index] = b"digits-\xff"
    with pytest.raises(DecodeError, match="UTF-8"):
        TaskSpec.from_item(fields)


def test_utf8_name_round_trip() -> None:
    """A task name in UTF-8 beyond ASCII survives the encoding."""
    task = dataclasses.replace(DEFAULT_TASK, name="chiffres-\u00e9")
    assert TaskSpec.from_item(decode(encode(task.to_item()), LIMIT)) == task


def test_overlong_name_rejected() -> None:
    """A task name over 64 bytes is a DecodeError."""
    fields = default_fields()
    fields[0] = b"n" * 65
    with pytest.raises(DecodeError, match="task name"):
        TaskSpec.from_item(fields)


def test_no_hidden_layers_rejected() -> None:
    """A model without hidden layers is not a task the protocol accepts."""
    fields = default_fields()
    fields[2] = []
    with pytest.raises(DecodeError, match="hidden layers"):
        TaskSpec.from_item(fields)


def test_too_many_hidden_layers_rejected() -> None:
    """More than eight hidden layers is a DecodeError."""
    fields = default_fields()
    fields[2] = [encode_uint(8)] * 9
    with pytest.raises(DecodeError, match="hidden layers"):
        TaskSpec.from_item(fields)


def test_eight_hidden_layers_accepted() -> None:
    """Eight hidden layers is the largest depth accepted."""
    task = dataclasses.replace(DEFAULT_TASK, hidden=(8,) * 8)
    assert TaskSpec.from_item(task.to_item()).hidden == (8,) * 8


def test_oversized_hidden_width_rejected() -> None:
    """A hidden width wider than four bytes is a DecodeError."""
    fields = default_fields()
    fields[2] = [b"\x01" + b"\x00" * 4]
    with pytest.raises(DecodeError, match="hidden width"):
        TaskSpec.from_item(fields)


def test_non_canonical_width_rejected() -> None:
    """A hidden width with a leading zero byte is not canonical."""
    fields = default_fields()
    fields[2] = [b"\x00\x20"]
    with pytest.raises(DecodeError, match="leading zero"):
        TaskSpec.from_item(fields)


def test_overlong_seed_rejected() -> None:
    """A split seed over 64 bytes is a DecodeError."""
    fields = default_fields()
    fields[4] = b"s" * 65
    with pytest.raises(DecodeError, match="split seed"):
        TaskSpec.from_item(fields)


def test_large_task_has_about_a_million_parameters() -> None:
    """The benchmark task's model has about 10^6 parameters."""
    assert 900_000 <= parameter_count(LARGE_TASK) <= 1_100_000


def test_default_task_is_small() -> None:
    """The default task's model is small enough to train in well under a second."""
    assert parameter_count(DEFAULT_TASK) < 10_000


def test_builtin_tasks_are_keyed_by_name() -> None:
    """BUILTIN_TASKS finds each built-in task under its own name."""
    assert {DEFAULT_TASK.name: DEFAULT_TASK, LARGE_TASK.name: LARGE_TASK} == BUILTIN_TASKS


# --- tasks no node could run ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"loss": "mse"}, "unknown loss 'mse'"),
        ({"name": ""}, "task name must be 1 to 64 bytes"),
        ({"name": "\ud800"}, "not valid UTF-8"),
        ({"hidden": ()}, "1 to 8 hidden layers"),
        ({"hidden": (32, 0)}, "hidden widths must be 1 to"),
        ({"hidden": (MAX_WIDTH + 1,)}, "hidden widths must be 1 to"),
        ({"hidden": (4096, 4096)}, f"parameters, over {MAX_PARAMETERS}"),
        ({"eval_fraction_ppm": 0}, "strictly between 0 and 1000000"),
        ({"eval_fraction_ppm": 1_000_000}, "strictly between 0 and 1000000"),
        ({"init_seed": b"s" * 65}, "init seed is 65 bytes"),
    ],
    ids=[
        "dataset",
        "loss",
        "empty name",
        "surrogate",
        "no layers",
        "zero width",
        "too wide",
        "too many parameters",
        "no evaluation",
        "all evaluation",
        "long seed",
    ],
)
def test_impossible_task_refused(changes: dict[str, object], match: str) -> None:
    """Constructing a task no node could run is a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(DEFAULT_TASK, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (1, b"mnist", "unknown dataset"),
        (6, b"mse", "unknown loss"),
        (2, [b"\x20", b""], "hidden widths"),
        (3, b"", "evaluation fraction"),
        (3, encode_uint(1_000_000), "evaluation fraction"),
    ],
    ids=["dataset", "loss", "zero width", "no evaluation", "all evaluation"],
)
def test_impossible_task_item_rejected(index: int, value: Item, match: str) -> None:
    """Decoding a task that could not run raises DecodeError (not ConfigError)."""
    fields = default_fields()
    fields[index] = value
    with pytest.raises(DecodeError, match=match):
        TaskSpec.from_item(fields)


def test_widest_layer_accepted() -> None:
    """A hidden layer exactly MAX_WIDTH wide is accepted."""
    assert dataclasses.replace(DEFAULT_TASK, hidden=(MAX_WIDTH,)).hidden == (MAX_WIDTH,)
