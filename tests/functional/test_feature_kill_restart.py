"""A miner killed with SIGKILL and restarted rejoins with every block it had."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.framework import TestNode, sync_blocks, write_fast_genesis

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_killed_miner_restarts_with_its_blocks_and_rejoins(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """After kill -9 the node reopens its store, keeps its chain and syncs to its peer."""
    genesis = write_fast_genesis(tmp_path / "genesis.json")
    victim = make_node(genesis=genesis, data="digits:0/2").start()
    other = make_node(genesis=genesis, data="digits:1/2", peers=[victim]).start()
    victim.wait_height(8)
    sync_blocks([victim, other])
    height = victim.height()
    before = {h: victim.hash_at(h) for h in range(1, height + 1)}
    victim.kill()
    victim.start()
    assert victim.height() >= height  # every block it reported was synced to disk
    for block_hash in before.values():
        code, _ = victim.get(f"/blocks/{block_hash}")
        assert code == 200, f"block {block_hash} lost by the kill"
    other.wait_height(height + 3)
    sync_blocks([victim, other])
    for h in range(1, height + 1):
        assert victim.hash_at(h) == other.hash_at(h)
