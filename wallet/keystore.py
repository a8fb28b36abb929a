"""The encrypted keystore: one signing key in a small versioned JSON file.

The seed is encrypted with ``SecretBox`` under a key stretched from the password by Argon2id,
so a stolen file costs an attacker a memory-hard guess per password. The file is written once:
a temporary file (mode 0600) is filled and synced, then hard-linked into place, which fails if
the keystore already exists -- a key is never overwritten, not even by a concurrent writer.

Loading only reads. Anything wrong with the file -- missing, oversized, truncated, tampered, an
unknown version, a wrong password -- is one :class:`KeystoreError` with a one-line message, and
the KDF limits recorded in the file are bounded before use, so a tampered file cannot make the
wallet allocate gigabytes or spin for minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id
import nacl.secret
import nacl.utils

from derelayl_chain.crypto import SEED_SIZE, KeyPair, decode_address
from derelayl_chain.exceptions import InvalidAddress, KeystoreError

KEYSTORE_VERSION = 1
MAX_KEYSTORE_BYTES = 64 * 1024
KDF_NAME = "argon2id"

DEFAULT_OPS_LIMIT: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEM_LIMIT: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
MIN_OPS_LIMIT: int = nacl.pwhash.argon2id.OPSLIMIT_MIN
MAX_OPS_LIMIT = 16
"""Four times libsodium's 'sensitive' cost: enough headroom, yet a bounded CPU time."""
MIN_MEM_LIMIT: int = nacl.pwhash.argon2id.MEMLIMIT_MIN
MAX_MEM_LIMIT = 1 << 30
"""1 GiB, libsodium's 'sensitive' cost; a file asking for more is refused, not obeyed."""

SALT_SIZE: int = nacl.pwhash.argon2id.SALTBYTES
NONCE_SIZE: int = nacl.secret.SecretBox.NONCE_SIZE
CIPHERTEXT_SIZE: int = SEED_SIZE + nacl.secret.SecretBox.MACBYTES

EXPORT_PREFIX = "drlkey1"
_EXPORT_CHECKSUM_SIZE = 4
EXPORT_LENGTH = len(EXPORT_PREFIX) + 2 * (SEED_SIZE + _EXPORT_CHECKSUM_SIZE)

_FIELDS = (
    "version",
    "kdf",
    "ops_limit",
    "mem_limit",
    "salt",
    "nonce",
    "ciphertext",
    "address",
)
_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class KeystoreFile:
    """The checked contents of a keystore file; nothing here is secret without the password."""

    ops_limit: int
    """Argon2id passes used to stretch the password."""
    mem_limit: int
    """Argon2id memory in bytes."""
    salt: bytes
    """Random Argon2id salt, so equal passwords give different keys."""
    nonce: bytes
    """Random SecretBox nonce."""
    ciphertext: bytes
    """The seed encrypted and authenticated with SecretBox."""
    address: str
    """The address of the key, readable without the password."""


# --- public API ---------------------------------------------------------------------------------


def create_keystore(
    path: Path,
    password: bytes,
    keypair: KeyPair | None = None,
    *,
    ops_limit: int = DEFAULT_OPS_LIMIT,
    mem_limit: int = DEFAULT_MEM_LIMIT,
) -> KeyPair:
    """Encrypt ``keypair`` (a fresh one if None) into a new keystore at ``path``; return it."""
    path = Path(path)
    _check_kdf_limits(path, ops_limit, mem_limit)
    if os.path.lexists(path):
        raise _exists_error(path)
    keypair = KeyPair.generate() if keypair is None else keypair
    salt = nacl.utils.random(SALT_SIZE)
    nonce = nacl.utils.random(NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive_key(password, salt, ops_limit, mem_limit))
    ciphertext = box.encrypt(keypair.seed, nonce).ciphertext
    content = KeystoreFile(ops_limit, mem_limit, salt, nonce, ciphertext, keypair.address)
    _make_private_dirs(path.parent)
    _write_new_file(path, encode_keystore(content))
    return keypair


def load_keystore(path: Path, password: bytes) -> KeyPair:
    """Decrypt the key in the keystore at ``path``; the file is only read."""
    path = Path(path)
    content = read_keystore(path)
    key = _derive_key(password, content.salt, content.ops_limit, content.mem_limit)
    try:
        seed = nacl.secret.SecretBox(key).decrypt(content.ciphertext, content.nonce)
    except nacl.exceptions.CryptoError:
        raise _error(path, "wrong password or corrupted keystore") from None
    keypair = KeyPair.from_seed(seed)
    if keypair.address != content.address:
        raise _error(path, "keystore address does not match its key (tampered)")
    return keypair


def read_keystore_address(path: Path) -> str:
    """The address recorded in the keystore at ``path``, without the password."""
    return read_keystore(Path(path)).address


def export_key(path: Path, password: bytes) -> str:
    """The key of the keystore at ``path`` as checksummed text, for :func:`import_key`."""
    seed = load_keystore(Path(path), password).seed
    return EXPORT_PREFIX + (seed + _export_checksum(seed)).hex()


def import_key(text: str) -> KeyPair:
    """The key pair of an :func:`export_key` text; a mistyped character is rejected.

    Messages never repeat the text: it is the secret key.
    """
    if not isinstance(text, str):
        raise KeystoreError(f"exported key must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text.startswith(EXPORT_PREFIX):
        raise KeystoreError(f"exported key does not start with {EXPORT_PREFIX!r}")
    if len(text) != EXPORT_LENGTH:
        raise KeystoreError(f"exported key has {len(text)} characters, expected {EXPORT_LENGTH}")
    body = text[len(EXPORT_PREFIX) :]
    if not _HEX_DIGITS.issuperset(body):
        raise KeystoreError("exported key has characters other than lowercase hex")
    raw = bytes.fromhex(body)
    seed, checksum = raw[:SEED_SIZE], raw[SEED_SIZE:]
    if not hmac.compare_digest(checksum, _export_checksum(seed)):
        raise KeystoreError("exported key has a bad checksum (mistyped?)")
    return KeyPair.from_seed(seed)


# --- the file format ----------------------------------------------------------------------------


def encode_keystore(content: KeystoreFile) -> bytes:
    """The JSON bytes of a keystore file."""
    document = {
        "version": KEYSTORE_VERSION,
        "kdf": KDF_NAME,
        "ops_limit": content.ops_limit,
        "mem_limit": content.mem_limit,
        "salt": content.salt.hex(),
        "nonce": content.nonce.hex(),
        "ciphertext": content.ciphertext.hex(),
        "address": content.address,
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def read_keystore(path: Path) -> KeystoreFile:
    """Read and check the keystore at ``path`` without decrypting it."""
    path = Path(path)
    return decode_keystore(path, _read_bounded(path))


def decode_keystore(path: Path, data: bytes) -> KeystoreFile:
    """Check the bytes of a keystore file; ``path`` only names the file in errors."""
    document = _parse_json(path, data)
    version = _get_int(path, document, "version")
    if version != KEYSTORE_VERSION:
        raise _error(
            path, f"keystore version {version} is not supported (expected {KEYSTORE_VERSION})"
        )
    _check_field_names(path, document)
    kdf = _get_str(path, document, "kdf")
    if kdf != KDF_NAME:
        raise _error(path, f"keystore kdf {kdf[:40]!r} is not supported (expected {KDF_NAME!r})")
    ops_limit = _get_int(path, document, "ops_limit")
    mem_limit = _get_int(path, document, "mem_limit")
    _check_kdf_limits(path, ops_limit, mem_limit)
    address = _get_str(path, document, "address")
    try:
        decode_address(address)
    except InvalidAddress as exc:
        raise _error(path, f"keystore field 'address' is invalid ({exc})") from None
    return KeystoreFile(
        ops_limit=ops_limit,
        mem_limit=mem_limit,
        salt=_get_hex(path, document, "salt", SALT_SIZE),
        nonce=_get_hex(path, document, "nonce", NONCE_SIZE),
        ciphertext=_get_hex(path, document, "ciphertext", CIPHERTEXT_SIZE),
        address=address,
    )


def _parse_json(path: Path, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _error(path, "keystore is not UTF-8 text") from None
    try:
        document = json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        # Some messages end in "at" ("Unterminated string starting at"): the position follows.
        what = exc.msg.removesuffix(" at")
        where = f"line {exc.lineno} column {exc.colno}"
        raise _error(path, f"keystore is not valid JSON ({what} at {where})") from None
    except ValueError as exc:
        raise _error(path, f"keystore is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _error(path, f"keystore is a JSON {type(document).__name__}, expected an object")
    return document


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse repeated keys: two readers could otherwise see two different keystores."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate field {key[:40]!r}")
        document[key] = value
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _check_field_names(path: Path, document: dict[str, Any]) -> None:
    missing = [name for name in _FIELDS if name not in document]
    if missing:
        raise _error(path, f"keystore is missing field(s) {', '.join(missing)}")
    extra = sorted(name for name in document if name not in _FIELDS)
    if extra:
        shown = ", ".join(repr(name[:40]) for name in extra[:5])
        raise _error(path, f"keystore has unexpected field(s) {shown}")


def _get_int(path: Path, document: dict[str, Any], name: str) -> int:
    if name not in document:
        raise _error(path, f"keystore is missing field(s) {name}")
    value = document[name]
    # bool is an int subclass; ``true`` is not a version number.
    if type(value) is not int:
        raise _error(path, f"keystore field {name!r} must be an integer, got {_json_type(value)}")
    return value


def _get_str(path: Path, document: dict[str, Any], name: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise _error(path, f"keystore field {name!r} must be a string, got {_json_type(value)}")
    return value


def _get_hex(path: Path, document: dict[str, Any], name: str, size: int) -> bytes:
    value = _get_str(path, document, name)
    if not _HEX_DIGITS.issuperset(value) or len(value) % 2:
        raise _error(path, f"keystore field {name!r} is not lowercase hex")
    if len(value) != 2 * size:
        raise _error(path, f"keystore field {name!r} must be {size} bytes, got {len(value) // 2}")
    return bytes.fromhex(value)


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    return names.get(type(value), "object" if isinstance(value, dict) else "null")


def _check_kdf_limits(path: Path, ops_limit: int, mem_limit: int) -> None:
    if not MIN_OPS_LIMIT <= ops_limit <= MAX_OPS_LIMIT:
        raise _error(
            path, f"keystore ops_limit {ops_limit} is outside [{MIN_OPS_LIMIT}, {MAX_OPS_LIMIT}]"
        )
    if not MIN_MEM_LIMIT <= mem_limit <= MAX_MEM_LIMIT:
        raise _error(
            path, f"keystore mem_limit {mem_limit} is outside [{MIN_MEM_LIMIT}, {MAX_MEM_LIMIT}]"
        )


# --- keys ---------------------------------------------------------------------------------------


def _derive_key(password: bytes, salt: bytes, ops_limit: int, mem_limit: int) -> bytes:
    """The SecretBox key stretched from the password by Argon2id."""
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, password, salt, opslimit=ops_limit, memlimit=mem_limit
    )


def _export_checksum(seed: bytes) -> bytes:
    return hashlib.blake2b(
        EXPORT_PREFIX.encode() + seed, digest_size=_EXPORT_CHECKSUM_SIZE, person=b"drl-key-export"
    ).digest()


# --- files --------------------------------------------------------------------------------------


def _read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_KEYSTORE_BYTES, read without blocking on FIFOs."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _error(path, "keystore does not exist") from None
    except OSError as exc:
        raise _error(path, f"cannot open keystore ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _error(path, "keystore is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_KEYSTORE_BYTES + 1)
    except OSError as exc:
        raise _error(path, f"cannot read keystore ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEYSTORE_BYTES:
        raise _error(path, f"keystore is larger than {MAX_KEYSTORE_BYTES} bytes")
    return data


def _make_private_dirs(directory: Path) -> None:
    """Create the missing directories of ``directory``, each readable by its owner only."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        for new_dir in reversed(missing):
            new_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _error(directory, f"cannot create keystore directory ({exc.strerror})") from None


def _write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically, never replacing an existing file.

    ``os.link`` fails if ``path`` exists, so unlike ``os.rename`` it cannot clobber a keystore
    created between our check and our write. The temporary file is removed whatever happens.
    """
    directory = path.parent
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _error(path, f"cannot write keystore ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.link(temp_name, path)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as exc:
        raise _error(path, f"cannot write keystore ({exc.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable, so a crash cannot lose a key just reported saved."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _error(directory, f"cannot sync keystore directory ({exc.strerror})") from None


# --- errors -------------------------------------------------------------------------------------


def _error(path: Path, detail: str) -> KeystoreError:
    """A one-line error: what was wrong, then the file it was wrong in."""
    return KeystoreError(f"{detail}: {path}")


def _exists_error(path: Path) -> KeystoreError:
    return KeystoreError(f"keystore {path} already exists; refusing to overwrite")
