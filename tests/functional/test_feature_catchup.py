"""A node started late catches up a long chain, headers first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.framework import TestNode, sync_blocks, wait_for, write_fast_genesis

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_late_node_catches_up_thirty_blocks(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """A non-mining node started after 30 blocks reaches the same tip with the same hashes."""
    genesis = write_fast_genesis(tmp_path / "genesis.json")
    miner = make_node(genesis=genesis).start()
    miner.wait_height(30, timeout=180)
    late = make_node(genesis=genesis, mine=False, peers=[miner]).start()
    wait_for(lambda: late.height() >= 30, 120, "the late node to reach height 30")
    sync_blocks([miner, late])
    for height in (1, 15, 30):
        assert late.hash_at(height) == miner.hash_at(height)
    assert late.status()["mining"] is False
