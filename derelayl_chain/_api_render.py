"""JSON views of blocks, transactions and accounts for the public API (see :mod:`api`).

Reads only: the chain's index, the store's history and reward tables, the mempool. Amounts are
rendered as decimal strings; fixed-point losses and accuracies as numbers beside their integers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from derelayl_chain import encoding
from derelayl_chain.access import holds_licence
from derelayl_chain.block import Block, BlockHeader, max_body_bytes
from derelayl_chain.chain_records import STATUS_CONNECTED, STATUS_INVALID, IndexEntry
from derelayl_chain.consensus import PPM, effective_difficulty
from derelayl_chain.crypto import address_of, encode_address
from derelayl_chain.encoding import HASH_SIZE, as_bytes, as_list, as_uint
from derelayl_chain.learning.task import LOSS_SCALE
from derelayl_chain.state import EMPTY_ACCOUNT
from derelayl_chain.storage import schema
from derelayl_chain.transaction import Transaction, Transfer, decode_transaction

if TYPE_CHECKING:
    from derelayl_chain.node import Node

_MAX_RECORD_BYTES = 1024


def fixed(value: int) -> float:
    """A fixed-point loss, accuracy or improvement as a number for people."""
    return value / LOSS_SCALE


def transaction_json(tx: Transaction) -> dict[str, Any]:
    document: dict[str, Any] = {
        "txid": tx.txid.hex(),
        "kind": tx.kind.name.lower(),
        "chain_id": tx.chain_id,
        "from": address_of(tx.sender),
        "nonce": tx.nonce,
        "fee": str(tx.fee),
        "amount": str(tx.amount),
    }
    if isinstance(tx.payload, Transfer):
        document["to"] = encode_address(tx.payload.to)
    return document


def model_fields(entry: IndexEntry, evaluated: bool) -> dict[str, Any]:
    """Claimed loss (consensus) and this node's evaluated accuracy, as numbers and integers."""
    header = entry.header
    return {
        "loss": fixed(header.claimed_loss),
        "loss_fixed": header.claimed_loss,
        "accuracy": fixed(entry.accuracy) if evaluated else None,
        "accuracy_fixed": entry.accuracy if evaluated else None,
    }


def improvement_of(node: Node, header: BlockHeader) -> int:
    """Parent's claimed loss minus the block's (0 for genesis)."""
    if header.height == 0:
        return 0
    parent = node.chain.index.get(header.parent)
    return parent.header.claimed_loss - header.claimed_loss if parent else 0


def proposer_address(header: BlockHeader) -> str | None:
    return address_of(header.proposer) if header.height else None


def canonical_entries(node: Node, start: int, limit: int) -> list[IndexEntry]:
    return [node.chain.index[h.hash] for h in node.chain.canonical_headers(start, limit)]


def count_transactions(node: Node, entry: IndexEntry) -> int:
    """Transactions in a stored block, counted without building them."""
    if entry.height == 0:
        return 0
    raw = node.store.get(schema.body_key(entry.hash))
    return len(as_list(encoding.decode(raw, max_body_bytes(0)))) if raw else 0


def block_summary(node: Node, entry: IndexEntry) -> dict[str, Any]:
    header = entry.header
    improvement = improvement_of(node, header)
    return {
        "height": header.height,
        "hash": header.hash.hex(),
        "parent": header.parent.hex(),
        "timestamp": header.timestamp_ms,
        "proposer": proposer_address(header),
        "reward_to": encode_address(header.reward_to) if header.height else None,
        **model_fields(entry, entry.status != STATUS_INVALID and entry.loss > 0),
        "difficulty": header.difficulty,
        "improvement": fixed(improvement),
        "improvement_fixed": improvement,
    }


def block_json(node: Node, entry: IndexEntry, block: Block) -> dict[str, Any]:
    """Everything about one block, its rewards derived from the header and the fees."""
    header = entry.header
    chain = node.chain
    canonical = chain.is_canonical(header.hash)
    fees = sum(tx.fee for tx in block.transactions)
    elapsed = 0
    if header.height:
        parent = chain.index.get(header.parent)
        elapsed = header.timestamp_ms - parent.header.timestamp_ms if parent else 0
    d_eff = effective_difficulty(header.difficulty, elapsed, chain.params.decay_ms)
    status = {STATUS_CONNECTED: "connected", STATUS_INVALID: "invalid"}.get(entry.status, "stored")
    return {
        **block_summary(node, entry),
        "txs": len(block.transactions),
        "status": status,
        "canonical": canonical,
        "confirmations": chain.tip.height - header.height + 1 if canonical else 0,
        "proposer_key": header.proposer.hex(),
        "effective_difficulty": d_eff if header.height else 0,
        "model_hash": header.model_hash.hex(),
        "state_root": header.state_root.hex(),
        "tx_root": header.tx_root.hex(),
        "delta_hash": header.delta_hash.hex(),
        "delta_size": len(block.delta),
        "transactions": [tx.txid.hex() for tx in block.transactions],
        "rewards": {
            "emission": str(header.reward - fees),
            "fees": str(fees),
            "total": str(header.reward),
            "reward_to": encode_address(header.reward_to) if header.height else None,
        },
    }


# --- accounts ---------------------------------------------------------------------------------


def account_json(node: Node, account: bytes) -> dict[str, Any]:
    state = node.chain.get_account(account) or EMPTY_ACCOUNT
    ledger = node.chain.ledger
    return {
        "address": encode_address(account),
        "balance": str(state.balance),
        "nonce": state.nonce,
        "next_nonce": node.mempool.next_nonce(account),
        "shares": str(state.shares),
        "total_shares": str(ledger.total_shares),
        "royalties_pending": str(state.pending_royalties(ledger.royalty_per_share)),
        "licensed_until": state.licensed_until,
        "licensed": holds_licence(state, node.chain.tip.height),
    }


def _reward_rows(node: Node, account: bytes) -> dict[int, dict[str, Any]]:
    """Per-height emission, fees and royalties credited to ``account``."""
    rows: dict[int, dict[str, Any]] = {}

    def row(height: int, block_hash: bytes) -> dict[str, Any]:
        empty = {"height": height, "block": block_hash.hex(), "emission": 0, "fees": 0,
                 "royalties": 0, "proposed": False}  # fmt: skip
        return rows.setdefault(height, empty)

    for key, value in node.store.iterate(schema.reward_prefix(account)):
        _, height = schema.parse_reward_key(key)
        f = as_list(encoding.decode(value, 256), 3, "reward record")
        block_hash, reward, fees = as_bytes(f[0], HASH_SIZE), as_uint(f[1]), as_uint(f[2])
        row(height, block_hash).update(emission=reward - fees, fees=fees, proposed=True)
    for key, value in node.store.iterate(schema.history_prefix(account)):
        f = as_list(encoding.decode(value, _MAX_RECORD_BYTES), what="history record")
        if as_bytes(f[0]) == b"royalty":
            _, height, _ = schema.parse_history_key(key)
            row(height, as_bytes(f[1], HASH_SIZE))["royalties"] += as_uint(f[2])
    return rows


def account_rewards(node: Node, account: bytes, before: int | None, limit: int) -> dict[str, Any]:
    """Totals over the whole chain and one page of per-height items, newest first."""
    rows = _reward_rows(node, account)
    state = node.chain.get_account(account) or EMPTY_ACCOUNT
    ledger = node.chain.ledger
    pending = state.pending_royalties(ledger.royalty_per_share)
    emission, fees, royalties = (sum(r[k] for r in rows.values()) for k in
                                 ("emission", "fees", "royalties"))  # fmt: skip
    heights = sorted((h for h in rows if before is None or h < before), reverse=True)
    page = heights[:limit]
    amounts = ("emission", "fees", "royalties")
    items = [{**rows[h], **{k: str(rows[h][k]) for k in amounts}} for h in page]
    return {
        "address": encode_address(account),
        "totals": {
            "blocks": sum(1 for r in rows.values() if r["proposed"]),
            "emission": str(emission),
            "fees": str(fees),
            "royalties": str(royalties),
            "royalties_pending": str(pending),
            "total": str(emission + fees + royalties + pending),
            "shares": str(state.shares),
            "total_shares": str(ledger.total_shares),
            "share_ppm": state.shares * PPM // ledger.total_shares if ledger.total_shares else 0,
        },
        "items": items,
        "next": str(page[-1]) if len(heights) > limit else None,
    }


def history_item(node: Node, account: bytes, height: int, value: bytes) -> dict[str, Any]:
    """One history record: a transaction (with its direction) or a credit."""
    f = as_list(encoding.decode(value, _MAX_RECORD_BYTES), what="history record")
    kind = as_bytes(f[0]).decode("ascii", "replace")
    if kind == "tx":
        tx = decode_transaction(as_bytes(f[1]))
        block_hash = node.chain.hash_at(height)
        return {
            "type": "tx",
            "height": height,
            "block": block_hash.hex() if block_hash else None,
            "direction": "out" if tx.sender_account == account else "in",
            **transaction_json(tx),
        }
    return {
        "type": kind,
        "height": height,
        "block": as_bytes(f[1], HASH_SIZE).hex(),
        "amount": str(as_uint(f[2])),
    }


def account_history(
    node: Node, account: bytes, before: tuple[int, int] | None, limit: int
) -> dict[str, Any]:
    """A page of the account's history before the ``(height, seq)`` cursor, newest first."""
    start = schema.history_key(account, *before) if before is not None else None
    items: list[dict[str, Any]] = []
    last, more = "", False
    rows = node.store.iterate(schema.history_prefix(account), start=start, reverse=True)
    for key, value in rows:
        if key == start:
            continue
        if len(items) == limit:
            more = True
            break
        _, height, seq = schema.parse_history_key(key)
        items.append(history_item(node, account, height, value))
        last = f"{height}-{seq}"
    pending = [transaction_json(tx) for tx in node.mempool.pending_for(account)]
    if before is not None:
        pending = []
    return {
        "address": encode_address(account),
        "pending": pending,
        "items": items,
        "next": last if more else None,
    }
