"""Fixtures of the functional tests: node factories that always clean up their processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.framework import TestNode, stop_nodes


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., TestNode]]:
    """``make_node(**options)`` creates (not starts) a node; all are stopped at teardown.

    Teardown stops every node at once (SIGTERM, then SIGKILL after the timeout) whether the
    test passed or not, and prints the end of each node's log: pytest shows it on failure.
    """
    nodes: list[TestNode] = []

    def factory(**options: Any) -> TestNode:
        node = TestNode(len(nodes), tmp_path, **options)
        nodes.append(node)
        return node

    yield factory
    stop_nodes(nodes)
    for node in nodes:
        print(f"--- {node} log {node.log_path} (end) ---\n{node.log_tail(15)}")
