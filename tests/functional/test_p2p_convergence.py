"""Several miners, each on its own shard, converge on one chain."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.functional.framework import TestNode, sync_blocks

pytestmark = [pytest.mark.functional]


def test_three_miners_converge_on_one_chain(make_node: Callable[..., TestNode]) -> None:
    """Three peered miners extend one chain: after a few blocks they share the same tip."""
    first = make_node(data="digits:0/3").start()
    others = [make_node(data=f"digits:{i}/3", peers=[first]).start() for i in (1, 2)]
    nodes = [first, *others]
    for node in nodes:
        node.wait_height(6)
    tip = sync_blocks(nodes)
    heights = {node.height() for node in nodes}
    assert len(heights) == 1
    proposers = set()
    for height in range(1, max(heights) + 1):
        _, block = first.get(f"/blocks/{height}")
        proposers.add(block["proposer"])
    assert tip == first.head()
    assert len(proposers) >= 2, "more than one miner should have proposed blocks"
