"""Tests for the encrypted keystore (wallet/keystore.py)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id
import pytest

from derelayl_chain.crypto import KeyPair
from derelayl_chain.exceptions import KeystoreError
from wallet import keystore
from wallet.keystore import (
    KEYSTORE_VERSION,
    MAX_KEYSTORE_BYTES,
    create_keystore,
    export_key,
    import_key,
    load_keystore,
    read_keystore_address,
)

FAST: dict[str, Any] = {
    "ops_limit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "mem_limit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}
"""The cheapest Argon2id cost, so the tests stay fast."""
PASSWORD = b"correct horse battery staple"
SEED = bytes(range(32))


@pytest.fixture
def keystore_path(tmp_path: Path) -> Path:
    """A keystore holding the key of SEED, created with the fast KDF cost."""
    path = tmp_path / "wallet.json"
    create_keystore(path, PASSWORD, KeyPair.from_seed(SEED), **FAST)
    return path


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> bytes:
    """Apply ``change`` to the keystore's JSON document, write it back, return the new bytes."""
    document = json.loads(path.read_bytes())
    change(document)
    data = json.dumps(document).encode()
    path.write_bytes(data)
    return data


def assert_load_fails(path: Path, match: str, password: bytes = PASSWORD) -> None:
    """Loading raises KeystoreError with a one-line message and leaves the file unchanged."""
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match=match) as info:
        load_keystore(path, password)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before


def flip_hex_digit(text: str, index: int) -> str:
    """``text`` with the hex digit at ``index`` changed to another one."""
    replacement = "1" if text[index] == "0" else "0"
    return text[:index] + replacement + text[index + 1 :]


# --- create and load ----------------------------------------------------------------------------


def test_round_trip_returns_the_same_key(keystore_path: Path) -> None:
    """A keystore decrypts with its password to the key it was created with."""
    assert load_keystore(keystore_path, PASSWORD) == KeyPair.from_seed(SEED)


def test_create_without_key_generates_one(tmp_path: Path) -> None:
    """Without a key, create generates a fresh one and returns the key it stored."""
    path = tmp_path / "wallet.json"
    created = create_keystore(path, PASSWORD, **FAST)
    assert load_keystore(path, PASSWORD) == created
    assert created.seed != create_keystore(tmp_path / "other.json", PASSWORD, **FAST).seed


def test_file_has_the_documented_fields(keystore_path: Path) -> None:
    """The file is a version-1 JSON object with the KDF limits, hex blobs and the address."""
    document = json.loads(keystore_path.read_bytes())
    assert list(document) == [
        "version",
        "kdf",
        "ops_limit",
        "mem_limit",
        "salt",
        "nonce",
        "ciphertext",
        "address",
    ]
    assert document["version"] == KEYSTORE_VERSION == 1
    assert document["kdf"] == "argon2id"
    assert document["ops_limit"] == FAST["ops_limit"]
    assert document["mem_limit"] == FAST["mem_limit"]
    assert len(bytes.fromhex(document["salt"])) == 16
    assert len(bytes.fromhex(document["nonce"])) == 24
    assert len(bytes.fromhex(document["ciphertext"])) == 48
    assert document["address"] == KeyPair.from_seed(SEED).address


def test_file_does_not_contain_the_seed(keystore_path: Path) -> None:
    """The seed is stored only encrypted."""
    assert SEED.hex().encode() not in keystore_path.read_bytes()
    assert SEED not in keystore_path.read_bytes()


def test_default_cost_is_interactive(tmp_path: Path) -> None:
    """Without explicit limits the keystore records libsodium's interactive Argon2id cost."""
    path = tmp_path / "wallet.json"
    create_keystore(path, PASSWORD)
    document = json.loads(path.read_bytes())
    assert document["ops_limit"] == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert document["mem_limit"] == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def test_two_keystores_of_one_key_differ(tmp_path: Path) -> None:
    """Salt and nonce are random, so the same key and password never give the same file."""
    key = KeyPair.from_seed(SEED)
    create_keystore(tmp_path / "a.json", PASSWORD, key, **FAST)
    create_keystore(tmp_path / "b.json", PASSWORD, key, **FAST)
    first = json.loads((tmp_path / "a.json").read_bytes())
    second = json.loads((tmp_path / "b.json").read_bytes())
    assert first["salt"] != second["salt"]
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]


def test_file_mode_is_0600(tmp_path: Path) -> None:
    """The keystore is readable and writable by its owner only, whatever the umask."""
    old_umask = os.umask(0)
    try:
        path = tmp_path / "wallet.json"
        create_keystore(path, PASSWORD, **FAST)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_makes_missing_directories_private(tmp_path: Path) -> None:
    """Missing parent directories are created with mode 0700."""
    path = tmp_path / "home" / ".derelayl" / "wallet.json"
    create_keystore(path, PASSWORD, **FAST)
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "home" / ".derelayl").stat().st_mode) == 0o700
    assert load_keystore(path, PASSWORD).address == read_keystore_address(path)


def test_create_keeps_mode_of_existing_directory(tmp_path: Path) -> None:
    """An existing parent directory is used as it is, not re-permissioned."""
    tmp_path.chmod(0o755)
    create_keystore(tmp_path / "wallet.json", PASSWORD, **FAST)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_create_leaves_no_temporary_file(keystore_path: Path) -> None:
    """After a successful create, the directory holds only the keystore."""
    assert os.listdir(keystore_path.parent) == ["wallet.json"]


def test_create_refuses_to_overwrite(keystore_path: Path) -> None:
    """Creating over an existing keystore fails and leaves it byte for byte unchanged."""
    before = keystore_path.read_bytes()
    with pytest.raises(KeystoreError, match="already exists; refusing to overwrite"):
        create_keystore(keystore_path, b"another password", **FAST)
    assert keystore_path.read_bytes() == before
    assert load_keystore(keystore_path, PASSWORD) == KeyPair.from_seed(SEED)
    assert os.listdir(keystore_path.parent) == ["wallet.json"]


def test_create_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    """A symlink at the path counts as existing, even if it points nowhere."""
    path = tmp_path / "wallet.json"
    path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, PASSWORD, **FAST)
    assert not (tmp_path / "elsewhere.json").exists()


def test_write_refuses_a_file_created_after_the_check(tmp_path: Path) -> None:
    """The final link fails on a file that appeared after create's check; no temp file remains."""
    path = tmp_path / "wallet.json"
    path.write_bytes(b"written by someone else")
    with pytest.raises(KeystoreError, match="already exists; refusing to overwrite"):
        keystore._write_new_file(path, b"new keystore")
    assert path.read_bytes() == b"written by someone else"
    assert os.listdir(tmp_path) == ["wallet.json"]


def test_create_rejects_limits_out_of_bounds(tmp_path: Path) -> None:
    """Create refuses a KDF cost that load would refuse, and writes nothing."""
    with pytest.raises(KeystoreError, match="mem_limit"):
        create_keystore(tmp_path / "w.json", PASSWORD, ops_limit=1, mem_limit=2 << 30)
    with pytest.raises(KeystoreError, match="ops_limit"):
        create_keystore(tmp_path / "w.json", PASSWORD, ops_limit=0, mem_limit=8192)
    assert os.listdir(tmp_path) == []


def test_read_address_needs_no_password(keystore_path: Path) -> None:
    """The address is readable without the password."""
    assert read_keystore_address(keystore_path) == KeyPair.from_seed(SEED).address


def test_read_address_checks_the_file(keystore_path: Path) -> None:
    """Reading the address still rejects a malformed keystore."""
    rewrite(keystore_path, lambda d: d.update(version=2))
    with pytest.raises(KeystoreError, match="version 2 is not supported"):
        read_keystore_address(keystore_path)


# --- load failures ------------------------------------------------------------------------------


def test_wrong_password(keystore_path: Path) -> None:
    """A wrong password is one KeystoreError and the file stays as it was."""
    assert_load_fails(keystore_path, "wrong password or corrupted keystore", b"wrong")


def test_missing_file(tmp_path: Path) -> None:
    """A missing keystore is a KeystoreError naming the path."""
    with pytest.raises(KeystoreError, match="does not exist") as info:
        load_keystore(tmp_path / "absent.json", PASSWORD)
    assert "absent.json" in str(info.value)


def test_directory_is_not_a_keystore(tmp_path: Path) -> None:
    """A directory at the keystore path is rejected."""
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_keystore(tmp_path, PASSWORD)


def test_fifo_is_rejected_without_blocking(tmp_path: Path) -> None:
    """A named pipe at the keystore path is rejected instead of waiting for a writer."""
    path = tmp_path / "wallet.json"
    os.mkfifo(path)
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_keystore(path, PASSWORD)


def test_file_too_large(keystore_path: Path) -> None:
    """A file beyond MAX_KEYSTORE_BYTES is refused before parsing."""
    keystore_path.write_bytes(b" " * (MAX_KEYSTORE_BYTES + 1))
    assert_load_fails(keystore_path, "larger than")


def test_file_at_size_limit_is_parsed(keystore_path: Path) -> None:
    """Trailing whitespace up to the size limit still loads."""
    data = keystore_path.read_bytes()
    keystore_path.write_bytes(data + b" " * (MAX_KEYSTORE_BYTES - len(data)))
    assert load_keystore(keystore_path, PASSWORD) == KeyPair.from_seed(SEED)


@pytest.mark.parametrize("cut", [0, 1, 40, -5, -1])
def test_truncated_file(keystore_path: Path, cut: int) -> None:
    """A truncated keystore is not valid JSON."""
    data = keystore_path.read_bytes().rstrip()
    keystore_path.write_bytes(data[:cut])
    assert_load_fails(keystore_path, "not valid JSON")


def test_not_utf8(keystore_path: Path) -> None:
    """Bytes that are not UTF-8 are rejected."""
    keystore_path.write_bytes(b"\xff\xfe{}")
    assert_load_fails(keystore_path, "not UTF-8")


@pytest.mark.parametrize("document", ["[]", "7", '"text"', "null"])
def test_json_not_an_object(keystore_path: Path, document: str) -> None:
    """A JSON value other than an object is rejected."""
    keystore_path.write_text(document)
    assert_load_fails(keystore_path, "expected an object")


def test_duplicate_field(keystore_path: Path) -> None:
    """A field given twice is rejected rather than resolved silently."""
    data = keystore_path.read_text().replace('"kdf"', '"kdf": "argon2id", "kdf"', 1)
    keystore_path.write_text(data)
    assert_load_fails(keystore_path, "duplicate field 'kdf'")


def test_nan_is_rejected(keystore_path: Path) -> None:
    """Non-standard JSON constants are rejected."""
    data = keystore_path.read_text().replace(
        f'"ops_limit": {FAST["ops_limit"]}', '"ops_limit": NaN'
    )
    keystore_path.write_text(data)
    assert_load_fails(keystore_path, "NaN is not allowed")


@pytest.mark.parametrize("version", [0, 2, 7])
def test_unknown_version(keystore_path: Path, version: int) -> None:
    """A keystore of another version is refused, naming both versions."""
    rewrite(keystore_path, lambda d: d.update(version=version))
    assert_load_fails(keystore_path, rf"keystore version {version} is not supported \(expected 1\)")


def test_unknown_version_is_reported_before_its_fields(keystore_path: Path) -> None:
    """A future version with other fields is reported as a version problem."""
    rewrite(keystore_path, lambda d: d.update(version=7, cipher="xchacha"))
    assert_load_fails(keystore_path, "version 7 is not supported")


@pytest.mark.parametrize(
    "field", ["version", "kdf", "ops_limit", "mem_limit", "salt", "nonce", "ciphertext", "address"]
)
def test_missing_field(keystore_path: Path, field: str) -> None:
    """Each field is required."""
    rewrite(keystore_path, lambda d: d.pop(field))
    assert_load_fails(keystore_path, f"missing field.*{field}")


def test_extra_field(keystore_path: Path) -> None:
    """An unexpected field is rejected."""
    rewrite(keystore_path, lambda d: d.update(comment="hi"))
    assert_load_fails(keystore_path, "unexpected field.*'comment'")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("version", "1", "must be an integer, got string"),
        ("version", True, "must be an integer, got boolean"),
        ("version", 1.0, "must be an integer, got number"),
        ("ops_limit", None, "must be an integer, got null"),
        ("mem_limit", [8192], "must be an integer, got array"),
        ("kdf", 2, "must be a string, got integer"),
        ("salt", {"hex": "00"}, "must be a string, got object"),
        ("address", 0, "must be a string, got integer"),
    ],
)
def test_wrong_type(keystore_path: Path, field: str, value: object, expected: str) -> None:
    """A field of the wrong JSON type is rejected, naming the field and both types."""
    rewrite(keystore_path, lambda d: d.update({field: value}))
    assert_load_fails(keystore_path, f"'{field}' {expected}")


def test_unknown_kdf(keystore_path: Path) -> None:
    """A KDF other than argon2id is refused."""
    rewrite(keystore_path, lambda d: d.update(kdf="scrypt"))
    assert_load_fails(keystore_path, "kdf 'scrypt' is not supported")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mem_limit", 2 << 30),
        ("mem_limit", nacl.pwhash.argon2id.MEMLIMIT_MIN - 1),
        ("mem_limit", -1),
        ("ops_limit", 0),
        ("ops_limit", 10**12),
    ],
)
def test_kdf_limits_out_of_bounds(keystore_path: Path, field: str, value: int) -> None:
    """KDF limits outside sane bounds are refused before any work is done."""
    rewrite(keystore_path, lambda d: d.update({field: value}))
    assert_load_fails(keystore_path, f"{field} {value} is outside")


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext"])
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda h: h[:-2] + "zz",
        lambda h: h[:-2] + "AB",
        lambda h: h[:-3] + " 00",
        lambda h: "0x" + h[2:],
        lambda h: h + "0",
    ],
    ids=["non-hex", "uppercase", "space", "0x-prefix", "odd-length"],
)
def test_bad_hex(keystore_path: Path, field: str, corrupt: Callable[[str], str]) -> None:
    """Blobs must be lowercase hex of an even length."""
    rewrite(keystore_path, lambda d: d.update({field: corrupt(d[field])}))
    assert_load_fails(keystore_path, f"'{field}' is not lowercase hex")


@pytest.mark.parametrize(("field", "size"), [("salt", 16), ("nonce", 24), ("ciphertext", 48)])
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_blob_length(keystore_path: Path, field: str, size: int, delta: int) -> None:
    """Salt, nonce and ciphertext must have their exact lengths."""
    new_hex = "00" * (size + delta)
    rewrite(keystore_path, lambda d: d.update({field: new_hex}))
    assert_load_fails(keystore_path, f"'{field}' must be {size} bytes, got {size + delta}")


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext"])
def test_tampered_blob(keystore_path: Path, field: str) -> None:
    """Changing one digit of the salt, nonce or ciphertext makes decryption fail."""
    rewrite(keystore_path, lambda d: d.update({field: flip_hex_digit(d[field], 5)}))
    assert_load_fails(keystore_path, "wrong password or corrupted keystore")


def test_tampered_cost(keystore_path: Path) -> None:
    """A changed (but in-bounds) KDF cost derives another key, so decryption fails."""
    rewrite(keystore_path, lambda d: d.update(ops_limit=d["ops_limit"] + 1))
    assert_load_fails(keystore_path, "wrong password or corrupted keystore")


def test_tampered_address(keystore_path: Path) -> None:
    """A valid address of another key is caught after decryption."""
    other = KeyPair.from_seed(bytes(32)).address
    rewrite(keystore_path, lambda d: d.update(address=other))
    assert read_keystore_address(keystore_path) == other
    assert_load_fails(keystore_path, "address does not match its key")


def test_mistyped_address(keystore_path: Path) -> None:
    """An address with a bad checksum is rejected even without the password."""
    rewrite(keystore_path, lambda d: d.update(address=flip_hex_digit(d["address"], 10)))
    with pytest.raises(KeystoreError, match="'address' is invalid"):
        read_keystore_address(keystore_path)
    assert_load_fails(keystore_path, "'address' is invalid")


def test_failed_load_leaves_no_file_behind(keystore_path: Path) -> None:
    """Failed loads create nothing next to the keystore."""
    with pytest.raises(KeystoreError):
        load_keystore(keystore_path, b"wrong")
    assert os.listdir(keystore_path.parent) == ["wallet.json"]


# --- export and import --------------------------------------------------------------------------


def test_export_import_round_trip(keystore_path: Path, tmp_path: Path) -> None:
    """An exported key imports to the same key pair and moves into a new keystore."""
    text = export_key(keystore_path, PASSWORD)
    assert text.startswith("drlkey1")
    assert len(text) == len("drlkey1") + 2 * (32 + 4)
    imported = import_key(text)
    assert imported == KeyPair.from_seed(SEED)
    target = tmp_path / "moved" / "wallet.json"
    create_keystore(target, b"new password", imported, **FAST)
    assert load_keystore(target, b"new password") == KeyPair.from_seed(SEED)


def test_export_needs_the_password(keystore_path: Path) -> None:
    """Export with a wrong password fails like load."""
    with pytest.raises(KeystoreError, match="wrong password"):
        export_key(keystore_path, b"wrong")


def test_import_ignores_surrounding_whitespace(keystore_path: Path) -> None:
    """A key read from a file with a trailing newline imports."""
    text = export_key(keystore_path, PASSWORD)
    assert import_key(f"  {text}\n") == KeyPair.from_seed(SEED)


@pytest.mark.parametrize("index", range(len("drlkey1"), len("drlkey1") + 72, 7))
def test_import_rejects_a_mistyped_digit(keystore_path: Path, index: int) -> None:
    """Changing any one hex digit of an exported key breaks its checksum."""
    text = flip_hex_digit(export_key(keystore_path, PASSWORD), index)
    with pytest.raises(KeystoreError, match="bad checksum"):
        import_key(text)


def test_import_rejects_swapped_digits(keystore_path: Path) -> None:
    """Swapping two adjacent different digits is caught."""
    text = export_key(keystore_path, PASSWORD)
    index = next(i for i in range(7, len(text) - 1) if text[i] != text[i + 1])
    swapped = text[:index] + text[index + 1] + text[index] + text[index + 2 :]
    with pytest.raises(KeystoreError, match="bad checksum"):
        import_key(swapped)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: "drlkey2" + t[7:], "does not start with 'drlkey1'"),
        (lambda t: t[7:], "does not start with 'drlkey1'"),
        (lambda t: t[:-1], "has 78 characters, expected 79"),
        (lambda t: t + "0", "has 80 characters, expected 79"),
        (lambda t: t[:10] + "g" + t[11:], "other than lowercase hex"),
        (lambda t: t.upper().replace("DRLKEY1", "drlkey1"), "other than lowercase hex"),
        (lambda t: "", "does not start with"),
    ],
)
def test_import_rejects_malformed_text(
    keystore_path: Path, mutate: Callable[[str], str], expected: str
) -> None:
    """Prefix, length and alphabet are checked, each with its own message."""
    text = export_key(keystore_path, PASSWORD)
    with pytest.raises(KeystoreError, match=expected):
        import_key(mutate(text))


def test_import_error_does_not_echo_the_key(keystore_path: Path) -> None:
    """Import errors never repeat the secret text."""
    text = flip_hex_digit(export_key(keystore_path, PASSWORD), 20)
    with pytest.raises(KeystoreError) as info:
        import_key(text)
    assert text[7:] not in str(info.value)
    assert SEED.hex()[:16] not in str(info.value)
