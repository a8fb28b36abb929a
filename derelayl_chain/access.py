"""Signed, timestamped requests for the model weights.

A download is authorised by the requester's key: the client signs the chain id, the request
path and its clock; the node checks the signature, that the timestamp is within
:data:`MAX_CLOCK_SKEW_MS` of its own clock (so a captured request cannot be replayed later),
and that the key's account holds a licence or contribution shares.
"""

from __future__ import annotations

from collections.abc import Mapping

from derelayl_chain.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, KeyPair, verify_signature
from derelayl_chain.encoding import encode, encode_uint
from derelayl_chain.exceptions import AccessDenied, InvalidSignature
from derelayl_chain.state import Account

MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
HEADER_KEY = "X-DRL-Key"
HEADER_TIMESTAMP = "X-DRL-Timestamp"
HEADER_SIGNATURE = "X-DRL-Signature"
_DOMAIN = b"DRL-DOWNLOAD\x00"


def download_message(chain_id: int, path: str, timestamp_ms: int) -> bytes:
    """The bytes a requester signs."""
    return _DOMAIN + encode([encode_uint(chain_id), path.encode(), encode_uint(timestamp_ms)])


def sign_download(key: KeyPair, chain_id: int, path: str, timestamp_ms: int) -> dict[str, str]:
    """HTTP headers that authorise ``key`` to fetch ``path``."""
    signature = key.sign(download_message(chain_id, path, timestamp_ms))
    return {
        HEADER_KEY: key.public_key.hex(),
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_SIGNATURE: signature.hex(),
    }


def verify_download(headers: Mapping[str, str], chain_id: int, path: str, now_ms: int) -> bytes:
    """Check a signed request; return the requester's public key or raise AccessDenied."""
    try:
        public_key = bytes.fromhex(headers.get(HEADER_KEY, ""))
        signature = bytes.fromhex(headers.get(HEADER_SIGNATURE, ""))
        timestamp_text = headers.get(HEADER_TIMESTAMP, "")
        timestamp = int(timestamp_text) if timestamp_text.isdigit() else -1
    except ValueError as exc:
        raise AccessDenied("malformed download signature headers") from exc
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE or timestamp < 0:
        raise AccessDenied(
            f"a signed request needs {HEADER_KEY}, {HEADER_TIMESTAMP} and {HEADER_SIGNATURE}"
        )
    if abs(now_ms - timestamp) > MAX_CLOCK_SKEW_MS:
        raise AccessDenied(f"request timestamp {timestamp} is too far from the node's clock")
    try:
        verify_signature(public_key, download_message(chain_id, path, timestamp), signature)
    except InvalidSignature as exc:
        raise AccessDenied("download request signature does not verify") from exc
    return public_key


def may_download(account: Account | None, height: int, model_open: bool) -> bool:
    """Licence holders (through ``height``) and contributors may download the weights."""
    if model_open:
        return True
    if account is None:
        return False
    return holds_licence(account, height) or account.shares > 0


def holds_licence(account: Account, height: int) -> bool:
    """Whether ``account`` is licensed at ``height``.

    A ``licensed_until`` of 0 means never licensed, not licensed through height 0: a paid
    licence always ends at a height of at least 1, the block that carried the payment.
    """
    return account.licensed_until > 0 and account.licensed_until >= height
