"""Node benchmark: real node processes on loopback, measured through their HTTP interface.

Run as ``.venv/bin/python bench/node.py``. It starts ``miner start`` processes on 127.0.0.1
(free ports, temporary data directories, all removed at the end), prints one human-readable
line per figure and, as its last line, one JSON object with every figure.

Figures and goals (on 2 cores):

- ``http_tx_per_s``: signed transfers accepted per second through ``POST /txs`` from a
  concurrent keep-alive client; every transaction is signed before the clock starts, the node
  does not mine. Goal: at least 2,000. ``http_server_cpu_us_per_tx`` is the node process's CPU
  time per accepted transaction.
- ``status_p99_ms_while_mining``: 99th percentile latency of ``GET /status`` sampled at about
  20 requests per second while the node trains the large model (``digits-large``) and connects
  the blocks it mines. Goal: at most 50 ms.
- ``sync_vs_eval_bound``: blocks per second a fresh node imports while catching up with a peer
  holding a 200-block large-model chain, divided by the rate at which this machine merely
  applies and evaluates the same deltas in-process. Goal: at least 0.7.
  ``sync_vs_chain_import`` sets the catch-up against ``Chain.submit_block`` alone, in-process
  into LevelDB on the same blocks: what the node and the network add to the chain's own cost.

Every figure moves with the machine's load; the load average at start is part of the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from derelayl_chain import relay  # noqa: E402
from derelayl_chain.allocator import keep_large_buffers_in_heap  # noqa: E402
from derelayl_chain.block import Block, decode_block  # noqa: E402
from derelayl_chain.chain import Chain  # noqa: E402
from derelayl_chain.crypto import KeyPair  # noqa: E402
from derelayl_chain.genesis import GenesisConfig, load_genesis  # noqa: E402
from derelayl_chain.learning.data import Dataset, load_miner_data  # noqa: E402
from derelayl_chain.learning.delta import decode_delta  # noqa: E402
from derelayl_chain.learning.evaluate import evaluate  # noqa: E402
from derelayl_chain.learning.model import initial_weights, weight_spec  # noqa: E402
from derelayl_chain.learning.train import TrainingConfig, train  # noqa: E402
from derelayl_chain.learning.weights import apply_delta, subtract_weights  # noqa: E402
from derelayl_chain.storage.kv import KeyValueStore, WriteBatch  # noqa: E402
from derelayl_chain.storage.schema import open_store  # noqa: E402
from derelayl_chain.transaction import make_transfer  # noqa: E402

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a child gets when its parent dies."""
JSON_HEADERS = {"Content-Type": "application/json"}

TX_SENDERS = 200
TXS_PER_SENDER = 48
"""At most the mempool's 64 per sender; 9,600 in all stays under its 10,000 capacity."""
CONCURRENCY = 32
FEE = 1_000

STATUS_SAMPLES = 500
STATUS_INTERVAL_S = 0.05

SYNC_BLOCKS = 200
SYNC_SHARDS = 16
"""Each block is trained for one epoch on one of this many shards (fast, yet a dense delta)."""
SYNC_LEARNING_RATE = 0.0001
MIN_STEP_SCALE = 2.0**-12
BLOCK_SPACING_MS = 1_000
GENESIS_AGE_MS = 3 * 3600 * 1000
SYNC_TIMEOUT_S = 150.0
CHAIN_IMPORT_BLOCKS = 50
"""Blocks of the in-process import (``Chain.submit_block`` alone) the catch-up is set against."""


# --- node processes -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _terminate_with_parent() -> None:
    """In the child: receive SIGTERM when this script dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class NodeProcess:
    """One ``miner start`` child process logging JSON to a file; stopped on leaving ``with``."""

    def __init__(self, name: str, workdir: Path, args: list[str]) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.args = args
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NodeProcess:
        command = [sys.executable, "-m", "miner", "start", "--port", "0", "--log-format", "json"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, *self.args], cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )  # fmt: skip
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def events(self) -> Iterator[dict[str, Any]]:
        """The JSON log records written so far."""
        with self.log_path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        yield record

    def wait_ready(self) -> str:
        """The node's URL once it listens; raise with the log's tail if it dies first."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for record in self.events():
                if record.get("event") == "listening":
                    self.url = str(record["url"])
                    return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"node {self.name} did not start:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not end in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def node_args(workdir: Path, name: str, genesis: Path, *extra: str) -> list[str]:
    """Options of ``miner start`` for node ``name``: its data directory, the genesis, ``extra``."""
    return ["--data-dir", str(workdir / f"{name}-node"), "--genesis", str(genesis), *extra]


def write_genesis(path: Path, task: str, *options: str) -> GenesisConfig:
    """A genesis file written by ``miner genesis`` with ``options``, loaded back."""
    command = [sys.executable, "-m", "miner", "genesis", "--out", str(path), "--task", task]
    done = subprocess.run([*command, "--force", *options], cwd=REPO, capture_output=True)
    if done.returncode:
        raise RuntimeError(f"miner genesis failed: {done.stderr.decode(errors='replace')}")
    return load_genesis(path)


def event_time(record: dict[str, Any]) -> float:
    """Seconds since the epoch of a log record's ISO timestamp."""
    return datetime.fromisoformat(str(record["timestamp"])).timestamp()


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def wait_for_height(
    session: aiohttp.ClientSession, url: str, height: int, timeout: float
) -> dict[str, Any]:
    """Poll ``/status`` until the node reaches ``height``; its last status."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = await get_json(session, url + "/status")
        if status["height"] >= height:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} stuck at height {status['height']}, wanted {height}")
        await asyncio.sleep(0.25)


# --- POST /txs throughput -------------------------------------------------------------------


def sender_keys() -> list[KeyPair]:
    return [
        KeyPair.from_seed(hashlib.sha256(b"bench-node-sender-%d" % i).digest())
        for i in range(TX_SENDERS)
    ]


def transfer_bodies(keys: list[KeyPair], chain_id: int) -> list[bytes]:
    """Request bodies of signed transfers, round by round (every sender's nonce 0, then 1...)."""
    bodies = []
    for nonce in range(TXS_PER_SENDER):
        for index, key in enumerate(keys):
            to = keys[(index + 1) % len(keys)].account
            tx = make_transfer(key, chain_id, nonce, to, 1 + nonce, FEE)
            bodies.append(json.dumps({"tx": tx.encode().hex()}).encode())
    return bodies


async def post_all(session: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> Counter[int]:
    """POST every body with CONCURRENCY requests in flight; the count of each status."""
    statuses: Counter[int] = Counter()
    pending = iter(bodies)

    async def worker() -> None:
        for body in pending:
            async with session.post(url + "/txs", data=body, headers=JSON_HEADERS) as response:
                await response.read()
                statuses[response.status] += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses


async def bench_http(workdir: Path) -> dict[str, float]:
    keys = sender_keys()
    allocations = [f"--alloc={key.address}=1000" for key in keys]
    genesis = write_genesis(workdir / "http-genesis.json", "digits-mlp", *allocations)
    bodies = transfer_bodies(keys, genesis.chain_id)
    warmup, timed = bodies[:TX_SENDERS], bodies[TX_SENDERS:]
    print(f"signed {len(bodies)} transfers from {TX_SENDERS} senders")
    args = node_args(workdir, "http", workdir / "http-genesis.json", "--no-mine")
    with NodeProcess("http", workdir, args) as node:
        url = node.wait_ready()
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            await post_all(session, url, warmup)
            cpu_before, client_before = cpu_seconds(node.pid), time.process_time()
            started = time.perf_counter()
            statuses = await post_all(session, url, timed)
            elapsed = time.perf_counter() - started
            server_cpu = cpu_seconds(node.pid) - cpu_before
            client_cpu = time.process_time() - client_before
            mempool = await get_json(session, url + "/mempool")
    if statuses[202] != len(timed) or mempool["count"] != len(bodies):
        raise RuntimeError(f"not every transfer was accepted: {dict(statuses)}, {mempool}")
    return {
        "http_tx_per_s": round(len(timed) / elapsed),
        "http_server_cpu_us_per_tx": round(server_cpu / len(timed) * 1e6, 1),
        "http_client_cpu_us_per_tx": round(client_cpu / len(timed) * 1e6, 1),
    }


# --- GET /status while mining ---------------------------------------------------------------


def mining_attempts(node: NodeProcess) -> int:
    return sum(1 for record in node.events() if record.get("event") == "mining_attempt")


async def sample_status(session: aiohttp.ClientSession, url: str) -> list[float]:
    """Latencies (seconds) of STATUS_SAMPLES sequential requests, one every STATUS_INTERVAL_S."""
    latencies = []
    start = time.perf_counter()
    for index in range(STATUS_SAMPLES):
        await asyncio.sleep(max(0.0, start + index * STATUS_INTERVAL_S - time.perf_counter()))
        sent = time.perf_counter()
        async with session.get(url + "/status") as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET /status answered {response.status}")
        latencies.append(time.perf_counter() - sent)
    return latencies


async def bench_status(workdir: Path) -> dict[str, float]:
    genesis_path = workdir / "mining-genesis.json"
    write_genesis(genesis_path, "digits-large")
    args = node_args(workdir, "mining", genesis_path, "--log-level", "debug")
    with NodeProcess("mining", workdir, args) as node:
        url = node.wait_ready()
        async with aiohttp.ClientSession() as session:
            before = await wait_for_height(session, url, 1, READY_TIMEOUT_S)
            attempts_before, started = mining_attempts(node), time.perf_counter()
            latencies = await sample_status(session, url)
            elapsed = time.perf_counter() - started
            after = await get_json(session, url + "/status")
            attempts = mining_attempts(node) - attempts_before
    blocks = after["height"] - before["height"]
    if not (before["mining"] and after["mining"]) or attempts < 2 or blocks < 1:
        raise RuntimeError(f"mining was not active: {attempts} attempts, {blocks} blocks")
    ordered = sorted(latencies)
    return {
        "status_p99_ms_while_mining": round(ordered[int(0.99 * len(ordered))] * 1e3, 2),
        "status_p50_ms_while_mining": round(statistics.median(ordered) * 1e3, 2),
        "status_max_ms_while_mining": round(ordered[-1] * 1e3, 2),
        "status_sample_seconds": round(elapsed, 1),
        "mining_attempts_during_sample": attempts,
        "blocks_mined_during_sample": blocks,
    }


# --- catch-up against the evaluation bound --------------------------------------------------


class Clock:
    """A settable millisecond clock for the in-process chain."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def trained_candidate(
    chain: Chain, data: Dataset, seed: int, scale: float
) -> tuple[relay.Candidate | None, float]:
    """A trained step that does not raise the loss: the trained delta times ``scale``, else
    times a quarter or a sixteenth of it; None if none improves. Also the scale to start
    from at the next block: twice the one that worked (at most 1), else a quarter."""
    config = TrainingConfig(epochs=1, learning_rate=SYNC_LEARNING_RATE, seed=seed)
    parent = chain.weights_at(chain.tip.hash)
    delta = subtract_weights(train(chain.genesis.task, parent, data, config), parent)
    for factor in (1, 4, 16):
        scaled = {name: tensor * (scale / factor) for name, tensor in delta.items()}
        candidate = relay.candidate_from_delta(chain, chain.tip.hash, scaled)
        if candidate.evaluation.loss <= chain.tip.header.claimed_loss:
            return candidate, min(1.0, 2 * scale / factor)
    return None, max(scale / 4, MIN_STEP_SCALE)


def build_chain(data_dir: Path, genesis: GenesisConfig) -> int:
    """SYNC_BLOCKS large-model blocks of trained deltas, stored in LevelDB in ``data_dir``; the
    number of zero-delta blocks among them.

    The chain is built in memory and copied over in large batches: the same keys and values
    as a chain importing into LevelDB would leave, in a fraction of the time.
    """
    key = KeyPair.from_seed(hashlib.sha256(b"bench-node-proposer").digest())
    shards = [
        load_miner_data(f"digits:{i}/{SYNC_SHARDS}", genesis.task) for i in range(SYNC_SHARDS)
    ]
    clock = Clock(genesis.timestamp_ms)
    empty, scale = 0, 1.0
    with open_store(None) as memory:
        chain = Chain(memory, genesis, clock)
        for height in range(1, SYNC_BLOCKS + 1):
            shard = shards[height % SYNC_SHARDS]
            candidate, scale = trained_candidate(chain, shard, height, scale)
            if candidate is None:
                candidate, empty = relay.empty_candidate(chain), empty + 1
            timestamp = relay.earliest_timestamp(chain, candidate.evaluation.loss)
            assert timestamp is not None
            clock.now = max(timestamp, clock.now + BLOCK_SPACING_MS)
            block = relay.build_block(chain, key, candidate, clock.now)
            if block not in chain.submit_block(block).connected:
                raise RuntimeError(f"block {height} of the source chain did not connect")
        copy_store(memory, data_dir)
    return empty


def copy_store(source: KeyValueStore, data_dir: Path) -> None:
    """Every pair of ``source`` into a new LevelDB store in ``data_dir``, 64 MiB per batch."""
    with open_store(data_dir) as target:
        batch, size = WriteBatch(), 0
        for key, value in source.iterate(b""):
            batch.put(key, value)
            size += len(key) + len(value)
            if size >= 64 << 20:
                target.write(batch)
                batch, size = WriteBatch(), 0
        target.write(batch)


async def fetch_blocks(
    session: aiohttp.ClientSession, url: str, genesis: GenesisConfig
) -> list[Block]:
    """The source chain's blocks in height order, fetched as peers do (``/p2p/blocks``)."""
    blocks = []
    for start in range(1, SYNC_BLOCKS + 1, 100):
        page = await get_json(session, f"{url}/blocks?from={start}&limit=100")
        for item in page["items"]:
            async with session.get(f"{url}/p2p/blocks/{item['hash']}") as response:
                response.raise_for_status()
                data = await response.read()
            blocks.append(decode_block(data, genesis.params.max_delta_bytes))
    return blocks


def eval_bound(genesis: GenesisConfig, blocks: list[Block]) -> float:
    """Blocks per second of apply + evaluate alone (deltas decoded beforehand), on one thread
    like the node; best of two passes."""
    spec, limit = weight_spec(genesis.task), genesis.params.max_delta_bytes
    deltas = [decode_delta(block.delta, spec, limit) for block in blocks]
    best = 0.0
    for _ in range(2):
        weights = initial_weights(genesis.task)
        started = time.perf_counter()
        for delta in deltas:
            weights = apply_delta(weights, delta)
            evaluate(genesis.task, weights)
        best = max(best, len(deltas) / (time.perf_counter() - started))
    return best


def chain_import_rate(genesis: GenesisConfig, blocks: list[Block], data_dir: Path) -> float:
    """Blocks per second of ``Chain.submit_block`` in-process into a new LevelDB store: the
    chain's own import cost, without the node, the network or the serving peer."""
    with open_store(data_dir) as store:
        chain = Chain(store, genesis)
        started = time.perf_counter()
        for block in blocks:
            if block not in chain.submit_block(block).connected:
                raise RuntimeError(f"block {block.height} did not connect in-process")
        return len(blocks) / (time.perf_counter() - started)


def import_rate(node: NodeProcess) -> tuple[float, float]:
    """Blocks per second from the node listening to its last block, and between its first
    and last block (the steady rate)."""
    records = list(node.events())
    ready = next(event_time(r) for r in records if r.get("event") == "listening")
    connected = [event_time(r) for r in records if r.get("event") == "block_connected"]
    if len(connected) < SYNC_BLOCKS:
        raise RuntimeError(f"only {len(connected)} blocks connected")
    overall = len(connected) / (connected[-1] - ready)
    steady = (len(connected) - 1) / (connected[-1] - connected[0])
    return overall, steady


async def measure_catch_up(
    workdir: Path, genesis_path: Path, genesis: GenesisConfig
) -> tuple[list[Block], dict[str, float]]:
    """Serve the built chain, fetch its blocks, let a fresh node catch up; the blocks and the
    catch-up figures."""
    source_args = node_args(workdir, "source", genesis_path, "--no-mine")
    with NodeProcess("source", workdir, source_args) as source:
        source_url = source.wait_ready()
        async with aiohttp.ClientSession() as session:
            blocks = await fetch_blocks(session, source_url, genesis)
            fresh_args = node_args(
                workdir, "fresh", genesis_path, "--no-mine", "--peer", source_url
            )
            source_cpu = cpu_seconds(source.pid)
            with NodeProcess("fresh", workdir, fresh_args) as fresh:
                fresh_url = fresh.wait_ready()
                fresh_cpu = cpu_seconds(fresh.pid)  # start-up excluded
                await wait_for_height(session, fresh_url, SYNC_BLOCKS, SYNC_TIMEOUT_S)
                fresh_cpu = cpu_seconds(fresh.pid) - fresh_cpu
                source_cpu = cpu_seconds(source.pid) - source_cpu
                overall, steady = import_rate(fresh)
    return blocks, {
        "sync_blocks_per_s": round(overall, 2),
        "sync_steady_blocks_per_s": round(steady, 2),
        "sync_fresh_cpu_ms_per_block": round(fresh_cpu / SYNC_BLOCKS * 1e3, 1),
        "sync_source_cpu_ms_per_block": round(source_cpu / SYNC_BLOCKS * 1e3, 1),
    }


async def bench_sync(workdir: Path) -> dict[str, float]:
    genesis_path = workdir / "sync-genesis.json"
    stamp = time.time_ns() // 1_000_000 - GENESIS_AGE_MS
    genesis = write_genesis(
        genesis_path, "digits-large", f"--timestamp-ms={stamp}", "--min-difficulty=1",
        "--initial-difficulty=1", "--max-difficulty=1",
    )  # fmt: skip
    started = time.perf_counter()
    empty = build_chain(workdir / "source-node", genesis)
    built_s = time.perf_counter() - started
    print(f"built a {SYNC_BLOCKS}-block large-model chain ({empty} zero deltas) in {built_s:.1f} s")
    blocks, figures = await measure_catch_up(workdir, genesis_path, genesis)
    rate = figures["sync_blocks_per_s"]
    bound = eval_bound(genesis, blocks)
    chain_rate = chain_import_rate(genesis, blocks[:CHAIN_IMPORT_BLOCKS], workdir / "in-process")
    return {
        **figures,
        "eval_bound_blocks_per_s": round(bound, 2),
        "sync_vs_eval_bound": round(rate / bound, 3),
        "chain_import_blocks_per_s": round(chain_rate, 2),
        "sync_vs_chain_import": round(rate / chain_rate, 3),
        "sync_zero_delta_blocks": empty,
        "sync_chain_build_seconds": round(built_s, 1),
    }


# --- main -----------------------------------------------------------------------------------


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``with``: the nodes are stopped


async def run(workdir: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures.update(await bench_http(workdir))
    print(
        f"POST /txs:             {figures['http_tx_per_s']:8.0f} tx/s  (goal >= 2000)"
        f"  server {figures['http_server_cpu_us_per_tx']:.0f} us CPU/tx,"
        f" client {figures['http_client_cpu_us_per_tx']:.0f} us CPU/tx"
    )
    figures.update(await bench_status(workdir))
    print(
        f"GET /status mining:    p99 {figures['status_p99_ms_while_mining']:.1f} ms (goal <= 50),"
        f" p50 {figures['status_p50_ms_while_mining']:.1f} ms,"
        f" max {figures['status_max_ms_while_mining']:.1f} ms;"
        f" {figures['mining_attempts_during_sample']} training runs,"
        f" {figures['blocks_mined_during_sample']} blocks mined meanwhile"
    )
    figures.update(await bench_sync(workdir))
    print(
        f"catch-up:              {figures['sync_blocks_per_s']:.1f} blocks/s"
        f" (steady {figures['sync_steady_blocks_per_s']:.1f}), apply+evaluate alone"
        f" {figures['eval_bound_blocks_per_s']:.1f} blocks/s:"
        f" ratio {figures['sync_vs_eval_bound']:.2f} (goal >= 0.7)"
    )
    print(
        f"  in-process Chain.submit_block into LevelDB: {figures['chain_import_blocks_per_s']:.1f}"
        f" blocks/s (catch-up {figures['sync_vs_chain_import']:.2f} of it);"
        f" CPU per block: importing node {figures['sync_fresh_cpu_ms_per_block']:.0f} ms,"
        f" serving node {figures['sync_source_cpu_ms_per_block']:.0f} ms"
    )
    return figures


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    torch.set_num_threads(1)  # one thread, as the nodes run torch; more crawl on a busy machine
    keep_large_buffers_in_heap()  # as `miner start` does, for the in-process comparisons
    started, load = time.perf_counter(), os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.2f} at start; other work skews every figure")
    with tempfile.TemporaryDirectory(prefix="derelayl-bench-node-") as directory:
        figures = asyncio.run(run(Path(directory)))
    figures["load_average_at_start"] = round(load, 2)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    print(f"total {figures['seconds']:.1f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
