"""What the wallet prints: one JSON document for scripts, or fields and tables for people.

Node answers are untrusted text: every value from one is printed as one printable line
(:func:`show`), and the console has markup off so a value cannot style or hide the output.
Tables abbreviate hashes and addresses; JSON always has the full values.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from derelayl_chain.exceptions import InvalidAmount
from wallet.amounts import (
    AMOUNT_KEYS,
    annotate_amounts,
    format_drl,
    format_ratio,
    parse_units,
    units_json,
)
from wallet.client import AccountView, clean_text

PIPE_WIDTH = 160
_ID_COLUMNS = frozenset({"block", "txid", "id", "hash", "from", "to", "counterparty"})
"""Table columns of hashes and addresses: abbreviated."""


# --- building blocks ----------------------------------------------------------------------------


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def make_console() -> Console:
    """A console for people; markup is off because node answers are printed as text.

    Output to a pipe or file gets a wide page rather than rich's 80 columns, so rows of
    hashes and amounts stay on one line.
    """
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(markup=False, highlight=False, emoji=False, width=width)


def print_fields(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    make_console().print(table)


def print_items(items: list[Any], columns: list[str]) -> None:
    """A table of node answer items; columns that no item has are left out."""
    rows = [item for item in items if isinstance(item, dict)]
    present = [c for c in columns if any(c in row for row in rows)]
    if not rows or not present:
        click.echo("no entries")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in present:
        table.add_column(column, justify="right" if column == "height" else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(show_cell(column, row.get(column)) for column in present))
    make_console().print(table)


def drl(units: int) -> str:
    return f"{format_drl(units)} DRL"


def show(value: object) -> str:
    """A value from a node answer as one printable line; missing values as ``-``."""
    return "-" if value is None or value == "" else clean_text(str(value), 120)


def show_drl(value: object) -> str:
    try:
        return format_drl(parse_units(value))
    except InvalidAmount:
        return show(value)


def show_cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if column in AMOUNT_KEYS:
        return show_drl(value)
    if column in _ID_COLUMNS:
        return abbreviate(show(value))
    return show(value)


def abbreviate(text: str) -> str:
    """A long hash or address cut to its ends; JSON output always has the full value."""
    return text if len(text) <= 24 else f"{text[:8]}...{text[-4:]}"


# --- balance ------------------------------------------------------------------------------------


def account_json(account: AccountView) -> dict[str, Any]:
    return {
        "address": account.address,
        **units_json("balance", account.balance),
        **units_json("royalties_pending", account.royalties_pending),
        **units_json("spendable", account.spendable),
        "nonce": account.nonce,
        "next_nonce": account.next_nonce,
        "shares": str(account.shares),
        "licensed_until": account.licensed_until,
    }


def print_balance(account: AccountView) -> None:
    print_fields(
        [
            ("address", account.address),
            ("balance", drl(account.balance)),
            ("royalties pending", drl(account.royalties_pending)),
            ("nonce", f"{account.nonce} (next {account.next_nonce})"),
            ("shares", str(account.shares)),
            (
                "licensed until",
                f"height {account.licensed_until}" if account.licensed_until else "-",
            ),
        ]
    )


# --- rewards and history ------------------------------------------------------------------------


def print_rewards(
    address: str, summary: dict[str, Any], account: AccountView, total_shares: int | None
) -> None:
    """The reward totals and contribution share as fields, then one row per rewarded block."""
    share = "unknown"
    if total_shares:
        share = format_ratio(account.shares * 100, total_shares, 4) + "%"
    print_fields(
        [
            ("address", address),
            ("blocks proposed", str(summary["blocks_proposed"])),
            ("emission", drl(int(summary["emission"]))),
            ("fees", drl(int(summary["fees"]))),
            ("royalties received", drl(int(summary["royalties"]))),
            ("royalties pending", drl(account.royalties_pending)),
            ("shares", f"{account.shares}" + (f" of {total_shares}" if total_shares else "")),
            ("contribution share", share),
        ]
    )
    print_items(summary["items"], ["height", "block", "emission", "fees", "royalties"])


def history_json(
    address: str, pending: list[Any], items: list[Any], cursor: object
) -> dict[str, Any]:
    return {
        "address": address,
        "pending": annotate_amounts(pending),
        "items": annotate_amounts(items),
        "next": cursor,
    }


def print_history(address: str, pending: list[Any], items: list[Any], cursor: object) -> None:
    """Pending transactions first, then the confirmed page, then how to ask for the next one."""
    rows = [
        history_row(address, {"height": "pending", **p}) for p in pending if isinstance(p, dict)
    ]
    rows += [history_row(address, item) for item in items if isinstance(item, dict)]
    print_items(rows, ["height", "kind", "amount", "fee", "counterparty", "id"])
    if cursor is not None:
        click.echo(f"more: --before {show(cursor)}")


def history_row(address: str, item: dict[str, Any]) -> dict[str, Any]:
    """A history item for people: the other party of a transfer and one id column."""
    row = dict(item)
    row["kind"] = item.get("kind") or item.get("type")
    sender, recipient = item.get("from"), item.get("to")
    if recipient and sender == address:
        row["counterparty"] = f"to {abbreviate(recipient)}"
    elif sender and sender != address:
        row["counterparty"] = f"from {abbreviate(sender)}"
    identifier = item.get("txid") or item.get("block")
    if identifier:
        row["id"] = identifier
    return row


# --- the model ----------------------------------------------------------------------------------


def print_model_info(answer: dict[str, Any]) -> None:
    """The scalar fields of the node's model answer, one per line."""
    print_fields([(str(k), show(v)) for k, v in answer.items() if not isinstance(v, dict | list)])
