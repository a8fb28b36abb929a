"""``derelayl-miner``: run a node (``start``), a local devnet (``devnet``), write a genesis file.

Errors end the command with one line on stderr and an exit code chosen in one place
(:func:`exit_code_for`): 2 for bad usage or bad input, 1 for a runtime failure. No traceback
reaches the user.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import click

from derelayl_chain import __version__
from derelayl_chain.crypto import decode_address, encode_address
from derelayl_chain.exceptions import (
    ConfigError,
    DecodeError,
    DeRelayLError,
    InvalidAmount,
)
from derelayl_chain.genesis import BASE_UNITS_PER_DRL, ConsensusParams, GenesisConfig

PROG = "derelayl-miner"
_AMOUNT = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,9}))?")


class UsageFailure(ConfigError):
    """Bad command-line input detected by the command itself."""


def exit_code_for(exc: BaseException) -> int:
    """2 for bad usage or input, 1 for everything that went wrong at run time."""
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, ConfigError | DecodeError | InvalidAmount):
        return 2
    return 1


def fail(message: str, code: int) -> None:
    click.echo(f"{PROG}: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


# --- start ------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """DeRelayL miner: train the chain's model in relay and earn rewards."""


@cli.command()
@click.option("--data-dir", help="Data directory [env DERELAYL_DATA_DIR; ~/.derelayl/node].")
@click.option("--host", help="Listen address [env DERELAYL_HOST; 127.0.0.1].")
@click.option("--port", help="HTTP port for the API and peers [env DERELAYL_PORT; 8600].")
@click.option("--peer", "peers", multiple=True, help="Peer URL http://host:port (repeatable).")
@click.option("--data", help="Training data: digits:I/N or a .npz file [digits:0/1].")
@click.option("--reward-address", help="Address paid the rewards [the node key's address].")
@click.option("--no-mine", is_flag=True, default=None, help="Serve and sync only.")
@click.option("--genesis", help="Genesis file [the built-in devnet genesis].")
@click.option("--log-format", help="console or json [console].")
@click.option("--log-level", help="debug, info, warning or error [info].")
@click.option("--public-url", help="URL peers reach this node at [http://host:port].")
def start(**flags: Any) -> None:
    """Run a node: serve the API, talk to peers, and mine."""
    from derelayl_chain.allocator import keep_large_buffers_in_heap
    from derelayl_chain.config import load_config
    from derelayl_chain.learning.data import load_miner_data
    from derelayl_chain.log import configure_logging
    from derelayl_chain.node import run_node

    config = load_config(flags)
    configure_logging(config.log_format, config.log_level)
    keep_large_buffers_in_heap()
    genesis = _load_network_genesis(config.genesis)
    data = load_miner_data(config.data, genesis.task) if config.mine else None
    asyncio.run(run_node(config, genesis, data))


def _load_network_genesis(path: Path | None) -> GenesisConfig:
    from derelayl_chain import genesis as genesis_module

    if path is not None:
        return genesis_module.load_genesis(path)
    return genesis_module.devnet_genesis()


# --- devnet -----------------------------------------------------------------------------------


@cli.command()
@click.option("--miners", type=click.IntRange(1, 32), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1, 65535), default=8600, show_default=True)
@click.option("--blocks", type=click.IntRange(1), default=None, help="Stop at this height.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--reward-address", default=None, help="Pay every miner's rewards here.")
def devnet(
    miners: int,
    base_port: int,
    blocks: int | None,
    data_dir: Path | None,
    reward_address: str | None,
) -> None:
    """Start N miners on loopback, peered with each other; Ctrl-C stops them all."""
    if reward_address is not None:
        decode_address(reward_address)
    if base_port + miners - 1 > 65535:
        raise UsageFailure(f"ports {base_port}..{base_port + miners - 1} exceed 65535")
    from miner.devnet import run_devnet

    code = run_devnet(
        miners=miners,
        base_port=base_port,
        blocks=blocks,
        data_dir=(data_dir or Path("~/.derelayl/devnet")).expanduser(),
        reward_address=reward_address,
    )
    if isinstance(code, int) and code:
        sys.exit(code)


# --- genesis ----------------------------------------------------------------------------------


def parse_drl(text: str) -> int:
    """A decimal DRL amount as base units, exactly (never through a float)."""
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        raise InvalidAmount(f"amount {text!r} must be a decimal DRL amount with <= 9 decimals")
    whole, fraction = match[1], (match[2] or "").ljust(9, "0")
    return int(whole) * BASE_UNITS_PER_DRL + int(fraction)


def parse_allocations(items: Sequence[str]) -> tuple[tuple[bytes, int], ...]:
    """``ADDR=AMOUNT_DRL`` items, summed per account, sorted by account."""
    totals: dict[bytes, int] = {}
    for item in items:
        address, sep, amount = item.partition("=")
        if not sep:
            raise UsageFailure(f"--alloc {item!r} must look like ADDRESS=AMOUNT_DRL")
        account = decode_address(address.strip())
        totals[account] = totals.get(account, 0) + parse_drl(amount)
    return tuple(sorted(totals.items()))


def _param_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--name`` option per integer consensus parameter (``model_open`` is a flag)."""
    defaults = ConsensusParams()
    for f in reversed(fields(ConsensusParams)):
        if f.name == "model_open":
            continue
        option = "--" + f.name.replace("_", "-")
        help_text = f"Consensus parameter {f.name} [{getattr(defaults, f.name)}]."
        command = click.option(option, f.name, type=click.IntRange(0), help=help_text)(command)
    return command


@cli.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chain-id", type=click.IntRange(1, 2**63 - 1), default=None, help="[random]")
@click.option("--task", default="digits-mlp", show_default=True, help="Built-in task name.")
@click.option("--alloc", multiple=True, metavar="ADDR=AMOUNT_DRL", help="Initial balance.")
@click.option("--open-model", is_flag=True, help="Anyone may download the weights.")
@click.option("--timestamp-ms", type=click.IntRange(0), default=None, help="[now]")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@_param_options
def genesis(
    out: Path,
    chain_id: int | None,
    task: str,
    alloc: tuple[str, ...],
    open_model: bool,
    timestamp_ms: int | None,
    force: bool,
    **params: int | None,
) -> None:
    """Write a genesis file for a new network."""
    from derelayl_chain.genesis import genesis_from_json
    from derelayl_chain.learning.evaluate import evaluate
    from derelayl_chain.learning.model import initial_weights
    from derelayl_chain.learning.task import BUILTIN_TASKS
    from derelayl_chain.learning.weights import model_hash

    if task not in BUILTIN_TASKS:
        raise UsageFailure(f"unknown task {task!r}; built in: {', '.join(sorted(BUILTIN_TASKS))}")
    if out.exists() and not force:
        raise UsageFailure(f"{out} exists; pass --force to overwrite it")
    chosen = {name: value for name, value in params.items() if value is not None}
    consensus = replace(ConsensusParams(), model_open=open_model, **chosen)
    spec = BUILTIN_TASKS[task]
    weights = initial_weights(spec)
    config = GenesisConfig(
        chain_id=chain_id if chain_id is not None else int.from_bytes(os.urandom(4), "big") | 1,
        timestamp_ms=timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000,
        task=spec,
        initial_loss=evaluate(spec, weights).loss,
        initial_model_hash=model_hash(weights),
        params=consensus,
        allocations=parse_allocations(alloc),
    )
    genesis_from_json(config.to_json())  # the checks every node will run on this file
    _write_atomically(out, json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")
    click.echo(f"wrote {out}: chain id {config.chain_id}, genesis {config.hash.hex()}")
    for account, amount in config.allocations:
        click.echo(f"  {encode_address(account)} = {amount} base units")


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; map every failure to one stderr line and an exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name=PROG,
                 standalone_mode=False)  # fmt: skip
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())
        sys.exit(2)
    except click.ClickException as exc:
        fail(exc.format_message(), exit_code_for(exc))
    except click.exceptions.Abort:
        fail("aborted", 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except DeRelayLError as exc:
        fail(str(exc) or type(exc).__name__, exit_code_for(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", 1)
    except Exception as exc:  # a bug: still one line, and the type helps a report
        fail(f"internal error ({type(exc).__name__}): {exc}", 1)
