"""A node started late catches up a long chain, headers first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.functional.framework import TestNode, sync_blocks, wait_height, write_fast_genesis

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_late_node_catches_up_thirty_blocks(
    make_node: Callable[..., TestNode], tmp_path: Path
) -> None:
    """A non-mining node started after 30 blocks syncs headers first to the same chain."""
    genesis = write_fast_genesis(tmp_path / "genesis.json", decay_ms=500)
    miner = make_node(genesis=genesis).start()
    wait_height(miner, 30, timeout=150)
    late = make_node(genesis=genesis, mine=False, peers=[miner]).start()
    wait_height(late, 30, timeout=90)
    tip = sync_blocks([miner, late])
    height = late.get_ok(f"/blocks/{tip}")["height"]
    assert [late.hash_at(h) for h in range(1, height + 1)] == [
        miner.hash_at(h) for h in range(1, height + 1)
    ]
    assert late.status()["mining"] is False
    catch_ups = late.log_events("caught_up")
    assert catch_ups and int(catch_ups[0]["height"]) >= 30, "no headers-first catch-up"
