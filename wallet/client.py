"""A small synchronous client for the node's public HTTP API.

The wallet makes a handful of requests per command, so plain ``urllib`` is enough. Every
request has a timeout and every answer a size cap; anything the node sends back is checked
before use, and every failure becomes one of two errors with a one-line message:
:class:`NodeRefused` when the node answered that the request itself is wrong (a 4xx), and
:class:`NodeUnavailable` when it could not be reached, timed out, failed or answered something
malformed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO

from derelayl_chain.exceptions import ConfigError, DeRelayLError, InvalidAmount, PeerError
from derelayl_chain.transaction import Transaction
from wallet.amounts import annotate_amounts, format_ratio, parse_units, units_json

DEFAULT_NODE_URL = "http://127.0.0.1:8600"
DEFAULT_TIMEOUT_S = 10.0
MAX_JSON_BYTES = 4 << 20
"""Largest JSON answer read; the API's biggest pages are far smaller."""
MAX_ERROR_BYTES = 64 << 10
MAX_WEIGHTS_BYTES = 1 << 30
"""Largest weights file downloaded; the benchmark model is about 4 MB."""
WEIGHTS_PATH = "/model/weights"
MAX_SAFETENSORS_HEADER = 100 << 20
POLL_INTERVAL_S = 1.0
"""Pause between confirmation polls."""
_CHUNK_BYTES = 1 << 16
_MAX_MESSAGE_CHARS = 300
_USER_AGENT = "derelayl-wallet/0.1"


class NodeUnavailable(PeerError):
    """The node could not be reached, timed out, failed, or answered something malformed."""


class NodeRefused(DeRelayLError):
    """The node refused the request (a 4xx answer): the input, not the node, is at fault."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        """HTTP status of the answer."""
        self.code = code
        """The API's machine-readable error code (empty if the node sent none)."""


class ConfirmationTimeout(DeRelayLError):
    """A submitted transaction was not confirmed within the wait."""


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account as the node sees it, pending transactions included in ``next_nonce``."""

    address: str
    balance: int
    """Spendable base units."""
    nonce: int
    """Transactions confirmed so far."""
    next_nonce: int
    """The nonce the next transaction must carry (counts pending ones)."""
    shares: int
    """Contribution shares earned by improving the model."""
    royalties_pending: int
    """Royalties earned but not yet settled into the balance (settled on the next spend)."""
    licensed_until: int
    """Last height of the model licence (0: never licensed)."""
    total_shares: int | None = None
    """All contribution shares of the model, if the node says."""

    @property
    def spendable(self) -> int:
        """What a transaction may spend: the ledger settles royalties before checking."""
        return self.balance + self.royalties_pending


@dataclass(frozen=True, slots=True)
class SavedWeights:
    """A weights file written by :meth:`NodeClient.save_weights`."""

    size: int
    """Bytes written."""
    height: int | None
    """Height of the model, if the node said (``X-DRL-Height``)."""
    block: str | None
    """Hash of that block, if the node said (``X-DRL-Block``)."""


@dataclass(frozen=True, slots=True)
class TxStatus:
    """Where a submitted transaction stands."""

    status: str
    """``pending`` or ``confirmed``."""
    height: int | None = None
    block: str | None = None
    confirmations: int | None = None


def check_node_url(url: str) -> str:
    """The node's base URL without a trailing slash; raise ConfigError if it is not one."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"node URL {url[:80]!r} must look like http://HOST:PORT")
    if parts.query or parts.fragment:
        raise ConfigError(f"node URL {url[:80]!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"node URL {url[:80]!r} has an invalid port") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True, slots=True)
class NodeClient:
    """Requests to one node's public API."""

    base_url: str
    """Checked by :func:`check_node_url`."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Limit for connecting and for each read."""

    # --- endpoints --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``GET /status``."""
        return self.get_json("/status")

    def chain_id(self) -> int:
        """The chain id that transactions and download signatures must name."""
        return _get_count(self.status(), "chain_id", "GET /status")

    def account(self, address: str) -> AccountView:
        """``GET /accounts/{address}``, checked."""
        path = f"/accounts/{_segment(address)}"
        document = self.get_json(path)
        where = f"GET {path}"
        nonce = _get_count(document, "nonce", where)
        next_nonce = document.get("next_nonce", nonce)
        return AccountView(
            address=address,
            balance=_get_units(document, "balance", where),
            nonce=nonce,
            next_nonce=_get_count({"next_nonce": next_nonce}, "next_nonce", where),
            shares=_get_units(document, "shares", where),
            royalties_pending=_get_units(document, "royalties_pending", where),
            licensed_until=_get_count(document, "licensed_until", where),
            total_shares=_get_units(document, "total_shares", where)
            if "total_shares" in document
            else None,
        )

    def rewards(self, address: str) -> dict[str, Any]:
        """``GET /accounts/{address}/rewards``."""
        return self.get_json(f"/accounts/{_segment(address)}/rewards")

    def history(self, address: str, limit: int, before: str | None) -> dict[str, Any]:
        """``GET /accounts/{address}/txs``, newest first."""
        query = {"limit": str(limit)} | ({"before": before} if before else {})
        return self.get_json(f"/accounts/{_segment(address)}/txs", query)

    def model(self) -> dict[str, Any]:
        """``GET /model``."""
        return self.get_json("/model")

    def total_shares(self) -> int | None:
        """All contribution shares from /model or /status; None if neither says."""
        status = self.status()
        nested = status.get("model")
        for source in (self.model(), status, nested if isinstance(nested, dict) else {}):
            if "total_shares" in source:
                return _get_units(source, "total_shares", "GET /model")
        return None

    def transaction_status(self, txid: str, timeout_s: float | None = None) -> TxStatus | None:
        """``GET /txs/{txid}``; None while the node does not know the transaction."""
        path = f"/txs/{_segment(txid)}"
        try:
            document = self.get_json(path, timeout_s=timeout_s)
        except NodeRefused as exc:
            if exc.status == 404:
                return None
            raise
        where = f"GET {path}"
        status = document.get("status")
        if status not in ("pending", "confirmed"):
            raise NodeUnavailable(f"node answered {where} with an unknown status {status!r:.40}")
        if status == "pending":
            return TxStatus("pending")
        block = document.get("block")
        return TxStatus(
            status="confirmed",
            height=_get_count(document, "height", where),
            block=block if isinstance(block, str) else None,
            confirmations=_get_count(document, "confirmations", where)
            if "confirmations" in document
            else None,
        )

    def wait_confirmed(self, txid: str, timeout_s: float) -> TxStatus:
        """Poll until ``txid`` is confirmed; ConfirmationTimeout after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            status = self.transaction_status(txid, timeout_s=min(self.timeout_s, remaining))
            if status is not None and status.status == "confirmed":
                return status
            time.sleep(max(0.0, min(POLL_INTERVAL_S, deadline - time.monotonic())))
        raise ConfirmationTimeout(
            f"transaction {txid} not confirmed within {timeout_s:g} s (it may still confirm later)"
        )

    def submit_transaction(self, tx: Transaction) -> str:
        """``POST /txs``; the txid, checked against the one computed locally."""
        document = self.post_json("/txs", {"tx": tx.encode().hex()})
        expected = tx.txid.hex()
        if document.get("txid") != expected:
            answered = str(document.get("txid"))[:70]
            raise NodeUnavailable(f"node answered txid {answered!r} for transaction {expected}")
        return expected

    def download(
        self,
        path: str,
        headers: dict[str, str],
        out: BinaryIO,
        max_bytes: int = MAX_WEIGHTS_BYTES,
    ) -> tuple[int, Message]:
        """Stream the body of ``GET path`` into ``out``; return its size and the headers."""
        with self._open("GET", path, headers=headers) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise NodeUnavailable(f"node's answer to GET {path} exceeds {max_bytes} bytes")
            total = 0
            while chunk := self._read(response, path, _CHUNK_BYTES):
                total += len(chunk)
                if total > max_bytes:
                    raise NodeUnavailable(f"node's answer to GET {path} exceeds {max_bytes} bytes")
                out.write(chunk)
            return total, response.headers

    def save_weights(self, headers: dict[str, str], out: Path, *, replace: bool) -> SavedWeights:
        """Download the weights into a temporary file beside ``out``, check, then move it.

        Without ``replace``, an existing ``out`` raises FileExistsError even if it appeared
        during the download; a failed download leaves nothing behind.
        """
        fd, temp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                size, answer_headers = self.download(WEIGHTS_PATH, headers, file)
                file.flush()
                os.fsync(file.fileno())
            check_safetensors(Path(temp_name), size)
            os.chmod(temp_name, 0o644)
            if replace:
                os.replace(temp_name, out)
            else:
                os.link(temp_name, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
        height = answer_headers.get("X-DRL-Height", "")
        block = answer_headers.get("X-DRL-Block")
        return SavedWeights(
            size=size,
            height=int(height) if height.isascii() and height.isdigit() else None,
            block=clean_text(block, 80) if block else None,
        )

    # --- plumbing ---------------------------------------------------------------------------

    def get_json(
        self, path: str, query: dict[str, str] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The JSON object answered to ``GET path?query``."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        with self._open("GET", path, timeout_s=timeout_s) as response:
            return self._read_json(response, f"GET {path}")

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON object answered to ``POST path`` with a JSON ``body``."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        with self._open("POST", path, data=data, headers=headers) as response:
            return self._read_json(response, f"POST {path}")

    def _open(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> http.client.HTTPResponse:
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"} | (headers or {}),
        )
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._answer_error(exc, f"{method} {path}") from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except TimeoutError:
            raise NodeUnavailable(
                f"node at {self.base_url} did not answer {method} {path} within {timeout:g} s"
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._unreachable(exc) from None
        return response

    def _read(self, response: http.client.HTTPResponse, path: str, size: int) -> bytes:
        try:
            return response.read(size)
        except TimeoutError:
            raise NodeUnavailable(
                f"node at {self.base_url} stalled answering {path} (no data for "
                f"{self.timeout_s:g} s)"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnavailable(f"connection to node at {self.base_url} failed: {exc}") from None

    def _read_json(self, response: http.client.HTTPResponse, where: str) -> dict[str, Any]:
        data = self._read(response, where, MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise NodeUnavailable(f"node's answer to {where} exceeds {MAX_JSON_BYTES} bytes")
        document = _parse_json_object(data)
        if document is None:
            raise NodeUnavailable(f"node answered {where} with something other than a JSON object")
        return document

    def _answer_error(self, exc: urllib.error.HTTPError, where: str) -> DeRelayLError:
        """The error for a non-2xx answer: 4xx is the request's fault, the rest the node's."""
        try:
            body = exc.read(MAX_ERROR_BYTES)
        except (OSError, http.client.HTTPException):
            body = b""
        code, message = _error_fields(body)
        if not message:
            message = f"{exc.code} {clean_text(str(exc.reason))}".strip()
        if 400 <= exc.code < 500 and exc.code != 429:
            label = f"{exc.code} {code}".strip()
            return NodeRefused(exc.code, code, f"node refused {where} ({label}): {message}")
        return NodeUnavailable(f"node at {self.base_url} failed {where} ({exc.code}): {message}")

    def _unreachable(self, reason: object) -> NodeUnavailable:
        if isinstance(reason, OSError) and reason.strerror:
            detail = reason.strerror.lower()
        else:
            detail = clean_text(str(reason)) or type(reason).__name__
        return NodeUnavailable(f"cannot reach node at {self.base_url}: {detail}")


# --- helpers ------------------------------------------------------------------------------------


def clean_text(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters (it may come from afar)."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _parse_json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _error_fields(body: bytes) -> tuple[str, str]:
    """``code`` and ``message`` of an API error body, cleaned; empty strings if absent."""
    document = _parse_json_object(body)
    error = document.get("error") if document else None
    if not isinstance(error, dict):
        return "", clean_text(body.decode("utf-8", "replace")) if body else ""
    code, message = error.get("code"), error.get("message")
    return (
        clean_text(code, 60) if isinstance(code, str) else "",
        clean_text(message) if isinstance(message, str) else "",
    )


def _get_units(document: dict[str, Any], name: str, where: str) -> int:
    if name not in document:
        raise NodeUnavailable(f"node's answer to {where} lacks {name!r}")
    try:
        return parse_units(document[name], what=name)
    except InvalidAmount as exc:
        raise NodeUnavailable(f"node's answer to {where} is malformed: {exc}") from None


def _get_count(document: dict[str, Any], name: str, where: str) -> int:
    """A non-negative integer field (a JSON number or a decimal string)."""
    value = document.get(name)
    try:
        return parse_units(value, what=name)
    except InvalidAmount:
        shown = clean_text(repr(value), 40)
        raise NodeUnavailable(f"node's answer to {where} has a bad {name!r}: {shown}") from None


def check_safetensors(path: Path, size: int) -> None:
    """Refuse an answer that is not a safetensors file: a length-prefixed JSON header."""
    with path.open("rb") as file:
        prefix = file.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        fits = 2 <= length <= min(size - 8, MAX_SAFETENSORS_HEADER)
        header = file.read(length) if fits else b""
    if _parse_json_object(header) is None:
        raise NodeUnavailable("the node's weights are not a safetensors file")


def summarize_rewards(
    answer: dict[str, Any], account: AccountView, total_shares: int | None
) -> dict[str, Any]:
    """One document from the rewards answer, the account and the model's total shares."""
    items = answer.get("items")
    items = items if isinstance(items, list) else []
    totals = answer.get("totals")
    totals = totals if isinstance(totals, dict) else answer
    blocks = totals.get("blocks_proposed", totals.get("blocks"))
    if isinstance(blocks, bool) or not isinstance(blocks, int):
        blocks = len({str(i.get("height")) for i in items if isinstance(i, dict)})
    share = format_ratio(account.shares, total_shares) if total_shares else None
    return {
        "address": account.address,
        "blocks_proposed": blocks,
        **units_json("emission", _sum_amount(totals, items, "emission")),
        **units_json("fees", _sum_amount(totals, items, "fees")),
        **units_json("royalties", _sum_amount(totals, items, "royalties", "royalty")),
        **units_json("royalties_pending", account.royalties_pending),
        "shares": str(account.shares),
        "total_shares": None if total_shares is None else str(total_shares),
        "contribution_share": share,
        "items": annotate_amounts(items),
    }


def _sum_amount(totals: dict[str, Any], items: list[Any], *names: str) -> int:
    """The total of an amount: from the node's totals, else summed over the items."""
    where = "GET /accounts/{address}/rewards"
    for name in names:
        if name in totals:
            return _get_units(totals, name, where)
    return sum(
        _get_units(item, name, where)
        for item in items
        if isinstance(item, dict)
        for name in names
        if name in item
    )
