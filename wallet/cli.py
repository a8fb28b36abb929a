"""derelayl-wallet: keys, balances, payments, relay rewards and the model, over the node's API.

Every command checks its input before anything is signed or sent: addresses by their checksum,
amounts as exact decimals. Errors become exit codes in one place, :meth:`WalletGroup.main`:
0 success, 1 runtime failure (node unreachable, timeouts), 2 bad usage or bad input (a bad
address or amount, a wrong password, a tampered keystore, a request the node refused). Each
error is one line on stderr, never a traceback. Read commands take ``--json`` and then print
exactly one JSON document, with amounts both in base units and in DRL, as decimal strings.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from derelayl_chain.access import sign_download
from derelayl_chain.crypto import KeyPair, decode_address
from derelayl_chain.exceptions import (
    AccessDenied,
    ConfigError,
    DecodeError,
    DeRelayLError,
    InsufficientFunds,
    InvalidAmount,
    KeystoreError,
    NotFound,
    ValidationError,
)
from derelayl_chain.transaction import Transaction, make_access, make_transfer
from wallet.amounts import MAX_UNITS, annotate_amounts, format_drl, parse_drl, units_json
from wallet.client import (
    DEFAULT_NODE_URL,
    WEIGHTS_PATH,
    NodeClient,
    NodeRefused,
    check_node_url,
    clean_text,
    summarize_rewards,
)
from wallet.keystore import (
    create_keystore,
    export_key,
    import_key,
    load_keystore,
    read_keystore_address,
)
from wallet.render import (
    account_json,
    drl,
    emit_json,
    history_json,
    print_balance,
    print_history,
    print_model_info,
    print_rewards,
    show,
)

DEFAULT_KEYSTORE = "~/.derelayl/wallet.json"
PASSWORD_ENV = "DERELAYL_PASSWORD"
DEFAULT_FEE = "0.00001"
"""Ten times the devnet's minimum fee of 0.000001 DRL."""
DEFAULT_WAIT_S = 60.0
MAX_SECRET_FILE_BYTES = 4096
"""Password and exported-key files are tiny; a bigger file is the wrong file."""
_BAD_INPUT: tuple[type[BaseException], ...] = (
    DecodeError,
    InvalidAmount,
    ValidationError,
    KeystoreError,
    AccessDenied,
    NodeRefused,
    ConfigError,
    NotFound,
)
"""Errors that mean the user's input was wrong: exit code 2."""


# --- error mapping: the one place -------------------------------------------------------------


def exit_code_for(exc: BaseException) -> int:
    """2 for bad usage or input, 1 for everything that went wrong at run time."""
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return 2 if isinstance(exc, _BAD_INPUT) else 1


def error_message(exc: BaseException) -> str:
    """One line saying what was wrong."""
    if isinstance(exc, click.UsageError):
        message = f"{exc.format_message()} (see --help)"
    elif isinstance(exc, click.ClickException):
        message = exc.format_message()
    elif isinstance(exc, click.Abort):
        message = "aborted"
    elif isinstance(exc, DeRelayLError):
        message = str(exc) or type(exc).__name__
    elif isinstance(exc, OSError):
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    else:
        message = f"unexpected error ({type(exc).__name__}: {exc})"
    return "error: " + clean_text(message, 2000)


class WalletGroup(click.Group):
    """The command group; its ``main`` turns every error into one line and an exit code."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except Exception as exc:  # noqa: BLE001 -- no traceback ever reaches the user
            click.echo(error_message(exc), err=True)
            sys.exit(exit_code_for(exc))
        sys.exit(result if isinstance(result, int) else 0)


# --- settings and password ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, shared by every command."""

    node_url: str
    keystore: Path
    password_file: Path | None

    def client(self) -> NodeClient:
        """A client for the node; the URL is checked only by commands that use it."""
        return NodeClient(check_node_url(self.node_url))


def read_password(settings: Settings, *, confirm: bool = False) -> bytes:
    """The password from --password-file, else $DERELAYL_PASSWORD, else a hidden prompt."""
    if settings.password_file is not None:
        data = read_small_file(str(settings.password_file), "password file")
        password = data.removesuffix(b"\n").removesuffix(b"\r")
        source = f"password file {settings.password_file}"
    elif os.environ.get(PASSWORD_ENV):
        password, source = os.environ[PASSWORD_ENV].encode(), f"${PASSWORD_ENV}"
    else:
        text = click.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
        password, source = text.encode(), "the prompt"
    if not password:
        raise click.UsageError(f"the password from {source} is empty")
    return password


def read_small_file(path: str, what: str) -> bytes:
    """The bytes of a small file (``-`` is standard input), refusing anything larger."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_SECRET_FILE_BYTES + 1)
        else:
            with open(path, "rb") as file:
                data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise click.UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise click.UsageError(f"{what} {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    return data


def resolve_address(settings: Settings, address: str | None) -> str:
    """A checked address: the one given, or the keystore's."""
    if address is None:
        return read_keystore_address(settings.keystore)
    address = address.strip()
    decode_address(address)
    return address


def refuse_existing_keystore(path: Path) -> None:
    """Fail before asking for a password that could not be used."""
    if os.path.lexists(path):
        raise KeystoreError(f"keystore {path} already exists; refusing to overwrite")


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
fee_option = click.option(
    "--fee", default=DEFAULT_FEE, show_default=True, help="Fee in DRL, paid to the proposer."
)
wait_option = click.option("--wait", is_flag=True, help="Return only once the tx is confirmed.")
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=86_400),
    default=DEFAULT_WAIT_S,
    show_default=True,
    help="Seconds --wait waits before giving up (exit 1).",
)


_NEGATIVE_NUMBER = re.compile(r"-[0-9.][0-9.,]*", re.ASCII)


class PaymentCommand(click.Command):
    """A command whose AMOUNT may be typed negative: ``send TO -1`` reaches the amount check.

    Click would take ``-1`` for an unknown option and answer "No such option"; when a negative
    number is on the command line, unknown options are kept as arguments instead, so the amount
    is refused for what it is (a mistyped option then shows as an unexpected extra argument).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(_NEGATIVE_NUMBER.fullmatch(arg) for arg in args):
            ctx.ignore_unknown_options = True
        return super().parse_args(ctx, args)


# --- the command group --------------------------------------------------------------------------


@click.group(
    "derelayl-wallet", cls=WalletGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--node",
    envvar="DERELAYL_NODE",
    default=DEFAULT_NODE_URL,
    show_default=True,
    help="Node API URL (env DERELAYL_NODE).",
)
@click.option(
    "--keystore",
    envvar="DERELAYL_KEYSTORE",
    default=DEFAULT_KEYSTORE,
    show_default=True,
    help="Keystore file (env DERELAYL_KEYSTORE).",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Read the password from FILE (else ${PASSWORD_ENV}, else a prompt).",
)
@click.pass_context
def cli(ctx: click.Context, node: str, keystore: str, password_file: Path | None) -> None:
    """DeRelayL wallet: keys, payments, relay rewards and the model."""
    ctx.obj = Settings(node, Path(keystore).expanduser(), password_file)


# --- keys ---------------------------------------------------------------------------------------


@cli.command()
@json_option
@click.pass_obj
def new(settings: Settings, as_json: bool) -> None:
    """Create an encrypted keystore (never overwrites one) and print its address."""
    refuse_existing_keystore(settings.keystore)
    keypair = create_keystore(settings.keystore, read_password(settings, confirm=True))
    print_address(keypair.address, settings.keystore, as_json)


@cli.command()
@json_option
@click.pass_obj
def address(settings: Settings, as_json: bool) -> None:
    """Print the keystore's address (no password needed)."""
    print_address(read_keystore_address(settings.keystore), settings.keystore, as_json)


def print_address(text: str, keystore: Path, as_json: bool) -> None:
    if as_json:
        emit_json({"address": text, "keystore": str(keystore)})
    else:
        click.echo(text)


@cli.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the key to a new file (mode 0600) instead of printing it.",
)
@click.pass_obj
def export(settings: Settings, out: Path | None) -> None:
    """Print the keystore's secret key as checksummed text, for 'import'."""
    text = export_key(settings.keystore, read_password(settings))
    if out is None:
        click.echo(text)
        return
    write_new_private_file(out, (text + "\n").encode())
    click.echo(f"wrote the key of {read_keystore_address(settings.keystore)} to {out}")


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@click.pass_obj
def import_command(settings: Settings, file: str, as_json: bool) -> None:
    """Create a keystore from a key exported to FILE ('-' reads standard input)."""
    data = read_small_file(file, "exported key file")
    try:
        keypair = import_key(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise KeystoreError(f"exported key file {file} is not UTF-8 text") from None
    refuse_existing_keystore(settings.keystore)
    create_keystore(settings.keystore, read_password(settings, confirm=True), keypair)
    print_address(keypair.address, settings.keystore, as_json)


def write_new_private_file(path: Path, data: bytes) -> None:
    """Write a new file readable by its owner only; never replace an existing one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise click.UsageError(f"{path} already exists; refusing to overwrite") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


# --- balances and payments ----------------------------------------------------------------------


@cli.command()
@click.argument("addr", required=False)
@json_option
@click.pass_obj
def balance(settings: Settings, addr: str | None, as_json: bool) -> None:
    """Spendable balance, pending royalties, nonce and licence of ADDR (default: yours)."""
    account = settings.client().account(resolve_address(settings, addr))
    if as_json:
        emit_json(account_json(account))
    else:
        print_balance(account)


@cli.command(cls=PaymentCommand)
@click.argument("to")
@click.argument("amount")
@fee_option
@wait_option
@timeout_option
@json_option
@click.pass_obj
def send(
    settings: Settings, to: str, amount: str, fee: str, wait: bool, timeout: float, as_json: bool
) -> None:
    """Send AMOUNT DRL to address TO; print the txid."""
    to = to.strip()
    recipient = decode_address(to)
    units, fee_units = parse_payment(amount, fee)

    def build(key: KeyPair, chain_id: int, nonce: int) -> Transaction:
        return make_transfer(key, chain_id, nonce, recipient, units, fee_units)

    submit_payment(
        settings, build, units, fee_units, wait, timeout, as_json, {"kind": "transfer", "to": to}
    )


@cli.command(cls=PaymentCommand)
@click.argument("amount")
@fee_option
@wait_option
@timeout_option
@json_option
@click.pass_obj
def access(
    settings: Settings, amount: str, fee: str, wait: bool, timeout: float, as_json: bool
) -> None:
    """Pay AMOUNT DRL into the model's royalty pool for a model licence; print the txid."""
    units, fee_units = parse_payment(amount, fee)

    def build(key: KeyPair, chain_id: int, nonce: int) -> Transaction:
        return make_access(key, chain_id, nonce, units, fee_units)

    submit_payment(settings, build, units, fee_units, wait, timeout, as_json, {"kind": "access"})


def parse_payment(amount: str, fee: str) -> tuple[int, int]:
    """Exact base units of an amount and a fee whose sum a transaction can carry."""
    units = parse_drl(amount)
    fee_units = parse_drl(fee, what="fee", allow_zero=True)
    if units + fee_units > MAX_UNITS:
        raise InvalidAmount(f"amount plus fee exceeds the maximum of {format_drl(MAX_UNITS)} DRL")
    return units, fee_units


def submit_payment(
    settings: Settings,
    build: Callable[[KeyPair, int, int], Transaction],
    amount: int,
    fee: int,
    wait: bool,
    timeout: float,
    as_json: bool,
    details: dict[str, str],
) -> None:
    """Check funds, sign with the keystore's key, submit, and optionally wait."""
    sender = read_keystore_address(settings.keystore)
    client = settings.client()
    chain_id = client.chain_id()
    account = client.account(sender)
    if amount + fee > account.spendable:
        raise InsufficientFunds(
            f"insufficient funds: {sender} can spend {drl(account.spendable)}, "
            f"this needs {format_drl(amount)} + fee {drl(fee)}"
        )
    key = load_keystore(settings.keystore, read_password(settings))
    tx = build(key, chain_id, account.next_nonce)
    txid = client.submit_transaction(tx)
    document: dict[str, Any] = {
        "txid": txid,
        "status": "pending",
        **details,
        "from": sender,
        **units_json("amount", amount),
        **units_json("fee", fee),
        "nonce": tx.nonce,
    }
    if not as_json:
        click.echo(txid)
    if wait:
        status = client.wait_confirmed(txid, timeout)
        document |= {"status": "confirmed", "height": status.height, "block": status.block}
        document["confirmations"] = status.confirmations
        if details["kind"] == "access":
            document["licensed_until"] = client.account(sender).licensed_until
        if not as_json:
            click.echo(f"confirmed at height {status.height} in block {show(status.block)}")
            if "licensed_until" in document:
                click.echo(f"model licence until height {document['licensed_until']}")
    if as_json:
        emit_json(document)


# --- rewards and history ------------------------------------------------------------------------


@cli.command()
@click.argument("addr", required=False)
@json_option
@click.pass_obj
def rewards(settings: Settings, addr: str | None, as_json: bool) -> None:
    """Relay rewards of ADDR: blocks proposed, emission, fees, royalties, contribution share."""
    address = resolve_address(settings, addr)
    client = settings.client()
    answer = client.rewards(address)
    account = client.account(address)
    total_shares = account.total_shares
    if total_shares is None:
        total_shares = client.total_shares()
    summary = summarize_rewards(answer, account, total_shares)
    if as_json:
        emit_json(summary)
    else:
        print_rewards(address, summary, account, total_shares)


@cli.command()
@click.argument("addr", required=False)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--before", metavar="CURSOR", help="Continue from a cursor of a previous page.")
@json_option
@click.pass_obj
def history(
    settings: Settings, addr: str | None, limit: int, before: str | None, as_json: bool
) -> None:
    """Transactions and rewards of ADDR (default: yours), newest first."""
    address = resolve_address(settings, addr)
    answer = settings.client().history(address, limit, before)
    items = answer.get("items")
    items = items if isinstance(items, list) else []
    pending = answer.get("pending")
    pending = pending if isinstance(pending, list) else []
    cursor = answer.get("next") or None
    if as_json:
        emit_json(history_json(address, pending, items, cursor))
    else:
        print_history(address, pending, items, cursor)


# --- the model ----------------------------------------------------------------------------------


@cli.group()
def model() -> None:
    """The shared model: its state and its weights."""


@model.command("info")
@json_option
@click.pass_obj
def model_info(settings: Settings, as_json: bool) -> None:
    """Height, loss, accuracy and size of the model at the tip."""
    answer = settings.client().model()
    if as_json:
        emit_json(annotate_amounts(answer))
    else:
        print_model_info(answer)


@model.command("download")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@json_option
@click.pass_obj
def model_download(settings: Settings, out: Path, force: bool, as_json: bool) -> None:
    """Download the current weights (safetensors) to OUT with a signed request."""
    if os.path.lexists(out) and not force:
        raise click.UsageError(f"{out} already exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise click.UsageError(f"directory {out.parent} does not exist")
    client = settings.client()
    sender, headers = None, {}
    if client.model().get("open") is not True:
        sender = read_keystore_address(settings.keystore)
        chain_id = client.chain_id()
        key = load_keystore(settings.keystore, read_password(settings))
        headers = sign_download(key, chain_id, WEIGHTS_PATH, time.time_ns() // 1_000_000)
    try:
        saved = client.save_weights(headers, out, replace=force)
    except NodeRefused as exc:
        raise download_refused(exc, sender or "this key") from None
    except FileExistsError:
        raise click.UsageError(f"{out} already exists; pass --force to replace it") from None
    if as_json:
        emit_json(
            {"path": str(out), "bytes": saved.size, "height": saved.height, "block": saved.block}
        )
    else:
        at = f" (model at height {saved.height})" if saved.height is not None else ""
        click.echo(f"wrote {saved.size} bytes of weights{at} to {out}")


def download_refused(exc: NodeRefused, sender: str) -> DeRelayLError:
    """The error to show for a refused download, naming the likely cause."""
    if exc.status == 403:
        return AccessDenied(
            f"{sender} holds no model licence or contribution shares; "
            "buy a licence with 'derelayl-wallet access AMOUNT'"
        )
    if exc.status == 401:
        return AccessDenied(f"node rejected the download signature (check this clock): {exc}")
    return exc


def main() -> None:
    """Console entry point of ``derelayl-wallet``."""
    cli.main(prog_name="derelayl-wallet")
