"""The wallet command line (wallet/cli.py, wallet/client.py).

Commands run through click's CliRunner with a real keystore in a temporary directory. Commands
that talk to a node run against a small stand-in node: a real HTTP server on loopback serving
the documented API, which checks what the wallet sends with the core's own functions
(``decode_transaction``, ``verify_transaction``, ``verify_download``).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import nacl.pwhash.argon2id
import numpy
import pytest
import safetensors.numpy
from click.testing import CliRunner, Result

from derelayl_chain.access import verify_download
from derelayl_chain.crypto import KeyPair, decode_address
from derelayl_chain.exceptions import AccessDenied, InvalidAmount, NotFound, PeerError
from derelayl_chain.transaction import (
    Access,
    Transaction,
    Transfer,
    decode_transaction,
    verify_transaction,
)
from wallet.cli import cli, error_message, exit_code_for
from wallet.client import NodeRefused, NodeUnavailable
from wallet.keystore import create_keystore, read_keystore_address

PASSWORD = "correct horse battery staple"
SEED = bytes(range(32))
KEY = KeyPair.from_seed(SEED)
OTHER = KeyPair.from_seed(bytes(32)).address
CHAIN_ID = 7
SAFETENSORS = safetensors.numpy.save({"w": numpy.arange(4, dtype=numpy.float32)})
"""A small, real safetensors file for the stand-in node to serve."""


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No wallet setting or proxy leaks in from the environment running the tests."""
    for name in ("DERELAYL_PASSWORD", "DERELAYL_NODE", "DERELAYL_KEYSTORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    """A keystore holding KEY, created with the cheapest KDF cost so the tests stay fast."""
    path = tmp_path / "wallet.json"
    create_keystore(
        path,
        PASSWORD.encode(),
        KEY,
        ops_limit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        mem_limit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StubNode:
    """A stand-in node: canned answers per route, and a record of what it received."""

    url: str = ""
    account: dict[str, Any] = field(
        default_factory=lambda: {
            "address": KEY.address,
            "balance": "5000000000",
            "nonce": 3,
            "next_nonce": 4,
            "shares": "250",
            "royalties_pending": "1000",
            "licensed_until": 0,
            "total_shares": "1000",
        }
    )
    tx_statuses: list[dict[str, Any]] = field(default_factory=list)
    received: list[Transaction] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    overrides: dict[str, tuple[int, Any]] = field(default_factory=dict)
    """Fixed answers by path, checked first."""

    def answer(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, Any]:
        self.paths.append(f"{method} {target}")
        path = urllib.parse.urlsplit(target).path
        if path in self.overrides:
            return self.overrides[path]
        if (method, path) == ("GET", "/model"):
            return 200, {"height": 12, "loss": 0.41, "parameters": 4810, "open": False}
        if (method, path) == ("GET", "/status"):
            return 200, {"chain_id": CHAIN_ID, "height": 12, "syncing": False, "peers": 0}
        if method == "GET" and path.startswith("/accounts/") and path.count("/") == 2:
            return 200, self.account
        if (method, path) == ("POST", "/txs"):
            return self.accept_transaction(body)
        if method == "GET" and path.startswith("/txs/"):
            # Each poll takes the next status; the last one repeats.
            statuses = self.tx_statuses or [{"status": "pending"}]
            return 200, statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if (method, path) == ("GET", "/model/weights"):
            try:
                verify_download(headers, CHAIN_ID, path, int(time.time() * 1000))
            except AccessDenied as exc:
                return 401, {"error": {"code": "unauthorized", "message": str(exc)}}
            return 200, SAFETENSORS
        return 404, {"error": {"code": "not_found", "message": f"no route {path}"}}

    def accept_transaction(self, body: bytes) -> tuple[int, Any]:
        tx = decode_transaction(bytes.fromhex(json.loads(body)["tx"]))
        verify_transaction(tx, CHAIN_ID)
        self.received.append(tx)
        return 202, {"txid": tx.txid.hex()}


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        self.reply("GET")

    def do_POST(self) -> None:
        self.reply("POST")

    def reply(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        status, payload = self.server.stub.answer(method, self.path, self.headers, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if isinstance(payload, bytes):
            self.send_header("X-DRL-Height", "12")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def node() -> Iterator[StubNode]:
    """A stand-in node listening on a loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.stub = StubNode(url=f"http://127.0.0.1:{server.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.stub  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
    thread.join()


def run(*args: str, keystore: Path | None = None, node_url: str | None = None, **kw: Any) -> Result:
    """Run ``derelayl-wallet`` with the given arguments and global options."""
    options: list[str] = []
    if keystore is not None:
        options += ["--keystore", str(keystore)]
    if node_url is not None:
        options += ["--node", node_url]
    return CliRunner().invoke(cli, [*options, *args], **kw)


def wallet(
    keystore: Path, password_file: Path, node: StubNode | None = None
) -> Callable[..., Result]:
    """``run`` bound to a keystore, its password file and (optionally) a node."""

    def invoke(*args: str, **kw: Any) -> Result:
        options = ["--keystore", str(keystore), "--password-file", str(password_file)]
        if node is not None:
            options += ["--node", node.url]
        return CliRunner().invoke(cli, [*options, *args], **kw)

    return invoke


def assert_fails(result: Result, code: int, match: str) -> None:
    """The command failed with ``code`` and one line on stderr, nothing on stdout."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def only_json(result: Result) -> Any:
    """The single JSON document a ``--json`` command printed."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


# --- keys ---------------------------------------------------------------------------------------


def test_new_creates_a_private_keystore(tmp_path: Path, password_file: Path) -> None:
    """``new`` writes a 0600 keystore and prints exactly its address."""
    path = tmp_path / "sub" / "wallet.json"
    result = run("--password-file", str(password_file), "new", keystore=path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == read_keystore_address(path) + "\n"
    decode_address(result.stdout.strip())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_new_prompts_twice_for_the_password(tmp_path: Path) -> None:
    """Without a file or env password, ``new`` prompts (hidden) with confirmation."""
    path = tmp_path / "wallet.json"
    result = run("new", keystore=path, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == read_keystore_address(path)
    assert "Repeat for confirmation" in result.stderr
    assert PASSWORD not in result.stderr


def test_new_refuses_to_overwrite(keystore: Path, password_file: Path) -> None:
    """``new`` on an existing keystore exits 2 and leaves it byte for byte as it was."""
    before = keystore.read_bytes()
    result = wallet(keystore, password_file)("new")
    assert_fails(result, 2, "already exists; refusing to overwrite")
    assert keystore.read_bytes() == before


def test_address_needs_no_password(keystore: Path) -> None:
    """``address`` prints the keystore's address without asking for the password."""
    result = run("address", keystore=keystore, input="")
    assert result.exit_code == 0
    assert result.stdout == KEY.address + "\n"


def test_address_json_is_one_document(keystore: Path) -> None:
    """``address --json`` prints one JSON document."""
    assert only_json(run("address", "--json", keystore=keystore))["address"] == KEY.address


def test_missing_keystore_is_bad_input(tmp_path: Path) -> None:
    """A keystore that does not exist is exit 2 with one line naming it."""
    assert_fails(run("address", keystore=tmp_path / "none.json"), 2, "does not exist")


def test_export_then_import_moves_the_key(
    keystore: Path, password_file: Path, tmp_path: Path
) -> None:
    """A key exported from one keystore imports into a new one with the same address."""
    exported = wallet(keystore, password_file)("export")
    assert exported.exit_code == 0, exported.stderr
    key_file = tmp_path / "key.txt"
    key_file.write_text(exported.stdout)
    target = tmp_path / "moved.json"
    result = wallet(target, password_file)("import", str(key_file))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == KEY.address + "\n"
    assert read_keystore_address(target) == KEY.address


def test_export_to_a_private_file(keystore: Path, password_file: Path, tmp_path: Path) -> None:
    """``export --out`` writes a new 0600 file and refuses to replace an existing one."""
    out = tmp_path / "key.txt"
    invoke = wallet(keystore, password_file)
    assert invoke("export", "--out", str(out)).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("drlkey1")
    before = out.read_bytes()
    assert_fails(invoke("export", "--out", str(out)), 2, "already exists")
    assert out.read_bytes() == before


def test_wrong_password_is_bad_input(keystore: Path, tmp_path: Path) -> None:
    """A wrong password exits 2 with one line and leaves the keystore untouched."""
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the password\n")
    before = keystore.read_bytes()
    assert_fails(wallet(keystore, wrong)("export"), 2, "wrong password")
    assert keystore.read_bytes() == before
    assert sorted(os.listdir(keystore.parent)) == ["wallet.json", "wrong.txt"]


def test_password_file_comes_before_the_environment(
    keystore: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--password-file wins over $DERELAYL_PASSWORD."""
    monkeypatch.setenv("DERELAYL_PASSWORD", "wrong")
    assert wallet(keystore, password_file)("export").exit_code == 0


def test_password_from_the_environment(keystore: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --password-file, $DERELAYL_PASSWORD is used instead of a prompt."""
    monkeypatch.setenv("DERELAYL_PASSWORD", PASSWORD)
    result = run("export", keystore=keystore, input="")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("drlkey1")


def test_empty_password_file_is_bad_input(keystore: Path, tmp_path: Path) -> None:
    """An empty password file is refused rather than tried."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert_fails(wallet(keystore, empty)("export"), 2, "is empty")


def test_tampered_keystore_is_bad_input(keystore: Path, password_file: Path) -> None:
    """A keystore whose address was swapped for another is refused with exit 2."""
    document = json.loads(keystore.read_text())
    document["address"] = OTHER
    keystore.write_text(json.dumps(document))
    assert_fails(wallet(keystore, password_file)("export"), 2, "tampered")


def test_import_refuses_a_mistyped_key(tmp_path: Path, password_file: Path) -> None:
    """A key file with a bad checksum exits 2 and creates no keystore."""
    key_file = tmp_path / "key.txt"
    key_file.write_text("drlkey1" + "0" * 72 + "\n")
    target = tmp_path / "new.json"
    assert_fails(wallet(target, password_file)("import", str(key_file)), 2, "bad checksum")
    assert not target.exists()


def test_import_refuses_to_overwrite(keystore: Path, password_file: Path, tmp_path: Path) -> None:
    """Importing over an existing keystore exits 2 and changes nothing."""
    key_file = tmp_path / "key.txt"
    key_file.write_text(wallet(keystore, password_file)("export").stdout)
    before = keystore.read_bytes()
    assert_fails(wallet(keystore, password_file)("import", str(key_file)), 2, "already exists")
    assert keystore.read_bytes() == before


# --- usage and input errors ---------------------------------------------------------------------


def test_unknown_command_is_one_line(keystore: Path) -> None:
    """Bad usage is exit 2 and one line, not click's multi-line usage text."""
    assert_fails(run("frobnicate", keystore=keystore), 2, "No such command")


@pytest.mark.parametrize(
    ("address", "match"),
    [
        ("drl1abc", "expected 52"),
        (OTHER[:-1] + ("0" if OTHER[-1] != "0" else "1"), "bad checksum"),
        ("0x" + "00" * 20, "does not start with 'drl1'"),
    ],
)
def test_send_refuses_a_bad_address(
    keystore: Path, password_file: Path, closed_port: int, address: str, match: str
) -> None:
    """A bad recipient exits 2 before the node is contacted (a dead node would give 1)."""
    invoke = wallet(keystore, password_file)
    result = invoke("--node", f"http://127.0.0.1:{closed_port}", "send", address, "1")
    assert_fails(result, 2, match)


@pytest.mark.parametrize(
    ("amount", "match"),
    [
        ("1.0000000001", "more than 9 decimal places"),
        ("0", "must be positive"),
        ("1e3", "not a decimal number"),
        ("lots", "not a decimal number"),
        ("99999999999", "exceeds the maximum"),
    ],
)
def test_send_refuses_a_bad_amount(
    keystore: Path, password_file: Path, closed_port: int, amount: str, match: str
) -> None:
    """A bad amount exits 2 with one line, before the node is contacted."""
    invoke = wallet(keystore, password_file)
    result = invoke("--node", f"http://127.0.0.1:{closed_port}", "send", OTHER, amount)
    assert_fails(result, 2, match)


def test_negative_amount_is_bad_input(keystore: Path, password_file: Path) -> None:
    """A negative amount (after ``--`` so it is not an option) exits 2."""
    assert_fails(wallet(keystore, password_file)("send", "--", OTHER, "-1"), 2, "must be positive")


def test_send_refuses_a_bad_fee(keystore: Path, password_file: Path) -> None:
    """A malformed fee exits 2."""
    result = wallet(keystore, password_file)("send", OTHER, "1", "--fee", "0.1e-3")
    assert_fails(result, 2, "fee '0.1e-3' is not a decimal number")


@pytest.mark.parametrize("command", [("send", OTHER), ("access",)], ids=["send", "access"])
@pytest.mark.parametrize(
    ("payment", "match"),
    [
        (("-1",), "amount '-1' must be positive"),
        (("-0.5",), "amount '-0.5' must be positive"),
        (("1", "--fee", "-1"), "fee '-1' must not be negative"),
        (("1", "--fee=-0.000000001"), "fee '-0.000000001' must not be negative"),
    ],
)
def test_payment_refuses_a_negative_amount_or_fee(
    node: StubNode, tmp_path: Path, command: tuple[str, ...], payment: tuple[str, ...], match: str
) -> None:
    """A negative amount or fee exits 2 with one line before any keystore or node is touched.

    The keystore does not exist and no password is given: reading either would fail with
    another message, and the node records every request it receives.
    """
    keystore = tmp_path / "wallet.json"
    assert_fails(run(*command, *payment, keystore=keystore, node_url=node.url), 2, match)
    assert node.paths == []
    assert not keystore.exists()


def test_bad_node_url_is_bad_input(keystore: Path) -> None:
    """A node URL that is not http(s) exits 2."""
    assert_fails(run("balance", keystore=keystore, node_url="ftp://x"), 2, "must look like")


def test_unreachable_node_is_a_runtime_failure(keystore: Path, closed_port: int) -> None:
    """A node that cannot be reached exits 1 with one line naming its URL."""
    url = f"http://127.0.0.1:{closed_port}"
    assert_fails(run("balance", keystore=keystore, node_url=url), 1, f"cannot reach node at {url}")


def test_unreachable_node_from_the_environment(
    keystore: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DERELAYL_NODE selects the node when --node is not given."""
    url = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("DERELAYL_NODE", url)
    assert_fails(run("balance", keystore=keystore), 1, f"cannot reach node at {url}")


def test_balance_refuses_a_bad_address(keystore: Path, closed_port: int) -> None:
    """An explicit ADDR with a bad checksum exits 2 before the node is asked."""
    url = f"http://127.0.0.1:{closed_port}"
    bad = OTHER[:-1] + ("0" if OTHER[-1] != "0" else "1")
    assert_fails(run("balance", bad, keystore=keystore, node_url=url), 2, "bad checksum")


def test_download_refuses_to_overwrite(keystore: Path, password_file: Path, tmp_path: Path) -> None:
    """``model download`` refuses an existing OUT without --force, before any request."""
    out = tmp_path / "weights.safetensors"
    out.write_bytes(b"mine")
    assert_fails(wallet(keystore, password_file)("model", "download", str(out)), 2, "--force")
    assert out.read_bytes() == b"mine"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (click.UsageError("bad"), 2),
        (InvalidAmount("bad"), 2),
        (NotFound("gone"), 2),
        (NodeRefused(422, "invalid_transaction", "no"), 2),
        (AccessDenied("no licence"), 2),
        (NodeUnavailable("down"), 1),
        (PeerError("down"), 1),
        (OSError(28, "No space left on device"), 1),
        (ValueError("surprise"), 1),
        (click.Abort(), 1),
    ],
)
def test_exit_codes_are_mapped_in_one_place(error: BaseException, code: int) -> None:
    """Input errors map to 2, run-time failures to 1; every message is one line."""
    assert exit_code_for(error) == code
    message = error_message(error)
    assert message.startswith("error: ")
    assert "\n" not in message


def test_error_messages_are_one_line() -> None:
    """A message with line breaks (say, from a node) is folded into one line."""
    assert error_message(NodeUnavailable("a\nb\r\nc")) == "error: a b c"


# --- against a stand-in node --------------------------------------------------------------------


def test_balance_json(keystore: Path, node: StubNode) -> None:
    """``balance --json`` prints one document with base units and DRL as decimal strings."""
    document = only_json(run("balance", "--json", keystore=keystore, node_url=node.url))
    assert document["address"] == KEY.address
    assert (document["balance"], document["balance_drl"]) == ("5000000000", "5")
    assert (document["royalties_pending"], document["royalties_pending_drl"]) == (
        "1000",
        "0.000001",
    )
    assert document["nonce"] == 3
    assert document["next_nonce"] == 4
    assert node.paths[-1] == f"GET /accounts/{KEY.address}"


def test_balance_for_people(keystore: Path, node: StubNode) -> None:
    """Plain ``balance`` shows the amounts in DRL."""
    result = run("balance", keystore=keystore, node_url=node.url)
    assert result.exit_code == 0, result.stderr
    assert "5 DRL" in result.stdout
    assert "0.000001 DRL" in result.stdout


def test_malformed_node_answer_is_a_runtime_failure(keystore: Path, node: StubNode) -> None:
    """A float where the API promises a decimal string is refused (exit 1), not rounded."""
    node.account["balance"] = 1.5
    result = run("balance", keystore=keystore, node_url=node.url)
    assert_fails(result, 1, "malformed")


def test_send_signs_a_valid_transfer(keystore: Path, password_file: Path, node: StubNode) -> None:
    """``send`` builds a transfer the core verifies, with the node's next nonce and chain id."""
    result = wallet(keystore, password_file, node)("send", OTHER, "1.25", "--fee", "0.00002")
    assert result.exit_code == 0, result.stderr
    (tx,) = node.received
    assert result.stdout == tx.txid.hex() + "\n"
    assert tx.chain_id == CHAIN_ID
    assert tx.nonce == 4
    assert tx.fee == 20_000
    assert tx.payload == Transfer(decode_address(OTHER), 1_250_000_000)


def test_send_default_fee(keystore: Path, password_file: Path, node: StubNode) -> None:
    """Without --fee, a transfer pays 0.00001 DRL: ten times the devnet minimum."""
    assert wallet(keystore, password_file, node)("send", OTHER, "1").exit_code == 0
    assert node.received[0].fee == 10_000


def test_send_refuses_insufficient_funds(
    keystore: Path, password_file: Path, node: StubNode
) -> None:
    """Amount plus fee beyond balance and pending royalties exits 2 and sends nothing."""
    result = wallet(keystore, password_file, node)("send", OTHER, "5", "--fee", "0.000001001")
    assert_fails(result, 2, "insufficient funds")
    assert node.received == []


def test_send_may_spend_pending_royalties(
    keystore: Path, password_file: Path, node: StubNode
) -> None:
    """Royalties are settled before the balance check, so they count as spendable."""
    result = wallet(keystore, password_file, node)("send", OTHER, "5", "--fee", "0.000001")
    assert result.exit_code == 0, result.stderr
    assert len(node.received) == 1


def test_send_wait_returns_once_confirmed(
    keystore: Path, password_file: Path, node: StubNode
) -> None:
    """``send --wait`` polls until the node reports the transaction confirmed."""
    confirmed = {"status": "confirmed", "height": 13, "block": "ab" * 32, "confirmations": 1}
    node.tx_statuses = [{"status": "pending"}, confirmed]
    result = wallet(keystore, password_file, node)("send", OTHER, "1", "--wait", "--json")
    document = only_json(result)
    assert document["txid"] == node.received[0].txid.hex()
    assert (document["status"], document["height"]) == ("confirmed", 13)
    assert (document["amount"], document["amount_drl"]) == ("1000000000", "1")


def test_send_wait_times_out(keystore: Path, password_file: Path, node: StubNode) -> None:
    """``--wait`` gives up after --timeout with exit 1; the txid was already printed."""
    invoke = wallet(keystore, password_file, node)
    started = time.monotonic()
    result = invoke("send", OTHER, "1", "--wait", "--timeout", "0.3")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert result.stdout == node.received[0].txid.hex() + "\n"
    assert result.stderr.count("\n") == 1
    assert "not confirmed within 0.3 s" in result.stderr


def test_refused_transaction_is_bad_input(
    keystore: Path, password_file: Path, node: StubNode
) -> None:
    """A 4xx from the node exits 2 with the node's own message on one line."""
    error = {"error": {"code": "invalid_transaction", "message": "fee 10 is below\nthe minimum"}}
    node.overrides["/txs"] = (422, error)
    result = wallet(keystore, password_file, node)("send", OTHER, "1")
    assert_fails(result, 2, "invalid_transaction): fee 10 is below the minimum")


def test_node_failure_is_a_runtime_failure(
    keystore: Path, password_file: Path, node: StubNode
) -> None:
    """A 5xx from the node exits 1."""
    node.overrides["/status"] = (503, {"error": {"code": "syncing", "message": "catching up"}})
    assert_fails(wallet(keystore, password_file, node)("send", OTHER, "1"), 1, "catching up")


def test_access_signs_a_valid_payment(keystore: Path, password_file: Path, node: StubNode) -> None:
    """``access`` builds an access transaction the core verifies."""
    result = wallet(keystore, password_file, node)("access", "1", "--json")
    document = only_json(result)
    (tx,) = node.received
    assert tx.payload == Access(10**9)
    assert document["kind"] == "access"
    assert document["txid"] == tx.txid.hex()


def test_rewards_json_reports_the_contribution_share(keystore: Path, node: StubNode) -> None:
    """``rewards --json`` combines totals, pending royalties and shares of the whole model."""
    node.overrides[f"/accounts/{KEY.address}/rewards"] = (
        200,
        {
            "totals": {"blocks": 2, "emission": "100000000000", "fees": "3000", "royalties": "7"},
            "items": [{"height": 5, "block": "cd" * 32, "emission": "50000000000", "fees": "0"}],
        },
    )
    document = only_json(run("rewards", "--json", keystore=keystore, node_url=node.url))
    assert document["blocks_proposed"] == 2
    assert (document["emission"], document["emission_drl"]) == ("100000000000", "100")
    assert document["fees_drl"] == "0.000003"
    assert document["royalties_pending"] == "1000"
    assert (document["shares"], document["total_shares"]) == ("250", "1000")
    assert document["contribution_share"] == "0.25"
    assert document["items"][0]["emission_drl"] == "50"


def test_rewards_total_shares_from_the_model(keystore: Path, node: StubNode) -> None:
    """Without total shares in the account answer, the ones /model gives are used."""
    del node.account["total_shares"]
    node.overrides[f"/accounts/{KEY.address}/rewards"] = (200, {"items": []})
    node.overrides["/model"] = (200, {"height": 12, "total_shares": "2000"})
    document = only_json(run("rewards", "--json", keystore=keystore, node_url=node.url))
    assert document["contribution_share"] == "0.125"


def test_rewards_without_total_shares(keystore: Path, node: StubNode) -> None:
    """If the node does not publish total shares, the share is reported as unknown."""
    del node.account["total_shares"]
    node.overrides[f"/accounts/{KEY.address}/rewards"] = (200, {"items": []})
    document = only_json(run("rewards", "--json", keystore=keystore, node_url=node.url))
    assert document["contribution_share"] is None
    assert document["blocks_proposed"] == 0


def test_history_for_people(keystore: Path, node: StubNode) -> None:
    """Plain ``history`` is a table with the other party and the next-page cursor."""
    node.overrides[f"/accounts/{KEY.address}/txs"] = (
        200,
        {
            "pending": [],
            "items": [
                {"type": "tx", "kind": "transfer", "from": KEY.address, "to": OTHER,
                 "amount": "2500000000", "fee": "10000", "height": 9, "txid": "12" * 32},
                {"type": "royalty", "height": 5, "block": "cd" * 32, "amount": "7"},
            ],
            "next": "5-0",
        },
    )  # fmt: skip
    result = run("history", keystore=keystore, node_url=node.url)
    assert result.exit_code == 0, result.stderr
    assert f"to {OTHER[:8]}...{OTHER[-4:]}" in result.stdout
    assert "royalty" in result.stdout
    assert "0.000000007" in result.stdout
    assert result.stdout.rstrip().endswith("more: --before 5-0")


def test_history_passes_paging_and_annotates(keystore: Path, node: StubNode) -> None:
    """``history`` forwards --limit/--before and returns items with DRL twins and a cursor."""
    node.overrides[f"/accounts/{KEY.address}/txs"] = (
        200,
        {
            "pending": [{"kind": "access", "amount": "1000000000", "fee": "10000"}],
            "items": [{"type": "tx", "kind": "transfer", "amount": "2500000000", "height": 9}],
            "next": "9-0",
        },
    )
    args = ("history", "--limit", "5", "--before", "x y", "--json")
    document = only_json(run(*args, keystore=keystore, node_url=node.url))
    assert document["items"] == [
        {"type": "tx", "kind": "transfer", "amount": "2500000000", "amount_drl": "2.5", "height": 9}
    ]
    assert document["pending"][0]["fee_drl"] == "0.00001"
    assert document["next"] == "9-0"
    assert node.paths[-1] == f"GET /accounts/{KEY.address}/txs?limit=5&before=x+y"


def test_model_download_writes_the_weights(
    keystore: Path, password_file: Path, node: StubNode, tmp_path: Path
) -> None:
    """A signed download the node accepts lands at OUT, with no temporary file left."""
    out = tmp_path / "model" / "weights.safetensors"
    out.parent.mkdir()
    result = wallet(keystore, password_file, node)("model", "download", str(out))
    assert result.exit_code == 0, result.stderr
    assert (
        result.stdout
        == f"wrote {len(SAFETENSORS)} bytes of weights (model at height 12) to {out}\n"
    )
    assert out.read_bytes() == SAFETENSORS
    assert os.listdir(out.parent) == ["weights.safetensors"]


def test_open_model_downloads_without_a_key(node: StubNode, tmp_path: Path) -> None:
    """When the genesis declares the model open, no keystore or password is needed."""
    node.overrides["/model"] = (200, {"height": 12, "open": True})
    node.overrides["/model/weights"] = (200, SAFETENSORS)
    out = tmp_path / "weights.safetensors"
    result = run(
        "model", "download", str(out), "--json", keystore=tmp_path / "none.json", node_url=node.url
    )
    assert only_json(result) == {
        "path": str(out),
        "bytes": len(SAFETENSORS),
        "height": 12,
        "block": None,
    }
    assert out.read_bytes() == SAFETENSORS


def test_model_download_force_replaces(
    keystore: Path, password_file: Path, node: StubNode, tmp_path: Path
) -> None:
    """--force replaces an existing OUT."""
    out = tmp_path / "weights.safetensors"
    out.write_bytes(b"old")
    result = wallet(keystore, password_file, node)("model", "download", "--force", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == SAFETENSORS


def test_model_download_without_licence(
    keystore: Path, password_file: Path, node: StubNode, tmp_path: Path
) -> None:
    """A 403 is one line about the missing licence, exit 2, and no file is left behind."""
    node.overrides["/model/weights"] = (403, {"error": {"code": "forbidden", "message": "no"}})
    out = tmp_path / "out" / "weights.safetensors"
    out.parent.mkdir()
    result = wallet(keystore, password_file, node)("model", "download", str(out))
    assert_fails(result, 2, "no model licence or contribution shares")
    assert os.listdir(out.parent) == []


def test_model_download_refuses_non_safetensors(
    keystore: Path, password_file: Path, node: StubNode, tmp_path: Path
) -> None:
    """An answer that is not a safetensors file is not saved (exit 1)."""
    node.overrides["/model/weights"] = (200, b"<html>hello</html>")
    out = tmp_path / "out" / "weights.safetensors"
    out.parent.mkdir()
    result = wallet(keystore, password_file, node)("model", "download", str(out))
    assert_fails(result, 1, "not a safetensors file")
    assert os.listdir(out.parent) == []
