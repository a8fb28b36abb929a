"""Several miners, each on its own shard, converge on one chain."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.functional.framework import TestNode, start_nodes, sync_blocks, wait_for, wait_height

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def proposers(node: TestNode) -> set[str]:
    """Addresses that proposed a block of ``node``'s best chain (up to its first 100)."""
    code, page = node.get("/blocks?from=1&limit=100")
    return {item["proposer"] for item in page["items"]} if code == 200 else set()


def test_three_miners_converge_on_one_chain(make_node: Callable[..., TestNode]) -> None:
    """Three miners started together extend one chain: two or more propose, one tip for all."""
    first = make_node(data="digits:0/3")
    nodes = [first, *(make_node(data=f"digits:{i}/3", peers=[first]) for i in (1, 2))]
    start_nodes(nodes)
    wait_for(lambda: len(proposers(first)) >= 2, 90, "blocks from a second miner")
    for node in nodes:
        wait_height(node, 6)
    tip = sync_blocks(nodes)
    for node in nodes:
        block = node.get_ok(f"/blocks/{tip}")
        assert block["height"] >= 6
    assert len({node.status()["address"] for node in nodes}) == 3  # three distinct miners
