"""A small functional-test framework in the style of Bitcoin Core's: real node processes.

``TestNode`` wraps one ``derelayl-miner start`` process on 127.0.0.1 with its own data dir and
port; helpers connect nodes, wait for heights and for every node to share one tip. Every wait is
bounded, and every timeout is multiplied by one factor, ``DERELAYL_TIMEOUT_FACTOR`` (e.g. 3 on
a slow machine). Ports come from a range below the kernel's ephemeral ports, at an offset
seeded per run (``DERELAYL_PORT_SEED``, default the process id), so a node's port is never taken
by some outgoing connection in between, and two test runs on one machine rarely even try the
same ports.

Typical use (the ``make_node`` fixture in ``conftest.py`` stops every node it made)::

    a = make_node(data="digits:0/2")
    b = make_node(data="digits:1/2", peers=[a])
    start_nodes([a, b])
    wait_height(a, 5)
    tip = sync_blocks([a, b])
    code, block = b.get(f"/blocks/{tip}")
"""

from __future__ import annotations

import contextlib
import ctypes
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
PORT_RANGE = (20_000, 32_000)
"""Ports handed to nodes: below Linux's ephemeral range (32768-60999) used by outgoing sockets."""
PORT_SEED = int(os.environ.get("DERELAYL_PORT_SEED", os.getpid()))
START_ATTEMPTS = 3
"""A first start that loses its port to another process is retried on a fresh port."""


def scaled(seconds: float) -> float:
    """A timeout stretched by ``DERELAYL_TIMEOUT_FACTOR``."""
    return seconds * TIMEOUT_FACTOR


# --- ports ------------------------------------------------------------------------------------


class _PortAllocator:
    """Hands out each port of ``PORT_RANGE`` once per run, starting at a per-run offset."""

    def __init__(self, seed: int) -> None:
        low, high = PORT_RANGE
        self._span = high - low
        self._next = seed * 97 % self._span

    def allocate(self) -> int:
        low, _ = PORT_RANGE
        for _ in range(self._span):
            port = low + self._next
            self._next = (self._next + 1) % self._span
            if port_is_free(port):
                return port
        raise RuntimeError(f"no free port in {PORT_RANGE}")


def port_is_free(port: int) -> bool:
    """Nobody listens on (or is bound to) ``127.0.0.1:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_PORTS = _PortAllocator(PORT_SEED)


def free_port() -> int:
    """A loopback port nobody listens on and no other node of this run was given."""
    return _PORTS.allocate()


# --- waiting ----------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 60,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.2,
) -> None:
    """Poll ``predicate`` until true; fail the test after the (scaled) timeout.

    ``what`` names the awaited condition in the failure (a callable is asked at that moment,
    so it can report the last value seen).
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {scaled(timeout):.0f} s waiting for {described}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """In a node process: SIGKILL when the test run itself dies (Linux), never an orphan."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def clean_env() -> dict[str, str]:
    """The environment without DERELAYL_* settings: only the flags configure a node."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DERELAYL_")}


# --- one node ---------------------------------------------------------------------------------


class TestNode:
    """One node process and the HTTP calls a test makes to it.

    Options are fixed at creation and may be changed between restarts (``node.mine = False``);
    ``start(extra_args)`` adds flags for one run only. The JSON log of every run is appended
    to ``log_path``.
    """

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
        self.peers = list(peers)
        """Nodes passed as ``--peer`` (their URLs are read at each start)."""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / f"node{index}.log"
        self.started_once = False

    def __repr__(self) -> str:
        return f"TestNode({self.index}, {self.url})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, extra_args: Sequence[str] = ()) -> list[str]:
        """The ``derelayl-miner start`` command line of the next run."""
        args = [
            sys.executable, "-m", "miner", "start", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--data", self.data, "--log-format", "json",
        ]  # fmt: skip
        for peer in self.peers:
            args += ["--peer", peer.url]
        if not self.mine:
            args.append("--no-mine")
        if self.reward_address:
            args += ["--reward-address", self.reward_address]
        if self.genesis:
            args += ["--genesis", str(self.genesis)]
        return [*args, *self.extra_args, *extra_args]

    # --- life cycle -----------------------------------------------------------------------

    def start(self, extra_args: Sequence[str] = (), timeout: float = 60) -> TestNode:
        """Launch the process and wait until its API answers; returns the node."""
        assert not self.running, f"node {self.index} is already running"
        for attempt in range(START_ATTEMPTS):
            self._launch(extra_args)
            try:
                wait_for(self._up, timeout, f"node {self.index} to answer /status")
                break
            except _PortTaken:
                if self.started_once or attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        self.started_once = True
        return self

    def _launch(self, extra_args: Sequence[str]) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(extra_args), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=ROOT, env=clean_env(),
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )  # fmt: skip

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            code, tail = self.process.returncode, self.log_tail()
            self.process = None
            if "address already in use" in tail:
                raise _PortTaken(tail)
            raise AssertionError(f"node {self.index} exited with {code}:\n{tail}")
        status, _ = self.get("/status", timeout=1.0)
        return status == 200

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the exit code (a clean shutdown is 0); SIGKILL if it hangs."""
        self.signal_stop()
        return self.wait_stopped(timeout)

    def signal_stop(self) -> None:
        """Send SIGTERM without waiting (to stop several nodes at once)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30) -> int:
        """Wait for the process after :meth:`signal_stop`; SIGKILL it after the timeout."""
        if self.process is None:
            return 0
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

    def restart(self, extra_args: Sequence[str] = (), timeout: float = 60) -> TestNode:
        """Stop cleanly (asserting exit code 0), then start again on the same port and data."""
        code = self.stop()
        assert code == 0, f"node {self.index} stopped with {code}:\n{self.log_tail()}"
        return self.start(extra_args, timeout)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log record (of every run) whose ``event`` is ``name``, oldest first."""
        events = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("event") == name:
                        events.append(record)
        return events

    # --- HTTP -----------------------------------------------------------------------------

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
        """(status, parsed JSON body) of ``GET path``; the raw bytes if it is not JSON."""
        status, raw = self.request("GET", path, timeout=timeout)
        return status, _json(raw)

    def post(self, path: str, document: Any, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, parsed JSON body) of ``POST path``; ``document`` as JSON, or raw bytes."""
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        headers = {"Content-Type": "application/json"}
        status, raw = self.request("POST", path, body, headers, timeout)
        return status, _json(raw)

    def get_ok(self, path: str) -> Any:
        """The JSON body of ``GET path``, which must answer 200."""
        code, document = self.get(path)
        assert code == 200, (self, path, code, document)
        return document

    def status(self) -> dict[str, Any]:
        document = self.get_ok("/status")
        assert isinstance(document, dict)
        return document

    def height(self) -> int:
        return int(self.status()["height"])

    def head(self) -> str:
        return str(self.status()["head"])

    def hash_at(self, height: int) -> str | None:
        """The best chain's block hash at ``height``, None if the node has no block there."""
        code, document = self.get(f"/blocks/{height}")
        return str(document["hash"]) if code == 200 else None

    def try_status(self) -> dict[str, Any] | None:
        """``/status``, or None while the node does not answer (inside a wait)."""
        code, document = self.get("/status", timeout=5.0)
        return document if code == 200 and isinstance(document, dict) else None

    def wait_height(self, height: int, timeout: float = 120) -> None:
        """Wait until this node's best chain is at least ``height`` blocks high."""
        wait_height(self, height, timeout)


class _PortTaken(AssertionError):
    """The node could not bind its port: another process took it after it was chosen."""


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


# --- several nodes ----------------------------------------------------------------------------


def start_nodes(nodes: Iterable[TestNode], timeout: float = 60) -> list[TestNode]:
    """Start several nodes at once: launch every process, then wait for each to answer."""
    nodes = list(nodes)
    for node in nodes:
        node._launch(())
    for node in nodes:
        wait_for(node._up, timeout, f"{node} to answer /status")
        node.started_once = True
    return nodes


def stop_nodes(nodes: Iterable[TestNode], timeout: float = 30) -> dict[int, int]:
    """Stop several nodes at once: SIGTERM to all, then wait for each; index -> exit code."""
    nodes = list(nodes)
    for node in nodes:
        node.signal_stop()
    return {node.index: node.wait_stopped(timeout) for node in nodes}


def wait_height(node: TestNode, height: int, timeout: float = 120) -> None:
    """Wait until ``node`` reaches ``height``; the failure names the height it got to."""
    seen = {"height": -1}

    def reached() -> bool:
        assert node.running, f"{node} exited:\n{node.log_tail()}"
        status = node.try_status()
        if status is not None:
            seen["height"] = int(status["height"])
        return seen["height"] >= height

    wait_for(reached, timeout, lambda: f"{node} to reach height {height} (at {seen['height']})")


def connect_nodes(a: TestNode, b: TestNode) -> None:
    """Introduce two running nodes to each other: a hello on each one's behalf to the other.

    The receiving node admits the sender, greets it back (which proves the URL) and starts a
    catch-up if the sender is ahead, exactly as for a hello the sender made itself.
    """
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
    tips: dict[int, str | None] = {}

    def same_tip() -> bool:
        for node in nodes:
            assert node.running, f"{node} exited:\n{node.log_tail()}"
            status = node.try_status()
            tips[node.index] = None if status is None else str(status["head"])
        return None not in tips.values() and len(set(tips.values())) == 1

    wait_for(same_tip, timeout, lambda: f"one tip on all nodes (tips {tips})", interval=0.5)
    return str(tips[nodes[0].index])


FAST_DECAY_MS = 2_000
"""``decay_ms`` of :func:`write_fast_genesis`: after this long without improvement, empty
blocks keep the chain moving (the built-in devnet waits much longer)."""


def write_fast_genesis(
    path: Path, allocations: dict[bytes, int] | None = None, decay_ms: int = FAST_DECAY_MS
) -> Path:
    """The devnet genesis with a short decay period: blocks keep coming once converged.

    Same task and initial model as the built-in devnet, another genesis hash (so these
    nodes never talk to a devnet on the same machine), optional funded accounts.
    """
    from dataclasses import replace

    from derelayl_chain.genesis import devnet_genesis, write_genesis

    base = devnet_genesis()
    genesis = replace(
        base,
        params=replace(base.params, decay_ms=decay_ms, target_block_ms=500),
        allocations=tuple(sorted((allocations or {}).items())),
    )
    write_genesis(genesis, path)
    return path
