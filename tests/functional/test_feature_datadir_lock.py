"""Two nodes are refused on one data directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.framework import TestNode, clean_env, free_port, scaled, write_fast_genesis

pytestmark = [pytest.mark.functional]


def test_second_node_on_same_data_dir_is_refused(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """The second process exits 1 with one line naming the held lock; the first serves on."""
    first = make_node(genesis=write_fast_genesis(tmp_path / "genesis.json"), mine=False).start()
    assert first.process is not None
    command = first.command()
    command[command.index("--port") + 1] = str(free_port())
    second = subprocess.run(
        command, capture_output=True, text=True, timeout=scaled(60), env=clean_env(),
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip

    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("derelayl-miner: error: data directory ")
    assert str(first.data_dir) in lines[0]
    assert "already in use by another node" in lines[0]
    assert f"pid {first.process.pid}" in lines[0]
    assert first.running and first.status()["height"] == 0  # unharmed: still serving
    assert first.stop() == 0, first.log_tail()  # and it shuts down cleanly
