"""The peer protocol's wire format and transport: message shapes, limits, strict parsers.

Everything a peer sends is untrusted. Each parser here reads at most a fixed number of bytes,
accepts one exact shape and raises :class:`DecodeError` naming the first thing that is wrong,
so the handlers in :mod:`derelayl_chain.p2p` never see a half-checked value.

Nodes talk plain HTTP to each other under ``/p2p/`` (``docs/p2p.md`` tells the whole story).
Control messages are small JSON objects (at most 64 KiB); blocks, transactions and header
lists travel as their canonical encoding (``application/octet-stream``). Every request names
its sender's URL in the ``X-DRL-Peer`` header. Errors are ``{"error": {"code", "message"}}``
with a 4xx status. The routes, served by :mod:`derelayl_chain.p2p`:

``POST /p2p/hello``
    ``{"url", "genesis": hex, "height": int, "node_id": hex}`` -> the same fields of the
    answering node. ``409 genesis_mismatch`` for another network, ``409 self_connection`` when
    a node reaches itself under another name.
``POST /p2p/announce``
    ``{"url", "height", "blocks": [hex, ...≤64], "txs": [hex, ...≤256]}`` -> ``202``
    ``{"accepted": n}``; ``409 hello_required`` from a sender that never said hello. The
    receiver fetches each hash it lacks, once, from the announcer.
``GET /p2p/blocks/{hash}`` / ``GET /p2p/txs/{txid}``
    The canonical bytes of a stored block or pending transaction, or ``404 not_found``.
``GET /p2p/headers?locator=hex,hex,...&limit=N``
    The canonical encoding of a list of up to ``N`` (≤ 500) header items: the answering node's
    best chain after the first locator hash it has on that chain.
``GET /p2p/peers``
    ``{"peers": [url, ...≤64]}``: peers this node reached itself.

Any route: ``400 bad_request`` for malformed input, ``413 payload_too_large``, ``403 banned``
when the sender (``X-DRL-Peer`` or the body's ``url``) is banned.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import StreamReader, web

from derelayl_chain import encoding
from derelayl_chain.block import MAX_HEADER_BYTES, BlockHeader, header_from_item
from derelayl_chain.encoding import HASH_SIZE, encode
from derelayl_chain.exceptions import DecodeError, PeerError, SizeLimitExceeded

MAX_JSON_BYTES = 64 * 1024
"""Largest JSON body accepted (hello, announce, peer list)."""
MAX_HEADERS = 500
"""Most headers one ``/p2p/headers`` reply may carry."""
MAX_LOCATOR = 64
"""Most hashes in a block locator."""
MAX_ANNOUNCE_BLOCKS = 64
MAX_ANNOUNCE_TXS = 256
MAX_PEER_LIST = 64
"""Most URLs one ``/p2p/peers`` reply may carry."""
MAX_URL_LENGTH = 200
MAX_HEIGHT = 2**63 - 1
NODE_ID_SIZE = 16
OCTET_STREAM = "application/octet-stream"
PEER_HEADER = "X-DRL-Peer"
"""Request header in which a node names its own URL on every request it makes."""

_URL = re.compile(r"http://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+):(?P<port>[1-9][0-9]{0,4})/?")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PeerRequestRefused(PeerError):
    """A peer request we answer with a 4xx error: carries the status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class PeerMisbehaved(PeerError):
    """A peer sent something provably wrong; carries the misbehaviour points it earns."""

    def __init__(self, points: int, message: str) -> None:
        super().__init__(message)
        self.points = points


class PeerUnreachable(PeerError):
    """A request failed for a transient reason: timeout, connection error, 5xx."""


# --- scalars -------------------------------------------------------------------------------------


def normalize_peer_url(text: object) -> str:
    """The canonical ``http://host:port`` form of a peer URL; nothing else is accepted.

    No path, query, credentials or scheme other than plain HTTP, so a URL learnt from a peer
    can only make us talk to another peer endpoint, never to an arbitrary resource.
    """
    if not isinstance(text, str) or len(text) > MAX_URL_LENGTH:
        raise DecodeError("peer URL must be a string of at most 200 characters")
    match = _URL.fullmatch(text.strip().lower())
    if match is None:
        raise DecodeError(f"peer URL {text[:80]!r} is not of the form http://host:port")
    host, port = match["host"], int(match["port"])
    if port > 65535:
        raise DecodeError(f"peer URL {text[:80]!r} has port {port} above 65535")
    if not host.startswith("[") and not all(_LABEL.fullmatch(part) for part in host.split(".")):
        raise DecodeError(f"peer URL {text[:80]!r} has an invalid host name")
    return f"http://{host}:{port}"


def parse_hash(text: object, what: str = "hash") -> bytes:
    """A 32-byte hash written as 64 lowercase or uppercase hex digits."""
    if not isinstance(text, str) or len(text) != 2 * HASH_SIZE:
        raise DecodeError(f"{what} must be {2 * HASH_SIZE} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise DecodeError(f"{what} {text[:80]!r} is not hexadecimal") from None


def parse_height(value: object, what: str = "height") -> int:
    """A block height: a JSON integer (not a boolean) in ``[0, 2^63)``."""
    if type(value) is not int or not 0 <= value <= MAX_HEIGHT:
        raise DecodeError(f"{what} must be an integer between 0 and {MAX_HEIGHT}")
    return value


def parse_limit(text: str | None) -> int:
    """The ``limit`` query parameter of ``/p2p/headers``: 1 to :data:`MAX_HEADERS`."""
    if text is None:
        return MAX_HEADERS
    if not text.isdigit() or len(text) > 4 or not 1 <= int(text) <= MAX_HEADERS:
        raise DecodeError(f"limit must be an integer from 1 to {MAX_HEADERS}")
    return int(text)


def parse_locator(text: str | None) -> list[bytes]:
    """The ``locator`` query parameter: 1 to :data:`MAX_LOCATOR` comma-separated hashes."""
    if not text:
        raise DecodeError("locator must list at least one block hash")
    parts = text.split(",", MAX_LOCATOR)
    if len(parts) > MAX_LOCATOR:
        raise DecodeError(f"locator lists more than {MAX_LOCATOR} hashes")
    return [parse_hash(part, "locator hash") for part in parts]


def format_locator(locator: Sequence[bytes]) -> str:
    return ",".join(block_hash.hex() for block_hash in locator[:MAX_LOCATOR])


# --- bodies --------------------------------------------------------------------------------------


async def read_capped(stream: StreamReader, limit: int) -> bytes:
    """Read a whole body, giving up as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise SizeLimitExceeded(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body of a request, refused unread when it announces an oversize body."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise SizeLimitExceeded(f"JSON body exceeds the limit of {MAX_JSON_BYTES} bytes")
    return parse_json_object(await read_capped(request.content, MAX_JSON_BYTES))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from at most :data:`MAX_JSON_BYTES` bytes of UTF-8."""
    if len(raw) > MAX_JSON_BYTES:
        raise SizeLimitExceeded(f"JSON body exceeds the limit of {MAX_JSON_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise DecodeError("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise DecodeError("body must be a JSON object")
    return document


def parse_hash_list(value: object, limit: int, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise DecodeError(f"{what} must be a list of hex hashes")
    if len(value) > limit:
        raise DecodeError(f"{what} lists {len(value)} hashes, more than {limit}")
    return [parse_hash(item, what) for item in value]


def parse_node_id(value: object) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str) or len(value) != 2 * NODE_ID_SIZE:
        raise DecodeError(f"node_id must be {2 * NODE_ID_SIZE} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError("node_id is not hexadecimal") from None


@dataclass(frozen=True, slots=True)
class Hello:
    """Who a node is: its URL, network (genesis hash), best height and process identity."""

    url: str
    genesis: bytes
    height: int
    node_id: bytes
    """Random per process: lets a node recognise a hello to itself under another name."""

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "genesis": self.genesis.hex(),
            "height": self.height,
            "node_id": self.node_id.hex(),
        }


def parse_hello(document: dict[str, Any]) -> Hello:
    return Hello(
        url=normalize_peer_url(document.get("url")),
        genesis=parse_hash(document.get("genesis"), "genesis"),
        height=parse_height(document.get("height")),
        node_id=parse_node_id(document.get("node_id")),
    )


@dataclass(frozen=True, slots=True)
class Announcement:
    """Block and transaction hashes a peer offers, with its current height."""

    url: str
    height: int
    blocks: tuple[bytes, ...]
    txs: tuple[bytes, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "height": self.height,
            "blocks": [h.hex() for h in self.blocks],
            "txs": [h.hex() for h in self.txs],
        }


def parse_announcement(document: dict[str, Any]) -> Announcement:
    return Announcement(
        url=normalize_peer_url(document.get("url")),
        height=parse_height(document.get("height")),
        blocks=tuple(parse_hash_list(document.get("blocks", []), MAX_ANNOUNCE_BLOCKS, "blocks")),
        txs=tuple(parse_hash_list(document.get("txs", []), MAX_ANNOUNCE_TXS, "txs")),
    )


def parse_peer_list(document: dict[str, Any]) -> list[str]:
    """The URLs of a ``/p2p/peers`` reply; malformed entries make the whole reply invalid."""
    value = document.get("peers")
    if not isinstance(value, list) or len(value) > MAX_PEER_LIST:
        raise DecodeError(f"peers must be a list of at most {MAX_PEER_LIST} URLs")
    return [normalize_peer_url(item) for item in value]


# --- header lists --------------------------------------------------------------------------------


def encode_headers(headers: Sequence[BlockHeader]) -> bytes:
    """A header list as one canonical item: a list of header items."""
    return encode([header.to_item() for header in headers])


def max_headers_bytes(limit: int) -> int:
    return limit * (MAX_HEADER_BYTES + 8) + 16


def decode_headers(data: bytes, limit: int) -> list[BlockHeader]:
    """At most ``limit`` headers from untrusted bytes (size checked before parsing)."""
    item = encoding.decode(data, max_headers_bytes(limit))
    return [header_from_item(child) for child in encoding.as_items(item, limit, "header list")]


# --- responses -----------------------------------------------------------------------------------


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one error shape of the HTTP interface: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def error_code(data: bytes) -> str:
    """The ``code`` of an error body, or an empty string when the body is not one."""
    try:
        error = parse_json_object(data).get("error")
    except DecodeError:
        return ""
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""


def binary_response(data: bytes) -> web.Response:
    return web.Response(body=data, content_type=OCTET_STREAM)


def guard(refuse: Callable[[str], None], handler: Handler) -> Handler:
    """Wrap a handler: ``refuse`` the sender named in :data:`PEER_HEADER` (raising a refusal),
    and answer malformed input with the one error shape instead of a 500."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            sender = request.headers.get(PEER_HEADER)
            if sender is not None:
                try:
                    url = normalize_peer_url(sender)
                except DecodeError:
                    url = ""
                if url:
                    refuse(url)
            return await handler(request)
        except PeerRequestRefused as exc:
            return error_response(exc.status, exc.code, str(exc))
        except SizeLimitExceeded as exc:
            return error_response(413, "payload_too_large", str(exc))
        except DecodeError as exc:
            return error_response(400, "bad_request", str(exc))

    return guarded


# --- requests ------------------------------------------------------------------------------------


async def send_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    limit: int,
    body: dict[str, object] | None,
    params: dict[str, str] | None,
    retries: int,
    retry_delay_s: float,
) -> tuple[int, bytes]:
    """Status and body (at most ``limit`` bytes) of one request, retried after transient errors.

    Timeouts, connection errors and 5xx answers are retried ``retries`` times and then raise
    :class:`PeerUnreachable`; any other status is returned for the caller to judge. Redirects
    are not followed, so a peer cannot point us at something that is not a peer.
    """
    error = "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(retry_delay_s * attempt)
        try:
            async with session.request(
                method, url, json=body, params=params, allow_redirects=False
            ) as response:
                data = await read_capped(response.content, limit)
                if response.status < 500:
                    return response.status, data
                error = f"status {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = repr(exc)
    raise PeerUnreachable(f"{method} {url} failed: {error}")
