"""The one exception hierarchy of the core.

Every error the core raises derives from :class:`DeRelayLError`. The HTTP API maps the subtrees
to status codes in one place and the command-line tools map them to exit codes in one place, so
a new error only needs to pick the right parent.
"""

from __future__ import annotations


class DeRelayLError(Exception):
    """Root of every error raised by the chain's own code."""


# --- input that could not be decoded -------------------------------------------------------


class DecodeError(DeRelayLError):
    """Bytes or text that are not a canonical encoding of the expected object."""


class SizeLimitExceeded(DecodeError):
    """Input longer than the limit for its kind; rejected before any parsing."""


class InvalidAddress(DecodeError):
    """An address string with a bad prefix, length, alphabet or checksum."""


class InvalidAmount(DeRelayLError):
    """An amount that is negative, too precise, not a number or beyond the supply."""


# --- consensus objects that decode but break a rule -----------------------------------------


class ValidationError(DeRelayLError):
    """A well-formed object that breaks a protocol rule."""


class InvalidSignature(ValidationError):
    """A signature that does not verify for the claimed key and message."""


class InvalidTransaction(ValidationError):
    """A transaction that breaks a rule: chain id, fee, nonce, balance, kind fields."""


class NonceTooLow(InvalidTransaction):
    """The nonce was already used (a replay)."""


class NonceGap(InvalidTransaction):
    """The nonce skips ahead of the account's next nonce."""


class InsufficientFunds(InvalidTransaction):
    """Amount plus fee exceeds the sender's spendable balance."""


class InvalidDelta(ValidationError):
    """A weight delta with wrong names, shapes, dtypes, non-finite values or size."""


class InvalidBlock(ValidationError):
    """A block that breaks a proof-of-learning rule (see the subclasses)."""


class BlockStructureError(InvalidBlock):
    """Wrong version, chain id, height or size: cheap header checks."""


class BlockTimestampError(InvalidBlock):
    """A timestamp at or before the median of the last blocks."""


class BlockFromFuture(DeRelayLError):
    """A timestamp too far ahead of our clock; not permanently invalid, so not a ValidationError."""


class BlockSignatureError(InvalidBlock, InvalidSignature):
    """The proposer's signature does not verify."""


class BlockCommitmentError(InvalidBlock):
    """A root or hash in the header does not match the body or the computed state."""


class BlockBodyMismatch(BlockCommitmentError):
    """The body does not match the header's transactions root or delta hash.

    The header's hash does not cover the body, so this may be a valid block whose body was
    swapped on the way: the copy is refused, but the hash is not remembered as invalid.
    """


class BlockRewardError(InvalidBlock):
    """The rewards the block implies differ from the ones the protocol computes."""


class BlockLossError(InvalidBlock):
    """The claimed loss differs from the recomputed one beyond the genesis tolerance."""


class InsufficientImprovement(InvalidBlock):
    """The claimed loss does not improve on the parent's by the required difficulty."""


class BlockDeltaError(InvalidBlock, InvalidDelta):
    """The block's delta is malformed for the task's model."""


# --- chain management -----------------------------------------------------------------------


class ChainError(DeRelayLError):
    """A block that cannot be placed on the chain right now."""


class UnknownParent(ChainError):
    """The parent is not known yet; the block waits in the orphan pool."""


class KnownInvalid(ChainError):
    """The block (or an ancestor) was already proven invalid."""


class DuplicateBlock(ChainError):
    """The block is already stored."""


class FinalityViolation(ChainError):
    """Switching to this branch would disconnect blocks deeper than the finality depth."""

    def __init__(self, message: str, branch_root: bytes = b"") -> None:
        super().__init__(message)
        self.branch_root = branch_root
        """The first block of the refused branch (remembered as invalid from now on)."""


class NotFound(DeRelayLError):
    """A block, transaction, account or height that does not exist."""


# --- mempool ---------------------------------------------------------------------------------


class MempoolError(DeRelayLError):
    """A transaction refused by the mempool policy (not by consensus)."""


class MempoolFull(MempoolError):
    """The pool is full and the transaction pays too little to evict another."""


class FeeTooLowToReplace(MempoolError):
    """A same-nonce replacement without the required fee bump."""


class DuplicateTransaction(MempoolError):
    """The transaction is already pending or confirmed."""


# --- storage, configuration, task ------------------------------------------------------------


class StorageError(DeRelayLError):
    """The database is unusable: locked, corrupt or of another schema version."""


class DataDirLocked(StorageError):
    """Another process holds the data directory."""


class SchemaVersionMismatch(StorageError):
    """The database was written by an incompatible schema version."""


class ConfigError(DeRelayLError):
    """A bad flag, environment variable, genesis file or data file."""


class TaskDataError(ConfigError):
    """A miner's data file that does not fit the task (shape, dtype, label range)."""


class KeystoreError(DeRelayLError):
    """A keystore that cannot be read: wrong password, tampered, unknown version."""


class AccessDenied(DeRelayLError):
    """A request for the model weights without a licence or contribution shares."""


class PeerError(DeRelayLError):
    """A peer that misbehaved or could not be reached."""
