"""``derelayl-miner devnet``: runs to a target height, or stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.functional.framework import ROOT, clean_env, free_port, scaled, wait_for

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def devnet_command(tmp_path: Path, *args: str) -> list[str]:
    base = free_port()
    return [
        sys.executable, "-m", "miner", "devnet", "--miners", "2",
        "--base-port", str(base), "--data-dir", str(tmp_path / "devnet"), *args,
    ]  # fmt: skip


def miner_pids(tmp_path: Path) -> list[int]:
    """Processes whose command line names this test's devnet directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path / "devnet").encode() in cmdline and b"start" in cmdline:
                found.append(int(entry.name))
    return found


def test_devnet_stops_at_target_height_with_summary(tmp_path: Path) -> None:
    """--blocks 5 runs two miners to height 5, prints a summary and exits 0."""
    result = subprocess.run(
        devnet_command(tmp_path, "--blocks", "5"),
        capture_output=True, text=True, timeout=scaled(180), cwd=ROOT, env=clean_env(),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "devnet summary" in result.stdout
    assert "Traceback" not in result.stderr
    assert miner_pids(tmp_path) == []
    for index in (0, 1):
        assert (tmp_path / "devnet" / f"miner-{index}" / "node.log").stat().st_size > 0


def test_devnet_ctrl_c_stops_every_miner(tmp_path: Path) -> None:
    """SIGINT stops both miner processes and the devnet exits 0."""
    process = subprocess.Popen(
        devnet_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env=clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: len(miner_pids(tmp_path)) == 2, 60, "both miners to start")
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=scaled(60))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in miner_pids(tmp_path):
            os.kill(pid, signal.SIGKILL)
    assert code == 0
    assert miner_pids(tmp_path) == []
