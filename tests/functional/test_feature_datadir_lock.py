"""Two nodes are refused on one data directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.functional.framework import TestNode, clean_env, free_port, scaled

pytestmark = [pytest.mark.functional]


def test_second_node_on_same_data_dir_is_refused(make_node: Callable[..., TestNode]) -> None:
    """The second process exits 1 with one line naming the lock; the first keeps serving."""
    first = make_node(mine=False).start()
    command = first.command()
    command[command.index("--port") + 1] = str(free_port())
    second = subprocess.run(
        command, capture_output=True, text=True, timeout=scaled(60), env=clean_env(), check=False
    )
    assert second.returncode == 1, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "already in use" in lines[0] or "lock" in lines[0]
    assert "Traceback" not in second.stderr
    assert first.running
    assert first.status()["height"] >= 0
