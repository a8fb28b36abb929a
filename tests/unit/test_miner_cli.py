"""Tests for the ``derelayl-miner`` command (miner/cli.py): genesis, start, errors, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from derelayl_chain.genesis import load_genesis, write_genesis
from derelayl_chain.learning.evaluate import evaluate
from derelayl_chain.learning.model import initial_weights
from derelayl_chain.learning.weights import model_hash
from derelayl_chain.storage.leveldb import LevelDBStore
from miner.cli import main
from tests.unit.node_helpers import ALICE, TASK, make_genesis

ROOT = Path(__file__).resolve().parents[2]


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command in-process; its exit code, stdout and stderr."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("derelayl-miner: error: ")
    assert "Traceback" not in err


# --- genesis ------------------------------------------------------------------------------


def test_genesis_writes_a_file_nodes_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """genesis writes the task, parameters, allocations and the initial model's hash and loss."""
    out = tmp_path / "genesis.json"
    args = ["genesis", "--out", str(out), "--chain-id", "31", "--alloc", f"{ALICE.address}=1.5",
            "--alloc", f"{ALICE.address}=2", "--decay-ms", "5000", "--open-model"]  # fmt: skip
    code, stdout, _ = run_main(args, capsys)
    assert code == 0
    genesis = load_genesis(out)
    assert genesis.chain_id == 31
    assert genesis.allocations == ((ALICE.account, 3_500_000_000),)
    assert genesis.params.decay_ms == 5000 and genesis.params.model_open is True
    weights = initial_weights(TASK)
    assert genesis.initial_loss == evaluate(TASK, weights).loss
    assert genesis.initial_model_hash == model_hash(weights)
    assert genesis.hash.hex() in stdout


def test_genesis_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing file is kept unless --force is given (exit 2, one line)."""
    out = tmp_path / "genesis.json"
    out.write_text("keep me")
    code, _, err = run_main(["genesis", "--out", str(out)], capsys)
    assert code == 2 and out.read_text() == "keep me"
    assert_one_line_error(err)


@pytest.mark.parametrize(
    "extra",
    [
        ["--alloc", "drl1bad=1"],
        ["--alloc", f"{ALICE.address}=1.0000000001"],
        ["--alloc", f"{ALICE.address}"],
        ["--min-difficulty", "0"],
        ["--task", "imagenet"],
        ["--decay-ms", "-5"],
    ],
)
def test_genesis_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    """Bad allocations, parameters or task names exit 2 with one line and write nothing."""
    out = tmp_path / "genesis.json"
    code, _, err = run_main(["genesis", "--out", str(out), *extra], capsys)
    assert code == 2
    assert_one_line_error(err)
    assert not out.exists()


# --- start --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def genesis_file(tmp_path: Path) -> Path:
    path = tmp_path / "genesis.json"
    write_genesis(make_genesis(decay_ms=3_600_000), path)
    return path


def start_args(tmp_path: Path, genesis_file: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "miner", "start", "--data-dir", str(tmp_path / "node"),
            "--genesis", str(genesis_file), "--port", str(port), *extra]  # fmt: skip


def run_start(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--data", "digits:3/2"], "shard"), (["--log-format", "xml"], "log_format")],
)
def test_start_rejects_bad_input_with_exit_2(
    tmp_path: Path, genesis_file: Path, extra: list[str], message: str
) -> None:
    """Bad flags or data exit 2 with one line on stderr, never a traceback."""
    result = run_start(start_args(tmp_path, genesis_file, free_port(), *extra))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert message in result.stderr


def test_start_on_a_locked_data_dir_exits_1(tmp_path: Path, genesis_file: Path) -> None:
    """A data directory held by another node is a runtime failure: exit 1, one line."""
    with LevelDBStore(tmp_path / "node"):
        result = run_start(start_args(tmp_path, genesis_file, free_port(), "--no-mine"))
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "lock" in result.stderr.lower()


def test_start_on_a_taken_port_exits_1(tmp_path: Path, genesis_file: Path) -> None:
    """A port in use is a runtime failure: exit 1, one line naming the address."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_start(start_args(tmp_path, genesis_file, port, "--no-mine"))
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert f"127.0.0.1:{port}" in result.stderr


def get_status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as response:
            status: dict[str, Any] = json.load(response)
            return status
    except OSError:
        return None


@pytest.fixture
def process(tmp_path: Path, genesis_file: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A mining node process logging JSON, killed if a test leaves it running."""
    port = free_port()
    args = start_args(tmp_path, genesis_file, port, "--log-format", "json")
    env = {**os.environ, "DERELAYL_DATA": "digits:0/2"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_node_mines_and_stops_cleanly_on_sigterm(
    tmp_path: Path, process: tuple[subprocess.Popen[str], int]
) -> None:
    """A started node serves the API and mines; SIGTERM stops it with exit 0 and frees the
    data directory and the port; its logs are one JSON object per line."""
    proc, port = process
    deadline = time.monotonic() + 45
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        status = get_status(port)
        if status is not None and status["height"] >= 1:
            break
        time.sleep(0.2)
    assert status is not None and status["height"] >= 1, status
    assert status["mining"] is True
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.strip()]
    assert "block_mined" in events and events[-1] == "node_stopped"
    with LevelDBStore(tmp_path / "node"):
        pass  # the lock was released
    with socket.create_server(("127.0.0.1", port)):
        pass  # so was the port
