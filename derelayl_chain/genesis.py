"""Genesis: the task, the consensus constants and the initial allocations of a network.

A genesis file is JSON for people to read and edit; what identifies the network is the hash
of the genesis *block*, whose parent field is the hash of the canonical encoding of the whole
configuration. Two nodes agree on the network exactly when they agree on every constant.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from derelayl_chain import encoding
from derelayl_chain.block import ZERO_HASH, Block, BlockHeader, transactions_root
from derelayl_chain.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, decode_address, encode_address
from derelayl_chain.encoding import Item, encode, encode_uint
from derelayl_chain.exceptions import ConfigError, DeRelayLError
from derelayl_chain.learning.task import BUILTIN_TASKS, TaskSpec
from derelayl_chain.state import LedgerParams, StateTransition, genesis_transition

MAX_GENESIS_BYTES = 1 << 20
BASE_UNITS_PER_DRL = 10**9


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Every protocol constant a network fixes at genesis."""

    loss_tolerance: int = 2_000
    """Largest |claimed - recomputed| loss accepted (fixed point, 10^-6 units)."""
    initial_difficulty: int = 20_000
    """Required improvement of the first blocks, parts per million of the parent's loss."""
    min_difficulty: int = 100
    max_difficulty: int = 500_000
    retarget_window: int = 20
    """Blocks between difficulty retargets."""
    target_block_ms: int = 4_000
    """Intended time between blocks."""
    decay_ms: int = 30_000
    """Time after which a block needs no improvement (``T_decay``)."""
    max_future_ms: int = 15_000
    """How far ahead of a validator's clock a timestamp may be."""
    finality_depth: int = 50
    """No reorganisation disconnects more blocks than this."""
    checkpoint_interval: int = 16
    """Full weights are stored every this many blocks (``K``)."""
    initial_emission: int = 50 * BASE_UNITS_PER_DRL
    halving_interval: int = 210_000
    min_fee: int = 1_000
    licence_price: int = 1 * BASE_UNITS_PER_DRL
    licence_blocks: int = 1_000
    """Blocks of model licence bought by each :attr:`licence_price` paid."""
    model_open: bool = False
    """Whether anyone may download the weights."""
    max_delta_bytes: int = 16 << 20

    def to_item(self) -> list[Item]:
        return [encode_uint(int(getattr(self, f.name))) for f in fields(self)]

    @property
    def ledger(self) -> LedgerParams:
        return LedgerParams(self.min_fee, self.licence_price, self.licence_blocks)


@dataclass(frozen=True, slots=True)
class GenesisConfig:
    """A network's genesis."""

    chain_id: int
    timestamp_ms: int
    task: TaskSpec
    initial_loss: int
    """Evaluation loss of the initial weights (fixed point); the first block must beat it."""
    initial_model_hash: bytes
    params: ConsensusParams
    allocations: tuple[tuple[bytes, int], ...]
    """(account id, base units), sorted by account."""

    def to_item(self) -> list[Item]:
        return [
            encode_uint(self.chain_id),
            encode_uint(self.timestamp_ms),
            self.task.to_item(),
            encode_uint(self.initial_loss),
            self.initial_model_hash,
            self.params.to_item(),
            [[account, encode_uint(amount)] for account, amount in self.allocations],
        ]

    @property
    def config_hash(self) -> bytes:
        return encoding.hash_domain(b"drl-genesis", encode(self.to_item()))

    def ledger_transition(self) -> StateTransition:
        return genesis_transition(dict(self.allocations))

    def block(self) -> Block:
        """The genesis block: fixed by the configuration, signed by nobody."""
        header = BlockHeader(
            version=1,
            chain_id=self.chain_id,
            height=0,
            parent=self.config_hash,
            timestamp_ms=self.timestamp_ms,
            tx_root=transactions_root(()),
            state_root=self.ledger_transition().globals.state_root,
            delta_hash=ZERO_HASH,
            model_hash=self.initial_model_hash,
            claimed_loss=self.initial_loss,
            difficulty=self.params.initial_difficulty,
            reward=0,
            reward_to=bytes(20),
            proposer=bytes(PUBLIC_KEY_SIZE),
            signature=bytes(SIGNATURE_SIZE),
        )
        return Block(header=header, transactions=(), delta=b"")

    @property
    def hash(self) -> bytes:
        """The network's identity: the genesis block hash."""
        return self.block().hash

    # --- JSON -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "task": task_to_json(self.task),
            "initial_loss": self.initial_loss,
            "initial_model_hash": self.initial_model_hash.hex(),
            "params": asdict(self.params),
            "allocations": {encode_address(a): str(amount) for a, amount in self.allocations},
        }


def genesis_from_json(document: Any) -> GenesisConfig:
    """Build a genesis from parsed JSON, naming the first bad field."""
    try:
        if not isinstance(document, dict):
            raise ConfigError("genesis must be a JSON object")
        params_doc = document.get("params", {})
        if not isinstance(params_doc, dict):
            raise ConfigError("genesis 'params' must be an object")
        known = {f.name: f for f in fields(ConsensusParams)}
        unknown = set(params_doc) - set(known)
        if unknown:
            raise ConfigError(f"unknown genesis parameter(s): {', '.join(sorted(unknown))}")
        for name, value in params_doc.items():
            expected = bool if name == "model_open" else int
            if type(value) is not expected or (expected is int and value < 0):
                raise ConfigError(
                    f"genesis parameter {name!r} must be a non-negative {expected.__name__}"
                )
        params = ConsensusParams(**params_doc)
        _check_params(params)
        task_doc = document.get("task")
        task = (
            BUILTIN_TASKS[task_doc]
            if isinstance(task_doc, str) and task_doc in BUILTIN_TASKS
            else task_from_json(task_doc)
        )
        allocations_doc = document.get("allocations", {})
        if not isinstance(allocations_doc, dict):
            raise ConfigError("genesis 'allocations' must be an object of address: amount")
        allocations = tuple(
            sorted((decode_address(addr), _parse_amount(v)) for addr, v in allocations_doc.items())
        )
        return GenesisConfig(
            chain_id=_int_field(document, "chain_id"),
            timestamp_ms=_int_field(document, "timestamp_ms"),
            task=task,
            initial_loss=_int_field(document, "initial_loss"),
            initial_model_hash=bytes.fromhex(str(document.get("initial_model_hash", ""))),
            params=params,
            allocations=allocations,
        )
    except ConfigError:
        raise
    except (DeRelayLError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid genesis: {exc}") from exc


def task_to_json(task: TaskSpec) -> dict[str, Any]:
    """A task as JSON: byte fields in hex, tuples as lists."""
    document: dict[str, Any] = {}
    for f in fields(task):
        value = getattr(task, f.name)
        document[f.name] = (
            value.hex()
            if isinstance(value, bytes)
            else (list(value) if isinstance(value, tuple) else value)
        )
    return document


def task_from_json(document: Any) -> TaskSpec:
    """The inverse of :func:`task_to_json`, checking each field's type."""
    if not isinstance(document, dict):
        raise ConfigError("genesis 'task' must be a built-in task name or an object")
    reference = BUILTIN_TASKS["digits-mlp"]
    values: dict[str, Any] = {}
    for f in fields(reference):
        if f.name not in document:
            raise ConfigError(f"genesis task lacks the field {f.name!r}")
        value, example = document[f.name], getattr(reference, f.name)
        if isinstance(example, bytes):
            value = bytes.fromhex(value) if isinstance(value, str) else None
        elif isinstance(example, tuple):
            ok = isinstance(value, list) and all(type(v) is int and v > 0 for v in value)
            value = tuple(value) if ok else None
        elif type(value) is not type(example):
            value = None
        if value is None:
            raise ConfigError(f"genesis task field {f.name!r} has the wrong type")
        values[f.name] = value
    return TaskSpec(**values)


def _check_params(params: ConsensusParams) -> None:
    if not 0 < params.min_difficulty <= params.initial_difficulty <= params.max_difficulty:
        raise ConfigError(
            "genesis needs 0 < min_difficulty <= initial_difficulty <= max_difficulty"
        )
    if params.max_difficulty > 1_000_000:
        raise ConfigError("max_difficulty is in parts per million and cannot exceed 1000000")
    positive = (
        "retarget_window", "target_block_ms", "decay_ms", "checkpoint_interval",
        "halving_interval", "licence_price", "finality_depth", "max_delta_bytes",
    )  # fmt: skip
    for name in positive:
        if getattr(params, name) <= 0:
            raise ConfigError(f"genesis parameter {name!r} must be positive")


def _int_field(document: dict[str, Any], name: str) -> int:
    value = document.get(name)
    if type(value) is not int or value < 0:
        raise ConfigError(f"genesis field {name!r} must be a non-negative integer")
    return value


def _parse_amount(value: Any) -> int:
    if not isinstance(value, str) or not value.isdigit():
        raise ConfigError(f"allocation {value!r} must be a decimal string of base units")
    return int(value)


def load_genesis(path: Path) -> GenesisConfig:
    """Read a genesis file, size-limited, with a one-line error for anything wrong."""
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_GENESIS_BYTES else None
    except OSError as exc:
        raise ConfigError(f"cannot read genesis file {path}: {exc.strerror}") from exc
    if raw is None:
        raise ConfigError(f"genesis file {path} exceeds {MAX_GENESIS_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"genesis file {path} is not valid JSON: {exc}") from exc
    return genesis_from_json(document)


def write_genesis(config: GenesisConfig, path: Path) -> None:
    path.write_text(json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")


DEVNET_CHAIN_ID = 7741
DEVNET_TIMESTAMP_MS = 1_796_342_400_000  # 2026-12-04T00:00:00Z
DEVNET_INITIAL_LOSS = 2_315_953
DEVNET_MODEL_HASH = bytes.fromhex(
    "4b0918f331831487db625bb8f4b81ca49d25667b194d91272a3c5d924eda1862"
)


def devnet_genesis() -> GenesisConfig:
    """The built-in devnet: a constant, so nodes started with defaults share one network.

    ``initial_loss`` and the model hash are those of the default task's initial weights; a test
    recomputes both.
    """
    return GenesisConfig(
        chain_id=DEVNET_CHAIN_ID,
        timestamp_ms=DEVNET_TIMESTAMP_MS,
        task=BUILTIN_TASKS["digits-mlp"],
        initial_loss=DEVNET_INITIAL_LOSS,
        initial_model_hash=DEVNET_MODEL_HASH,
        params=ConsensusParams(),
        allocations=(),
    )
