"""Fixtures of the functional tests: node factories that always clean up their processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.framework import TestNode


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., TestNode]]:
    """``make_node(**options)`` creates (not starts) a node; all are stopped at teardown."""
    nodes: list[TestNode] = []

    def factory(**options: Any) -> TestNode:
        node = TestNode(len(nodes), tmp_path, **options)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.stop()
