"""The wallet side of the wallet functional tests: ``derelayl-wallet`` run as a real process.

Every command runs as ``python -m wallet`` (what the ``derelayl-wallet`` script runs) with
explicit ``--node``, ``--keystore`` and ``--password-file``, so nothing from the environment or
the home directory leaks in, and with a timeout, so a hung command fails the test instead of
the run. Nodes are the framework's :class:`TestNode`; the helpers here read them as a wallet
test needs: answers that must succeed, and readings taken while no block arrives.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from derelayl_chain.genesis import devnet_genesis, write_genesis
from tests.functional.framework import ROOT, TestNode, clean_env, scaled, wait_for

COMMAND_TIMEOUT_S = 60.0
"""Limit for one wallet command (before scaling); ``--wait`` commands pass their own."""
PASSWORD = "correct horse battery staple"
STEADY_DECAY_MS = 4_000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Wallet:
    """One keystore and its password file, used against one node."""

    keystore: Path
    password_file: Path
    node_url: str

    def run(
        self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``derelayl-wallet --node --keystore --password-file ARGS``, whatever its exit code."""
        command = [
            sys.executable, "-m", "wallet", "--node", self.node_url, "--keystore",
            str(self.keystore), "--password-file", str(self.password_file), *args,
        ]  # fmt: skip
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=scaled(timeout_s),
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def json(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """The JSON document a successful ``ARGS --json`` prints."""
        result = self.run(*args, "--json", timeout_s=timeout_s)
        assert result.returncode == 0, f"{args}: exit {result.returncode}: {result.stderr}"
        document = json.loads(result.stdout)
        assert isinstance(document, dict), result.stdout
        return document

    def with_node(self, node_url: str) -> Wallet:
        return Wallet(self.keystore, self.password_file, node_url)


def write_password_file(path: Path, password: str = PASSWORD) -> Path:
    """A password file as a user would write it: the password and a newline, mode 0600."""
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def new_wallet(directory: Path, name: str, node_url: str) -> tuple[Wallet, str]:
    """Create a keystore with ``derelayl-wallet new``; the wallet and its address."""
    directory.mkdir(parents=True, exist_ok=True)
    wallet = Wallet(
        directory / f"{name}.json", write_password_file(directory / f"{name}.pw"), node_url
    )
    document = wallet.json("new")
    address = document["address"]
    assert isinstance(address, str) and address.startswith("drl1"), document
    return wallet, address


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and one ``error:`` line on stderr, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result.stdout
    return lines[0]


def wait_until(
    probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something other than None (:func:`wait_for`); that."""
    found: list[T] = []

    def probed() -> bool:
        value = probe()
        if value is not None:
            found.append(value)
        return bool(found)

    wait_for(probed, timeout_s, what, interval_s)
    return found[0]


def units(document: dict[str, Any], name: str) -> int:
    """An amount of a wallet or API JSON document (a decimal string of base units)."""
    value = document[name]
    assert isinstance(value, str) and value.isdigit(), (name, value)
    return int(value)


def write_steady_genesis(path: Path) -> Path:
    """The devnet genesis starting now, with a 4-second decay and the devnet's 4-second target.

    A converged chain still gets a block every few seconds, so ``--wait`` returns soon; unlike
    the framework's fast genesis, whose retargeting aims at two blocks a second, blocks stay
    far enough apart for a reading of several wallet commands to fit between two of them.
    """
    base = devnet_genesis()
    genesis = replace(
        base,
        chain_id=base.chain_id + 1,
        timestamp_ms=time.time_ns() // 1_000_000 - 1_000,
        params=replace(base.params, decay_ms=STEADY_DECAY_MS),
    )
    write_genesis(genesis, path)
    return path


# --- reading a node ---------------------------------------------------------------------------


def get_json(node: TestNode, path: str) -> dict[str, Any]:
    """The node's JSON answer to ``GET path``, which must succeed."""
    document = node.get_ok(path)
    assert isinstance(document, dict), (path, document)
    return document


def account(node: TestNode, address: str) -> dict[str, Any]:
    return get_json(node, f"/accounts/{address}")


def full_blocks(node: TestNode, first: int, last: int) -> list[dict[str, Any]]:
    """The block documents (``rewards`` included) of canonical heights first..last."""
    return [get_json(node, f"/blocks/{height}") for height in range(first, last + 1)]


def at_rest(node: TestNode, read: Callable[[], T], timeout_s: float = 60.0) -> tuple[int, T]:
    """``read()`` and the height it saw: retried until no block arrived while it ran."""

    def attempt() -> tuple[int, T] | None:
        before = node.height()
        value = read()
        return (before, value) if node.height() == before else None

    return wait_until(attempt, timeout_s, "a moment without a new block", interval_s=0.05)
