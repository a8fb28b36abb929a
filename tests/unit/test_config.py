"""Tests for the node configuration (derelayl_chain/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from derelayl_chain.config import DEFAULT_DATA, DEFAULT_PORT, NodeConfig, load_config
from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import ConfigError

ADDRESS = KeyPair.from_seed(bytes(range(32))).address


def test_defaults_without_flags_or_environment() -> None:
    """With nothing set, the documented defaults apply."""
    config = load_config({}, {})
    assert config.port == DEFAULT_PORT
    assert config.host == "127.0.0.1"
    assert config.data == DEFAULT_DATA
    assert config.data_dir == Path("~/.derelayl/node").expanduser()
    assert config.mine is True
    assert config.peers == ()
    assert config.log_format == "console"
    assert config.genesis is None
    assert config.reward_address is None


def test_environment_sets_every_setting(tmp_path: Path) -> None:
    """Each DERELAYL_* variable sets its setting."""
    env = {
        "DERELAYL_DATA_DIR": str(tmp_path / "node"),
        "DERELAYL_HOST": "0.0.0.0",
        "DERELAYL_PORT": "9001",
        "DERELAYL_PEERS": "http://127.0.0.1:8601, http://localhost:8602",
        "DERELAYL_DATA": "digits:1/3",
        "DERELAYL_REWARD_ADDRESS": ADDRESS,
        "DERELAYL_GENESIS": str(tmp_path / "genesis.json"),
        "DERELAYL_LOG_FORMAT": "json",
        "DERELAYL_NO_MINE": "1",
    }
    config = load_config({}, env)
    assert config.data_dir == tmp_path / "node"
    assert config.host == "0.0.0.0"
    assert config.port == 9001
    assert config.peers == ("http://127.0.0.1:8601", "http://localhost:8602")
    assert config.data == "digits:1/3"
    assert config.reward_address == ADDRESS
    assert config.genesis == tmp_path / "genesis.json"
    assert config.log_format == "json"
    assert config.mine is False


def test_flags_override_environment() -> None:
    """A flag given on the command line wins over its environment variable."""
    env = {"DERELAYL_PORT": "9001", "DERELAYL_PEERS": "http://a:1", "DERELAYL_LOG_FORMAT": "json"}
    flags = {"port": "9100", "peers": ("http://b:2",), "log_format": "console"}
    config = load_config(flags, env)
    assert (config.port, config.peers, config.log_format) == (9100, ("http://b:2",), "console")


def test_absent_flags_fall_back_to_environment() -> None:
    """Flags passed as None or an empty tuple (click's 'not given') do not mask the env."""
    config = load_config({"port": None, "peers": ()}, {"DERELAYL_PORT": "9002"})
    assert config.port == 9002


@pytest.mark.parametrize("value", ["abc", "-1", "65536", "80.5"])
def test_bad_port_is_a_config_error(value: str) -> None:
    """A port that is not an integer in 0..65535 is refused, naming the value."""
    with pytest.raises(ConfigError, match="port"):
        load_config({"port": value}, {})


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8600", "https://a:1", "http://a", "http://a:1/path", "http://u@a:1"]
)
def test_bad_peer_url_is_a_config_error(url: str) -> None:
    """Peers must be plain http://host:port."""
    with pytest.raises(ConfigError, match="peer URL"):
        load_config({"peers": (url,)}, {})


def test_duplicate_peers_are_kept_once() -> None:
    """The same peer named twice is contacted once."""
    config = load_config({}, {"DERELAYL_PEERS": "http://a:1,http://A:1,,http://b:2"})
    assert config.peers == ("http://a:1", "http://b:2")


def test_bad_reward_address_is_a_config_error() -> None:
    """A mistyped reward address is caught by its checksum at start."""
    typo = ADDRESS[:-1] + ("0" if ADDRESS[-1] != "0" else "1")
    with pytest.raises(ConfigError, match="reward address"):
        load_config({"reward_address": typo}, {})


def test_reward_account_decodes_the_address() -> None:
    """reward_account is the 20-byte account of the configured address."""
    config = load_config({"reward_address": ADDRESS}, {})
    assert config.reward_account == KeyPair.from_seed(bytes(range(32))).account


@pytest.mark.parametrize("value", ["xml", "JSONL"])
def test_bad_log_format_is_a_config_error(value: str) -> None:
    """Only console and json are log formats."""
    with pytest.raises(ConfigError, match="log_format"):
        load_config({"log_format": value}, {})


@pytest.mark.parametrize(("text", "mine"), [("0", True), ("false", True), ("yes", False)])
def test_no_mine_environment_values(text: str, mine: bool) -> None:
    """DERELAYL_NO_MINE understands the usual true and false spellings."""
    assert load_config({}, {"DERELAYL_NO_MINE": text}).mine is mine


def test_no_mine_rejects_other_values() -> None:
    """A value that is neither true nor false is refused rather than guessed."""
    with pytest.raises(ConfigError, match="DERELAYL_NO_MINE"):
        load_config({}, {"DERELAYL_NO_MINE": "maybe"})


def test_bad_host_is_a_config_error() -> None:
    """A host with characters no host name has is refused."""
    with pytest.raises(ConfigError, match="host"):
        load_config({"host": "exa mple"}, {})


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8600, "http://127.0.0.1:8600"),
        ("0.0.0.0", 8601, "http://127.0.0.1:8601"),
        ("::1", 8602, "http://[::1]:8602"),
    ],
)
def test_self_url_from_host_and_port(host: str, port: int, url: str) -> None:
    """The announced URL is reachable: a wildcard listen address becomes loopback."""
    assert NodeConfig(host=host, port=port).self_url == url


def test_public_url_overrides_self_url() -> None:
    """An explicit public URL is what peers are told."""
    config = load_config({"public_url": "http://node.example:9000"}, {})
    assert config.self_url == "http://node.example:9000"
