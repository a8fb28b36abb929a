"""``derelayl-miner devnet``: runs to a target height, stops cleanly on Ctrl-C, fails loudly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.framework import ROOT, clean_env, free_port, scaled, wait_for

pytestmark = pytest.mark.functional


def consecutive_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the devnet uses base, base+1, ...)."""
    for _ in range(50):
        ports = [free_port() for _ in range(count)]
        if ports == list(range(ports[0], ports[0] + count)):
            return ports[0]
    raise AssertionError("no run of consecutive free ports")


def miner_pids(directory: Path) -> list[int]:
    """Processes whose command line names a miner of the devnet in ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline and b"\0start\0" in cmdline:
                found.append(int(entry.name))
    return found


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as response:
            return bool(json.loads(response.read())["head"])
    except (OSError, ValueError):
        return False


@pytest.fixture
def devnet_dir(tmp_path: Path) -> Iterator[Path]:
    """The devnet's data directory; a miner left running at the end is killed (and fails)."""
    directory = tmp_path / "devnet"
    yield directory
    left = miner_pids(directory)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the devnet left miners running"


def run_devnet(directory: Path, base: int, *args: str) -> subprocess.Popen[str]:
    """``derelayl-miner devnet --miners 2`` on ports ``base``, ``base + 1``, output piped."""
    command = [
        sys.executable, "-m", "miner", "devnet", "--miners", "2",
        "--base-port", str(base), "--data-dir", str(directory), *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, cwd=ROOT, env=clean_env(),
    )  # fmt: skip


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    """Exit code, stdout and stderr; the devnet is killed if it overruns ``timeout``."""
    try:
        out, err = process.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"devnet did not finish:\n{out}\n{err}") from None
    return process.returncode, out, err


def stopped_cleanly(directory: Path, index: int) -> bool:
    log = (directory / f"miner-{index}" / "node.log").read_text()
    return '"node_stopped"' in log


def test_devnet_stops_at_target_height_with_summary(devnet_dir: Path) -> None:
    """--blocks 5: two miners reach height 5, a summary table is printed, exit 0, none left."""
    base = consecutive_ports(2)
    code, out, err = finish(run_devnet(devnet_dir, base, "--blocks", "5"), 120)
    assert code == 0, err
    assert "Traceback" not in err
    summary = out[out.index("devnet summary") :]
    rows = [line for line in summary.splitlines() if f" {base} " in line or f" {base + 1} " in line]
    assert len(rows) == 2, summary
    for row in rows:
        height = int(row.split("│")[4])
        assert height >= 5, row
    assert "miner 0:" in out  # not a terminal: plain status lines instead of the live view
    assert miner_pids(devnet_dir) == []
    assert stopped_cleanly(devnet_dir, 0) and stopped_cleanly(devnet_dir, 1)


def test_devnet_ctrl_c_stops_every_miner(devnet_dir: Path) -> None:
    """SIGINT once both miners serve: each shuts down cleanly and the devnet exits 0."""
    base = consecutive_ports(2)
    process = run_devnet(devnet_dir, base)
    try:
        wait_for(lambda: answers(base) and answers(base + 1), 60, "both miners to serve")
        assert len(miner_pids(devnet_dir)) == 2
    finally:
        process.send_signal(signal.SIGINT)
        code, _, err = finish(process, 60)
    assert code == 0, err
    assert miner_pids(devnet_dir) == []
    assert stopped_cleanly(devnet_dir, 0) and stopped_cleanly(devnet_dir, 1)


def test_devnet_refuses_ports_in_use(devnet_dir: Path) -> None:
    """A taken port: one error line naming it, exit 1, no miner started."""
    base = consecutive_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        code, _, err = finish(run_devnet(devnet_dir, base), 60)
    assert code == 1
    assert err.strip().splitlines() == [
        f"derelayl-miner: error: port(s) {base + 1} already in use on 127.0.0.1"
    ]
    assert not (devnet_dir / "miner-0").exists()


def test_devnet_reports_a_miner_that_dies(devnet_dir: Path) -> None:
    """A miner that cannot start (a corrupt node key): its log named, the rest stopped, exit 1."""
    base = consecutive_ports(2)
    (devnet_dir / "miner-1").mkdir(parents=True)
    (devnet_dir / "miner-1" / "node_key").write_text("not a key\n")
    code, _, err = finish(run_devnet(devnet_dir, base), 60)
    assert code == 1
    log = devnet_dir / "miner-1" / "node.log"
    assert f"derelayl-miner: error: miner 1 exited with code 2; see {log}" in err
    assert "node key" in log.read_text()
    assert miner_pids(devnet_dir) == []
