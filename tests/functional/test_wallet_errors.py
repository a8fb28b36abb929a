"""Bad input to the wallet against a real node: one error line, the right exit code, no harm.

The node serves a network whose genesis funds wallets A and B and does not mine, so nothing
but the wallet could change a balance: after every refused command the keystore files are
byte-for-byte and timestamp-for-timestamp as before, and the node's accounts, mempool and
height are exactly as before.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from derelayl_chain.crypto import decode_address
from derelayl_chain.genesis import BASE_UNITS_PER_DRL
from tests.functional._wallet_harness import (
    Wallet,
    account,
    assert_one_line_error,
    get_json,
    new_wallet,
    units,
    write_password_file,
)
from tests.functional.framework import TestNode, free_port, write_fast_genesis
from wallet.keystore import import_key

pytestmark = pytest.mark.functional

DRL = BASE_UNITS_PER_DRL
A_FUNDS = 100 * DRL
B_FUNDS = 1 * DRL


@dataclass(frozen=True, slots=True)
class Setup:
    node: TestNode
    root: Path
    a: Wallet
    b: Wallet
    a_address: str
    b_address: str

    def keystore(self, name: str) -> Wallet:
        """Wallet A's password with the (damaged) keystore file ``bad/<name>.json``."""
        return Wallet(self.root / "bad" / f"{name}.json", self.a.password_file, self.node.url)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("wallet-errors")
    a, a_address = new_wallet(root / "keys", "a", "http://127.0.0.1:1")
    b, b_address = new_wallet(root / "keys", "b", "http://127.0.0.1:1")
    make_damaged_keystores(root / "bad", a.keystore, b_address)
    funds = {decode_address(a_address): A_FUNDS, decode_address(b_address): B_FUNDS}
    genesis = write_fast_genesis(root / "genesis.json", funds)
    node = TestNode(0, root, mine=False, genesis=genesis)
    try:
        node.start()
        url = node.url
        yield Setup(node, root, a.with_node(url), b.with_node(url), a_address, b_address)
    finally:
        node.stop()


def make_damaged_keystores(directory: Path, good: Path, other_address: str) -> None:
    """Copies of a good keystore, each broken in one way."""
    directory.mkdir()
    data = good.read_bytes()
    document = json.loads(data)

    def variant(name: str, **changes: Any) -> None:
        (directory / f"{name}.json").write_text(json.dumps(document | changes, indent=2))

    (directory / "truncated.json").write_bytes(data[: len(data) // 2])
    (directory / "empty.json").write_bytes(b"")
    cipher = document["ciphertext"]
    variant("tampered", ciphertext=("1" if cipher[0] == "0" else "0") + cipher[1:])
    variant("other-address", address=other_address)
    variant("version-2", version=2)
    variant("huge-kdf", ops_limit=1_000_000)


# --- nothing changes ----------------------------------------------------------------------------


def file_states(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Bytes, modification time and mode of every keystore and password file."""
    states = {}
    for path in sorted([*root.glob("keys/*"), *root.glob("bad/*")]):
        info = path.stat()
        states[str(path)] = (path.read_bytes(), info.st_mtime_ns, info.st_mode)
    return states


def node_state(setup: Setup) -> dict[str, Any]:
    status = setup.node.status()
    return {
        "a": account(setup.node, setup.a_address),
        "b": account(setup.node, setup.b_address),
        "mempool": get_json(setup.node, "/mempool")["count"],
        "height": status["height"],
        "head": status["head"],
    }


@contextlib.contextmanager
def nothing_changes(setup: Setup) -> Iterator[None]:
    """Assert the keystore files and the node's accounts, mempool and chain are untouched."""
    files, state = file_states(setup.root), node_state(setup)
    yield
    assert file_states(setup.root) == files
    assert node_state(setup) == state


def refused(setup: Setup, wallet: Wallet, args: list[str], code: int, *fragments: str) -> str:
    """``wallet ARGS`` fails with ``code`` and one line naming ``fragments``, harming nothing."""
    with nothing_changes(setup):
        line = assert_one_line_error(wallet.run(*args), code)
    for fragment in fragments:
        assert fragment in line, line
    return line


# --- damaged keystores and wrong passwords ------------------------------------------------------


def test_the_genesis_funds_the_wallets(setup: Setup) -> None:
    """The wallet sees the balances genesis gave (the baseline every other test relies on)."""
    assert units(setup.a.json("balance"), "balance") == A_FUNDS
    assert units(setup.b.json("balance"), "spendable") == B_FUNDS


def test_wrong_password_is_refused(setup: Setup) -> None:
    """A wrong password: exit 2, one line, keystore and balances untouched, nothing sent."""
    wrong = write_password_file(setup.root / "wrong.pw", "not the password")
    wallet = Wallet(setup.a.keystore, wrong, setup.node.url)
    for args in (["send", setup.b_address, "1"], ["access", "1"], ["export"]):
        refused(setup, wallet, args, 2, "wrong password")
    wrong.unlink()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated", "not valid JSON"),
        ("empty", "not valid JSON"),
        ("tampered", "wrong password or corrupted keystore"),
        ("other-address", "does not match its key"),
        ("version-2", "version 2 is not supported"),
        ("huge-kdf", "ops_limit 1000000 is outside"),
    ],
)
def test_damaged_keystore_is_refused(setup: Setup, name: str, message: str) -> None:
    """A truncated, tampered or unknown-version keystore: exit 2, one line naming the file."""
    wallet = setup.keystore(name)
    commands = [["send", setup.b_address, "0.5"], ["export"]]
    if name not in ("tampered", "other-address"):  # these read fine; only decrypting fails
        commands.append(["address"])
    for args in commands:
        refused(setup, wallet, args, 2, message, str(wallet.keystore))


def test_new_refuses_to_overwrite_a_keystore(setup: Setup, tmp_path: Path) -> None:
    """``new`` and ``import`` never replace an existing keystore (exit 2, file untouched)."""
    refused(setup, setup.a, ["new"], 2, "refusing to overwrite")
    exported = tmp_path / "key.txt"
    result = setup.b.run("export", "--out", str(exported))
    assert result.returncode == 0, result.stderr
    refused(setup, setup.a, ["import", str(exported)], 2, "refusing to overwrite")


# --- bad addresses and amounts ------------------------------------------------------------------


def mistyped(address: str) -> str:
    """The address with its last hex digit changed: well formed, bad checksum."""
    return address[:-1] + ("0" if address[-1] != "0" else "1")


def test_bad_address_checksum_is_refused(setup: Setup) -> None:
    """A mistyped recipient or queried address: exit 2, one line, nothing sent."""
    bad = mistyped(setup.b_address)
    refused(setup, setup.a, ["send", bad, "1"], 2, "bad checksum")
    refused(setup, setup.a, ["balance", bad, "--json"], 2, "bad checksum")
    refused(setup, setup.a, ["send", "drl1zz", "1"], 2, "address")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("1.0000000001", "more than 9 decimal places"),
        ("-1", "must be positive"),
        ("-0.5", "must be positive"),
        ("0", "must be positive"),
        ("0.000000000", "must be positive"),
        ("9223372037", "exceeds the maximum"),
        ("1e3", "not a decimal number"),
        ("1,5", "not a decimal number"),
        ("", "is empty"),
    ],
)
def test_bad_amount_is_refused(setup: Setup, amount: str, message: str) -> None:
    """Too precise, negative, zero, beyond any supply or not a number: exit 2, nothing sent."""
    for args in (["send", setup.b_address, amount], ["access", amount]):
        refused(setup, setup.a, args, 2, message)


@pytest.mark.parametrize(
    ("fee", "message"),
    [("0.0000000001", "more than 9 decimal places"), ("-1", "must not be negative")],
)
def test_bad_fee_is_refused(setup: Setup, fee: str, message: str) -> None:
    """A fee with too many decimals or below zero: exit 2, nothing sent."""
    refused(setup, setup.a, ["send", setup.b_address, "1", "--fee", fee], 2, message)


def test_amount_and_fee_beyond_the_balance_are_refused(setup: Setup) -> None:
    """Spending more than the node says the account holds -- the whole balance plus a fee, or
    more than all the coins there are -- is refused before anything is signed."""
    whole = str(A_FUNDS // DRL)
    cases = [
        ["send", setup.b_address, whole, "--fee", "0.000001"],
        ["send", setup.b_address, "99.99999", "--fee", "0.00002"],
        ["send", setup.b_address, "1000000"],
        ["access", whole],
    ]
    for args in cases:
        refused(setup, setup.a, args, 2, "insufficient funds")


def test_access_below_the_licence_price_is_refused_by_the_node(setup: Setup) -> None:
    """A well-formed access payment under the licence price: the node refuses it, exit 2."""
    refused(setup, setup.a, ["access", "0.5"], 2, "licence price")


# --- an unreachable node ------------------------------------------------------------------------


def test_unreachable_node_is_a_runtime_failure(setup: Setup) -> None:
    """A node that cannot be reached: exit 1, one line naming it, keystore untouched."""
    url = f"http://127.0.0.1:{free_port()}"
    wallet = setup.a.with_node(url)
    out = setup.root / "never.safetensors"
    for args in (["balance"], ["send", setup.b_address, "1"], ["model", "download", str(out)]):
        refused(setup, wallet, args, 1, "cannot reach node", url)
    assert not out.exists()


# --- and afterwards -----------------------------------------------------------------------------


def test_the_keystore_still_works_after_every_refusal(setup: Setup) -> None:
    """After all of the above, the same keystore and password sign a payment the node accepts."""
    before = get_json(setup.node, "/mempool")["count"]
    sent = setup.a.json("send", setup.b_address, "1")
    assert sent["status"] == "pending" and sent["nonce"] == 0
    assert get_json(setup.node, "/mempool")["count"] == before + 1
    state = account(setup.node, setup.a_address)
    assert state["balance"] == str(A_FUNDS) and state["next_nonce"] == 1
    exported = setup.a.run("export")
    assert exported.returncode == 0, exported.stderr
    assert import_key(exported.stdout).address == setup.a_address
