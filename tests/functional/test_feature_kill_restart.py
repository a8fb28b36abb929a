"""A miner killed with SIGKILL and restarted rejoins with every block it had."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.framework import (
    TestNode,
    start_nodes,
    sync_blocks,
    wait_height,
    write_fast_genesis,
)

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_killed_miner_restarts_with_its_blocks_and_rejoins(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """After kill -9 the node reopens its store with its whole chain and syncs to its peer."""
    genesis = write_fast_genesis(tmp_path / "genesis.json")
    other = make_node(genesis=genesis, data="digits:1/2")
    victim = make_node(genesis=genesis, data="digits:0/2", peers=[other])
    start_nodes([other, victim])
    wait_height(victim, 8)
    sync_blocks([victim, other])
    height = victim.height()
    before = {h: victim.hash_at(h) for h in range(1, height + 1)}
    victim.kill()
    victim.start()

    restarted_at = int(victim.log_events("node_started")[-1]["height"])
    assert restarted_at >= height, f"blocks were lost by the kill: {restarted_at} < {height}"
    for h, block_hash in before.items():
        code, block = victim.get(f"/blocks/{block_hash}")
        assert code == 200 and block["height"] == h, f"block {block_hash} lost by the kill"
    wait_height(other, height + 3)
    sync_blocks([victim, other])
    assert [victim.hash_at(h) for h in before] == [other.hash_at(h) for h in before]
