"""The node's configuration: command-line flags over ``DERELAYL_*`` environment variables.

Every setting has one name. A flag given on the command line wins; otherwise the environment
variable ``DERELAYL_<NAME>`` is used; otherwise the default. Values are checked here, once, so
the node never starts on a setting it would only trip over later; anything wrong is a
:class:`ConfigError` naming the setting and the value.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from derelayl_chain.crypto import decode_address
from derelayl_chain.exceptions import ConfigError, InvalidAddress

ENV_PREFIX = "DERELAYL_"
DEFAULT_DATA_DIR = Path("~/.derelayl/node")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8600
DEFAULT_DATA = "digits:0/1"
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node process is told from outside."""

    data_dir: Path = DEFAULT_DATA_DIR
    """Holds the database, the lock and the node key."""
    host: str = DEFAULT_HOST
    """Interface the HTTP server listens on."""
    port: int = DEFAULT_PORT
    """Port of the HTTP server (public API and peer endpoints); 0 picks a free one."""
    peers: tuple[str, ...] = ()
    """Peer URLs (``http://host:port``) contacted at start."""
    data: str = DEFAULT_DATA
    """The miner's training data: ``digits:I/N`` or a path to an ``.npz`` file."""
    reward_address: str | None = None
    """Where block rewards go; ``None`` means the node key's own address."""
    mine: bool = True
    """Whether to mine, or only serve and sync."""
    genesis: Path | None = None
    """Genesis file; ``None`` means the built-in devnet genesis."""
    log_format: str = "console"
    """``console`` for people, ``json`` for machines."""
    log_level: str = "info"
    public_url: str | None = None
    """URL peers reach this node at; derived from host and port when not set."""

    @property
    def self_url(self) -> str:
        """The URL this node announces to peers."""
        if self.public_url:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def reward_account(self) -> bytes | None:
        """The 20-byte account of :attr:`reward_address`, if one was set."""
        return decode_address(self.reward_address) if self.reward_address else None


def load_config(
    flags: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Build the configuration from flags (``None`` = not given) over the environment."""
    env = os.environ if environ is None else environ

    def pick(name: str) -> object:
        value = flags.get(name)
        if value is not None and value != ():
            return value
        return env.get(ENV_PREFIX + name.upper())

    return NodeConfig(
        data_dir=_parse_path(pick("data_dir"), DEFAULT_DATA_DIR),
        host=_parse_host(pick("host")),
        port=_parse_port(pick("port")),
        peers=_parse_peers(pick("peers")),
        data=_parse_data(pick("data")),
        reward_address=_parse_reward_address(pick("reward_address")),
        mine=not _parse_bool(pick("no_mine"), "no_mine"),
        genesis=_parse_optional_path(pick("genesis")),
        log_format=_parse_choice(pick("log_format"), "log_format", LOG_FORMATS),
        log_level=_parse_choice(pick("log_level"), "log_level", LOG_LEVELS, "info"),
        public_url=_parse_public_url(pick("public_url")),
    )


def _parse_path(value: object, default: Path) -> Path:
    path = _parse_optional_path(value)
    return (path or default).expanduser()


def _parse_optional_path(value: object) -> Path | None:
    if value is None or value == "":
        return None
    return Path(str(value)).expanduser()


def _parse_host(value: object) -> str:
    if value is None or value == "":
        return DEFAULT_HOST
    host = str(value).strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.split(".")
    if host and all(label and label.replace("-", "").isalnum() for label in labels):
        return host
    raise ConfigError(f"host {host!r} is neither an IP address nor a host name")


def _parse_port(value: object) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    text = str(value).strip()
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"port {text!r} must be an integer from 0 to 65535")
    return int(text)


def _parse_peers(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise ConfigError(f"peers must be URLs, got {type(value).__name__}")
    peers: list[str] = []
    for item in (part.strip() for part in items):
        if item:
            peer = _parse_url(item, "peer URL")
            if peer not in peers:
                peers.append(peer)
    return tuple(peers)


def _parse_url(text: str, what: str) -> str:
    """``http://host:port`` with nothing else: peers speak plain HTTP on the node's port."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r} is malformed: {exc}") from exc
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ConfigError(f"{what} {text!r} must look like http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{what} {text!r} must not have a path, query or credentials")
    return f"http://{parts.netloc.lower()}"


def _parse_public_url(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _parse_url(str(value).strip(), "public URL")


def _parse_data(value: object) -> str:
    if value is None or value == "":
        return DEFAULT_DATA
    return str(value).strip()


def _parse_reward_address(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        decode_address(text)
    except InvalidAddress as exc:
        raise ConfigError(f"reward address: {exc}") from exc
    return text


def _parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {value!r}")


def _parse_choice(
    value: object, name: str, choices: tuple[str, ...], default: str | None = None
) -> str:
    if value is None or value == "":
        return default or choices[0]
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return text
