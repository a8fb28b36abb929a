"""What the chain records about blocks: index entries, import results and undo records.

Plain values with their encodings; :mod:`derelayl_chain.chain` does the reading and writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from derelayl_chain import encoding
from derelayl_chain.block import Block, BlockHeader
from derelayl_chain.encoding import Item, as_bytes, as_list, as_uint, encode, encode_uint
from derelayl_chain.state import (
    Account,
    LedgerEvent,
    LedgerGlobals,
    account_from_item,
    decode_globals,
)
from derelayl_chain.transaction import Transaction

STATUS_STORED = 1
STATUS_CONNECTED = 2
STATUS_INVALID = 3


@dataclass(slots=True)
class IndexEntry:
    """In-memory index of one stored block (rebuilt from the store at start)."""

    header: BlockHeader
    work: int
    """Accumulated work from genesis to this block, inclusive."""
    seq: int
    """Order in which this node first stored the block: the fork-choice tie-break."""
    status: int
    loss: int = 0
    """Recomputed evaluation loss (fixed point), once connected."""
    accuracy: int = 0

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @classmethod
    def decode(cls, header: BlockHeader, data: bytes) -> IndexEntry:
        """The entry stored for ``header`` (work, seq, status, loss, accuracy)."""
        fields = as_list(encoding.decode(data, 256), 5)
        work, seq, status, loss, accuracy = (as_uint(x, max_bytes=16) for x in fields)
        return cls(header, work, seq, status, loss, accuracy)

    def to_item(self) -> list[Item]:
        return [
            encode_uint(x) for x in (self.work, self.seq, self.status, self.loss, self.accuracy)
        ]


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What importing a block did."""

    status: str
    """``connected`` (new best tip), ``stored`` (side branch), ``orphan`` or ``duplicate``."""
    connected: tuple[Block, ...] = ()
    disconnected: tuple[Block, ...] = ()
    invalid: tuple[bytes, ...] = ()
    """Hashes of blocks found invalid while activating the best chain."""
    refused: tuple[bytes, ...] = ()
    """First blocks of heavier branches refused for forking deeper than the finality depth
    (reported here when the chain moved anyway; raised as :class:`FinalityViolation` when not)."""

    @property
    def returned_transactions(self) -> tuple[Transaction, ...]:
        """Transactions of disconnected blocks that the mempool should take back."""
        confirmed = {tx.txid for b in self.connected for tx in b.transactions}
        return tuple(
            tx for b in self.disconnected for tx in b.transactions if tx.txid not in confirmed
        )


@dataclass(slots=True)
class UndoRecord:
    """What disconnecting a block restores: accounts and globals before it, and the index
    keys it added."""

    accounts: dict[bytes, Account]
    globals_before: LedgerGlobals
    extra_keys: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        return encode(
            [
                [[k, v.to_item()] for k, v in sorted(self.accounts.items())],
                self.globals_before.encode(),
                list(self.extra_keys),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> UndoRecord:
        f = as_list(encoding.decode(data, 1 << 26), 3, "undo record")
        accounts = {
            as_bytes(as_list(e, 2)[0]): account_from_item(as_list(e, 2)[1]) for e in as_list(f[0])
        }
        return cls(accounts, decode_globals(as_bytes(f[1])), [as_bytes(k) for k in as_list(f[2])])


def event_record(block: Block, event: LedgerEvent) -> bytes:
    """An account-history entry for a ledger event of ``block`` (emission, fee, royalty)."""
    return encode([event.kind.encode(), block.hash, encode_uint(event.amount)])
