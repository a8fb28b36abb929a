"""``derelayl-miner devnet``: N miner processes on loopback, peered, with a live view.

Each miner is a real ``derelayl-miner start`` process with its own shard of the built-in task,
data directory and port, its JSON log in ``<data-dir>/miner-<i>/node.log``. The devnet polls
each node's public API (short timeouts, one round at a time) and shows height, loss, accuracy,
peers and rewards per miner. Ctrl-C, or reaching ``--blocks``, stops every miner with SIGTERM
(SIGKILL after a grace period) and the devnet exits 0; a miner that dies on its own ends the
devnet with exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from derelayl_chain.genesis import BASE_UNITS_PER_DRL

POLL_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 5.0
REQUEST_TIMEOUT_S = 1.0
STOP_GRACE_S = 15.0
AGREEMENT_GRACE_S = 30.0
"""After the target height, how long to wait for all miners to agree on one tip."""


@dataclass
class MinerProcess:
    """One miner of the devnet and what was last seen of it."""

    index: int
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: TextIO
    status: dict[str, Any] = field(default_factory=dict)
    balance: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_miners(
    miners: int, base_port: int, data_dir: Path, reward_address: str | None
) -> list[MinerProcess]:
    """Launch every miner, each peered with all the others."""
    ports = [base_port + i for i in range(miners)]
    processes = []
    for index, port in enumerate(ports):
        directory = data_dir / f"miner-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "miner", "start",
            "--port", str(port), "--data-dir", str(directory),
            "--data", f"digits:{index}/{miners}", "--log-format", "json",
        ]  # fmt: skip
        for other in ports:
            if other != port:
                command += ["--peer", f"http://127.0.0.1:{other}"]
        if reward_address:
            command += ["--reward-address", reward_address]
        log = (directory / "node.log").open("a")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the devnet only; it stops the miners
        )  # fmt: skip
        processes.append(MinerProcess(index, port, directory, process, log))
    return processes


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            document = json.loads(response.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return document if isinstance(document, dict) else None


def poll(miner: MinerProcess) -> None:
    """Refresh what we know of one miner; leave the old values if it does not answer."""
    status = _get_json(miner.url + "/status")
    if status is None:
        return
    miner.status = status
    address = status.get("reward_address") or status.get("address")
    if isinstance(address, str):
        account = _get_json(f"{miner.url}/accounts/{address}")
        if account is not None:
            with contextlib.suppress(ValueError, TypeError):
                miner.balance = int(account.get("balance", 0))


def _model(miner: MinerProcess) -> dict[str, Any]:
    model = miner.status.get("model")
    return model if isinstance(model, dict) else {}


def _drl(units: int) -> str:
    return f"{units // BASE_UNITS_PER_DRL}.{units % BASE_UNITS_PER_DRL:09d}".rstrip("0").rstrip(".")


def render(miners: list[MinerProcess], title: str) -> Table:
    """The live table: one row per miner."""
    table = Table(title=title)
    for column in ("miner", "port", "height", "tip", "loss", "accuracy", "peers", "rewards (DRL)"):
        table.add_column(column, justify="right" if column not in ("tip",) else "left")
    for miner in miners:
        model = _model(miner)
        alive = miner.process.poll() is None
        table.add_row(
            str(miner.index),
            str(miner.port),
            str(miner.status.get("height", "-")),
            str(miner.status.get("head", "-"))[:12],
            f"{model['loss']:.4f}" if "loss" in model else "-",
            f"{model['accuracy']:.3f}" if "accuracy" in model else "-",
            str(miner.status.get("peers", "-")),
            _drl(miner.balance) if alive else "stopped",
        )
    return table


def plain_line(miners: list[MinerProcess]) -> str:
    parts = []
    for miner in miners:
        model = _model(miner)
        loss = f"{model['loss']:.4f}" if "loss" in model else "-"
        parts.append(f"miner {miner.index}: height {miner.status.get('height', '-')} loss {loss}")
    return " | ".join(parts)


def stop_miners(miners: list[MinerProcess]) -> None:
    """SIGTERM every miner, wait for a clean shutdown, SIGKILL the ones that hang."""
    for miner in miners:
        if miner.process.poll() is None:
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


def target_reached(miners: list[MinerProcess], blocks: int, reached_at: float | None) -> bool:
    heights = [int(m.status.get("height", 0)) for m in miners]
    heads = {m.status.get("head") for m in miners}
    if min(heights) >= blocks and len(heads) == 1:
        return True
    return reached_at is not None and time.monotonic() - reached_at > AGREEMENT_GRACE_S


def summary(miners: list[MinerProcess], console: Console) -> None:
    for miner in miners:
        poll(miner)
    console.print(render(miners, "devnet summary"))


def run_devnet(
    miners: int, base_port: int, blocks: int | None, data_dir: Path, reward_address: str | None
) -> int:
    """Run the devnet until Ctrl-C or until height ``blocks``; the exit code."""
    console = Console()
    busy = [p for p in range(base_port, base_port + miners) if not port_is_free(p)]
    if busy:
        print(f"derelayl-miner: error: port(s) {busy} already in use", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)  # stop the miners on SIGTERM too
    processes = start_miners(miners, base_port, data_dir, reward_address)
    interactive = sys.stdout.isatty()
    try:
        return _watch(processes, blocks, console, interactive)
    except KeyboardInterrupt:
        console.print("stopping the miners...")
        return 0
    finally:
        stop_miners(processes)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch(
    processes: list[MinerProcess], blocks: int | None, console: Console, interactive: bool
) -> int:
    reached_at: float | None = None
    last_plain = 0.0
    title = f"DeRelayL devnet: {len(processes)} miners" + (
        f", until height {blocks}" if blocks else ""
    )
    live = Live(render(processes, title), console=console, refresh_per_second=4)
    with live if interactive else contextlib.nullcontext():
        while True:
            for miner in processes:
                if miner.process.poll() is not None:
                    print(
                        f"derelayl-miner: error: miner {miner.index} exited with code "
                        f"{miner.process.returncode}; see {miner.log_path}",
                        file=sys.stderr,
                    )
                    return 1
                poll(miner)
            if interactive:
                live.update(render(processes, title))
            elif time.monotonic() - last_plain > PLAIN_INTERVAL_S:
                print(plain_line(processes), flush=True)
                last_plain = time.monotonic()
            if blocks is not None:
                best = max(int(m.status.get("height", 0)) for m in processes)
                if best >= blocks and reached_at is None:
                    reached_at = time.monotonic()
                if target_reached(processes, blocks, reached_at):
                    break
            time.sleep(POLL_INTERVAL_S)
    summary(processes, console)
    return 0
