"""``derelayl-miner devnet``: N miner processes on loopback, peered, with a live view.

Each miner is a real ``derelayl-miner start`` process with its own shard of the built-in task,
data directory and port, its JSON log in ``<data-dir>/miner-<i>/node.log``. The devnet polls
each node's public API from a few threads (short timeouts; a miner that is slow to answer keeps
its last known values and is not asked again until it has answered) and shows height, loss,
accuracy, peers, blocks proposed and rewards per miner. Ctrl-C or SIGTERM, or reaching
``--blocks``, stops every miner with SIGTERM (SIGKILL after a grace period) and the devnet exits
0; a miner that dies on its own ends the devnet with exit code 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from wallet.amounts import format_drl

PROG = "derelayl-miner"
POLL_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 5.0
REQUEST_TIMEOUT_S = 1.0
STOP_GRACE_S = 15.0
AGREEMENT_GRACE_S = 30.0
"""After the best miner reaches ``--blocks``, how long to wait for every miner to agree."""
REWIND_BLOCKS = 20
"""Proposers of this many recent heights are read again each round (they may be reorganised)."""
PLAIN_WIDTH = 120
_PR_SET_PDEATHSIG = 1


@dataclass
class MinerProcess:
    """One miner of the devnet and what was last seen of it."""

    index: int
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: TextIO
    status: dict[str, Any] = field(default_factory=dict)
    balance: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class ProposerTally:
    """Who proposed each block of the best chain seen so far (read incrementally)."""

    proposers: dict[int, str] = field(default_factory=dict)

    def update(self, url: str, tip: int) -> None:
        """Re-read the recent heights (and up to two pages more) from the node at ``url``."""
        proposers = dict(self.proposers)  # replaced whole: the view reads it from another thread
        start = max(1, min(max(proposers, default=0), tip) - REWIND_BLOCKS)
        for _ in range(3):
            # The model history comes from the block index: no block body is read for it.
            page = _get_json(f"{url}/model/history?from={start}&limit=100")
            items = page.get("items") if page else None
            if not isinstance(items, list) or not items:
                break
            try:
                for item in items:
                    proposers[int(item["height"])] = str(item["proposer"])
                start = int(items[-1]["height"]) + 1
            except (KeyError, TypeError, ValueError):  # not this node's API: keep what we had
                break
            if start > tip:
                break
        self.proposers = {h: p for h, p in proposers.items() if h <= tip}

    def counts(self) -> Counter[str]:
        return Counter(self.proposers.values())


# --- processes ----------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the devnet itself dies (Linux), so no miner is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def miner_command(
    index: int, ports: list[int], directory: Path, reward_address: str | None
) -> list[str]:
    """The ``derelayl-miner start`` command line of miner ``index``."""
    command = [
        sys.executable, "-m", "miner", "start",
        "--port", str(ports[index]), "--data-dir", str(directory),
        "--data", f"digits:{index}/{len(ports)}", "--log-format", "json",
    ]  # fmt: skip
    for other, port in enumerate(ports):
        if other != index:
            command += ["--peer", f"http://127.0.0.1:{port}"]
    if reward_address:
        command += ["--reward-address", reward_address]
    return command


def start_miners(
    processes: list[MinerProcess],
    miners: int,
    base_port: int,
    data_dir: Path,
    reward_address: str | None,
) -> None:
    """Launch every miner, appending each to ``processes`` as soon as it runs."""
    ports = [base_port + i for i in range(miners)]
    for index in range(miners):
        directory = data_dir / f"miner-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        log = (directory / "node.log").open("a")
        process = subprocess.Popen(
            miner_command(index, ports, directory, reward_address),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the devnet only; it stops the miners
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        processes.append(MinerProcess(index, ports[index], directory, process, log))


def stop_miners(miners: list[MinerProcess]) -> None:
    """SIGTERM every miner, wait for a clean shutdown, SIGKILL the ones that hang."""
    for miner in miners:
        if miner.alive:
            with contextlib.suppress(ProcessLookupError):
                miner.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for miner in miners:
        try:
            miner.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            miner.process.kill()
            miner.process.wait()
        miner.log.close()


# --- polling ------------------------------------------------------------------------------------


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            document = json.loads(response.read(1 << 20))
    except (OSError, ValueError, http.client.HTTPException):  # URLError is an OSError
        return None
    return document if isinstance(document, dict) else None


def poll(miner: MinerProcess) -> None:
    """Refresh what we know of one miner; keep the old values if it does not answer."""
    status = _get_json(miner.url + "/status")
    if status is None:
        return
    miner.status = status
    address = status.get("reward_address")
    if isinstance(address, str):
        account = _get_json(f"{miner.url}/accounts/{address}")
        if account is not None:
            with contextlib.suppress(ValueError, TypeError):
                miner.balance = int(account.get("balance", 0))


class Poller:
    """Polls every miner from a thread pool without ever blocking the view for long."""

    def __init__(self, miners: list[MinerProcess]) -> None:
        self.miners = miners
        self.tally = ProposerTally()
        self._pool = ThreadPoolExecutor(max_workers=len(miners) + 1, thread_name_prefix="poll")
        self._pending: dict[int, Future[None]] = {}

    def round(self) -> None:
        """Start a poll of each miner (and of the proposers) whose last poll has finished."""
        for miner in self.miners:
            self._submit(miner.index, poll, miner)
        best = max(self.miners, key=lambda m: int(m.status.get("height", -1)))
        if best.status:
            self._submit(-1, self.tally.update, best.url, int(best.status["height"]))

    def _submit(self, key: int, fn: Any, *args: Any) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.done():
            self._pending[key] = self._pool.submit(fn, *args)

    def settle(self, timeout: float) -> None:
        """Wait (bounded) for the polls in flight, e.g. before a final summary."""
        deadline = time.monotonic() + timeout
        for pending in list(self._pending.values()):
            with contextlib.suppress(Exception):
                pending.result(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- the view -----------------------------------------------------------------------------------


def _number(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _drl(units: int | None) -> str:
    return "-" if units is None else format_drl(units)


def _model(miner: MinerProcess) -> dict[str, Any]:
    model = miner.status.get("model")
    return model if isinstance(model, dict) else {}


def _state(miner: MinerProcess) -> str:
    if not miner.alive:
        return f"exited ({miner.process.returncode})"
    if not miner.status:
        return "starting"
    return "syncing" if miner.status.get("syncing") else "mining"


def render(miners: list[MinerProcess], tally: ProposerTally, title: str) -> Table:
    """One row per miner: where its chain is, how good its model is, what it earned."""
    table = Table(title=title)
    columns = ("miner", "port", "state", "height", "tip", "loss", "accuracy", "peers", "blocks",
               "rewards (DRL)")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("state", "tip") else "right")
    proposed = tally.counts()
    for miner in miners:
        model = _model(miner)
        table.add_row(
            str(miner.index),
            str(miner.port),
            _state(miner),
            str(miner.status.get("height", "-")),
            str(miner.status.get("head", "-"))[:12],
            _number(model.get("loss"), 4),
            _number(model.get("accuracy"), 3),
            str(miner.status.get("peers", "-")),
            str(proposed.get(str(miner.status.get("address")), 0)) if miner.status else "-",
            _drl(miner.balance),
        )
    return table


def plain_line(miners: list[MinerProcess]) -> str:
    """The one-line status printed when standard output is not a terminal."""
    parts = []
    for miner in miners:
        model = _model(miner)
        parts.append(
            f"miner {miner.index}: {_state(miner)} height {miner.status.get('height', '-')} "
            f"loss {_number(model.get('loss'), 4)} peers {miner.status.get('peers', '-')}"
        )
    return " | ".join(parts)


# --- running ------------------------------------------------------------------------------------


def target_reached(miners: list[MinerProcess], blocks: int, reached_at: float | None) -> bool:
    """Every miner at ``blocks`` on one tip, or the grace period after the first one got there."""
    heights = [int(m.status.get("height", 0)) for m in miners]
    heads = {m.status.get("head") for m in miners}
    if min(heights) >= blocks and len(heads) == 1:
        return True
    return reached_at is not None and time.monotonic() - reached_at > AGREEMENT_GRACE_S


def dead_miner(miners: list[MinerProcess]) -> MinerProcess | None:
    return next((m for m in miners if not m.alive), None)


def run_devnet(
    miners: int, base_port: int, blocks: int | None, data_dir: Path, reward_address: str | None
) -> int:
    """Run the devnet until Ctrl-C, SIGTERM or height ``blocks``; the exit code."""
    interactive = sys.stdout.isatty()
    console = Console() if interactive else Console(width=PLAIN_WIDTH)
    busy = [p for p in range(base_port, base_port + miners) if not port_is_free(p)]
    if busy:
        ports = ", ".join(map(str, busy))
        print(f"{PROG}: error: port(s) {ports} already in use on 127.0.0.1", file=sys.stderr)
        return 1
    processes: list[MinerProcess] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the miners too
    try:
        start_miners(processes, miners, base_port, data_dir, reward_address)
        return _watch(processes, blocks, console, interactive)
    except KeyboardInterrupt:
        console.print(f"stopping {len(processes)} miners...")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        stop_miners(processes)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch(
    miners: list[MinerProcess], blocks: int | None, console: Console, interactive: bool
) -> int:
    """Show progress until a miner dies (1), ``blocks`` is reached (0) or an interrupt."""
    poller = Poller(miners)
    title = f"DeRelayL devnet: {len(miners)} miners" + (
        f", until height {blocks}" if blocks else ""
    )
    reached_at: float | None = None
    last_plain = 0.0
    try:
        live = Live(render(miners, poller.tally, title), console=console, refresh_per_second=2)
        with live if interactive else contextlib.nullcontext():
            while (dead := dead_miner(miners)) is None:
                poller.round()
                if interactive:
                    live.update(render(miners, poller.tally, title))
                elif time.monotonic() - last_plain >= PLAIN_INTERVAL_S:
                    print(plain_line(miners), flush=True)
                    last_plain = time.monotonic()
                if blocks is not None:
                    best = max(int(m.status.get("height", 0)) for m in miners)
                    if best >= blocks and reached_at is None:
                        reached_at = time.monotonic()
                    if target_reached(miners, blocks, reached_at):
                        break
                time.sleep(POLL_INTERVAL_S)
        if dead is not None:
            code = dead.process.returncode
            print(f"{PROG}: error: miner {dead.index} exited with code {code}; see "
                  f"{dead.log_path}", file=sys.stderr)  # fmt: skip
            return 1
        poller.settle(2 * REQUEST_TIMEOUT_S)
        poller.round()
        poller.settle(3 * REQUEST_TIMEOUT_S)
        console.print(render(miners, poller.tally, "devnet summary"))
        return 0
    finally:
        poller.close()
