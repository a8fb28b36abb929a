"""A small functional-test framework in the style of Bitcoin Core's: real node processes.

``TestNode`` wraps one ``derelayl-miner start`` process on 127.0.0.1 with its own data dir and
a free port; helpers connect nodes, wait for heights and for every node to share one tip. Every
wait is bounded; timeouts scale with ``DERELAYL_TIMEOUT_FACTOR`` for slow machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_FACTOR = float(os.environ.get("DERELAYL_TIMEOUT_FACTOR", "1") or 1)


def scaled(seconds: float) -> float:
    """A timeout stretched by ``DERELAYL_TIMEOUT_FACTOR``."""
    return seconds * TIMEOUT_FACTOR


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``predicate`` until true; fail the test after the (scaled) timeout."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {scaled(timeout):.0f} s waiting for {what}")


def clean_env() -> dict[str, str]:
    """The environment without DERELAYL_* settings: only the flags configure a node."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DERELAYL_")}


class TestNode:
    """One node process and the HTTP calls a test makes to it."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        index: int,
        directory: Path,
        *,
        mine: bool = True,
        data: str = "digits:0/1",
        peers: Sequence[TestNode] = (),
        reward_address: str | None = None,
        genesis: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.index = index
        self.data_dir = directory / f"node{index}"
        self.port = free_port()
        self.mine, self.data, self.reward_address = mine, data, reward_address
        self.genesis, self.extra_args = genesis, list(extra_args)
        self.peer_urls = [p.url for p in peers]
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / f"node{index}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            sys.executable, "-m", "miner", "start", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--data", self.data, "--log-format", "json",
        ]  # fmt: skip
        for url in self.peer_urls:
            args += ["--peer", url]
        if not self.mine:
            args.append("--no-mine")
        if self.reward_address:
            args += ["--reward-address", self.reward_address]
        if self.genesis:
            args += ["--genesis", str(self.genesis)]
        return args + self.extra_args

    def start(self, timeout: float = 60) -> TestNode:
        """Launch the process and wait until its API answers."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=ROOT, env=clean_env(),
        )  # fmt: skip
        log.close()
        wait_for(self._up, timeout, f"node {self.index} to answer /status")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"node {self.index} exited with {self.process.returncode}: {self.log_tail()}"
            )
        status, _ = self.get("/status", timeout=1.0)
        return status == 200

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the exit code (a clean shutdown is 0)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- HTTP -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """(status, body bytes); status 0 if the node did not answer."""
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=scaled(timeout)) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        status, raw = self.request("GET", path, timeout=timeout)
        return status, _json(raw)

    def post(self, path: str, document: Any, timeout: float = 10.0) -> tuple[int, Any]:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        headers = {"Content-Type": "application/json"}
        status, raw = self.request("POST", path, body, headers, timeout)
        return status, _json(raw)

    def status(self) -> dict[str, Any]:
        code, document = self.get("/status")
        assert code == 200, (code, document)
        assert isinstance(document, dict)
        return document

    def height(self) -> int:
        return int(self.status()["height"])

    def head(self) -> str:
        return str(self.status()["head"])

    def hash_at(self, height: int) -> str | None:
        code, document = self.get(f"/blocks/{height}")
        return str(document["hash"]) if code == 200 else None

    def wait_height(self, height: int, timeout: float = 120) -> None:
        wait_for(lambda: self.height() >= height, timeout, f"node {self.index} at {height}")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def connect_nodes(a: TestNode, b: TestNode) -> None:
    """Introduce two running nodes to each other (each says hello on the other's behalf)."""
    for source, target in ((a, b), (b, a)):
        status = source.status()
        hello = {
            "url": source.url,
            "genesis": status["genesis"],
            "height": status["height"],
            "node_id": secrets.token_hex(16),
        }
        code, document = target.post("/p2p/hello", hello)
        assert code == 200, (code, document)


def sync_blocks(nodes: Iterable[TestNode], timeout: float = 120) -> str:
    """Wait until every node has the same tip; return its hash."""
    nodes = list(nodes)

    def same_tip() -> bool:
        return len({node.head() for node in nodes}) == 1

    wait_for(same_tip, timeout, "all nodes to share one tip", interval=0.5)
    return nodes[0].head()


def write_fast_genesis(path: Path, allocations: dict[bytes, int] | None = None) -> Path:
    """The devnet genesis with a 2-second decay period: blocks keep coming once converged."""
    from dataclasses import replace

    from derelayl_chain.genesis import devnet_genesis, write_genesis

    base = devnet_genesis()
    genesis = replace(
        base,
        params=replace(base.params, decay_ms=2_000, target_block_ms=500),
        allocations=tuple(sorted((allocations or {}).items())),
    )
    write_genesis(genesis, path)
    return path
