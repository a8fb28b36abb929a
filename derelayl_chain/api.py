"""The public HTTP API (see ``docs/api.md`` and ``GET /openapi.json``).

Handlers are thin: they parse the request, read the chain, store or mempool, and render JSON.
Amounts are decimal strings of base units (they can exceed a JSON number's exact range);
losses, accuracies and improvements are JSON numbers for people, with the consensus integers
beside them under ``*_fixed``. Every error leaves through one middleware that maps the core's
exception hierarchy to a status and the body ``{"error": {"code", "message"}}``; an unexpected
exception is logged and answered with a generic 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from derelayl_chain import __version__, encoding
from derelayl_chain import _api_render as render
from derelayl_chain.access import may_download, verify_download
from derelayl_chain.block import decode_transactions
from derelayl_chain.chain_records import IndexEntry
from derelayl_chain.crypto import account_id, address_of, decode_address, encode_address
from derelayl_chain.encoding import HASH_SIZE, as_bytes, as_list, as_uint
from derelayl_chain.exceptions import (
    AccessDenied,
    BlockFromFuture,
    DecodeError,
    DeRelayLError,
    DuplicateTransaction,
    FeeTooLowToReplace,
    InsufficientFunds,
    InvalidAddress,
    InvalidAmount,
    InvalidSignature,
    InvalidTransaction,
    MempoolError,
    MempoolFull,
    NonceGap,
    NonceTooLow,
    NotFound,
    SizeLimitExceeded,
    StorageError,
    ValidationError,
)
from derelayl_chain.learning.model import parameter_count
from derelayl_chain.learning.weights import encode_weights
from derelayl_chain.mempool import SenderLimitReached
from derelayl_chain.storage import schema
from derelayl_chain.transaction import decode_transaction

if TYPE_CHECKING:
    from derelayl_chain.node import Node

NODE: web.AppKey[Node] = web.AppKey("node")
PUBLIC_BODY_LIMIT = 64 * 1024
"""Largest request body of the public API; peer messages have their own limits."""
MAX_PAGE = 100
DEFAULT_PAGE = 20
MAX_JSON_DEPTH = 4
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_CURSOR = re.compile(r"([0-9]{1,19})-([0-9]{1,10})")
_MAX_HEIGHT = 2**63 - 1


class InvalidRequest(DecodeError):
    """A malformed query parameter, path segment or JSON body."""


class Unauthorized(AccessDenied):
    """A weights request without a valid signature (as opposed to one without a licence)."""


# --- errors: the one place exceptions become statuses ---------------------------------------

_ERRORS: dict[type[BaseException], tuple[int, str]] = {
    SizeLimitExceeded: (413, "too_large"),
    SenderLimitReached: (429, "sender_limit"),
    InvalidAddress: (400, "invalid_address"),
    InvalidRequest: (400, "bad_request"),
    DecodeError: (400, "malformed"),
    InvalidAmount: (400, "invalid_amount"),
    NotFound: (404, "not_found"),
    DuplicateTransaction: (409, "duplicate"),
    FeeTooLowToReplace: (409, "fee_too_low_to_replace"),
    MempoolFull: (503, "mempool_full"),
    MempoolError: (422, "mempool_rejected"),
    NonceTooLow: (422, "nonce_too_low"),
    NonceGap: (422, "nonce_gap"),
    InsufficientFunds: (422, "insufficient_funds"),
    InvalidSignature: (422, "invalid_signature"),
    InvalidTransaction: (422, "invalid_transaction"),
    ValidationError: (422, "invalid"),
    BlockFromFuture: (422, "from_future"),
    Unauthorized: (401, "unauthorized"),
    AccessDenied: (403, "forbidden"),
    StorageError: (503, "unavailable"),
}
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def classify(exc: BaseException) -> tuple[int, str]:
    """Status and code of a core exception: its most specific class in the table wins."""
    for cls in type(exc).__mro__:
        found = _ERRORS.get(cls)
        if found is not None:
            return found
    return 500, "internal"


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one error shape: ``{"error": {"code", "message"}}``, message on one line."""
    text = " ".join(message.split())[:500]
    return web.json_response({"error": {"code": code, "message": text}}, status=status)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Map exceptions to JSON errors and time every request."""
    node = request.app[NODE]
    started = time.perf_counter()
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason or code)
    except DeRelayLError as exc:
        status, code = classify(exc)
        if status >= 500 and status != 503:
            node.log.error("api_error", path=request.path, error=repr(exc))
        return error_response(status, code, str(exc) or code)
    except Exception as exc:  # anything unforeseen: log it, tell the client nothing inside
        node.log.error("api_internal_error", path=request.path, error=repr(exc), exc_info=True)
        return error_response(500, "internal", "internal error")
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        node.metrics.request_seconds.labels(request.method, route).observe(
            time.perf_counter() - started
        )


# --- request parsing --------------------------------------------------------------------------


def parse_uint(text: str, what: str, maximum: int = _MAX_HEIGHT) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > maximum:
        raise InvalidRequest(f"{what} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def parse_hex(text: str, what: str, length: int | None = None) -> bytes:
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        raise InvalidRequest(f"{what} must be an even number of hex digits")
    data = bytes.fromhex(text)
    if length is not None and len(data) != length:
        raise InvalidRequest(f"{what} must be {length} bytes ({2 * length} hex digits)")
    return data


def parse_limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_PAGE
    limit = parse_uint(text, "limit")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
    return limit


def parse_from(request: web.Request, tip_height: int, limit: int) -> int:
    """The ``from`` height; by default the page that ends at the tip."""
    text = request.query.get("from")
    if text is None:
        return max(0, tip_height - limit + 1)
    return parse_uint(text, "from")


def path_address(request: web.Request) -> bytes:
    return decode_address(request.match_info["address"])


def check_depth(document: Any, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                raise InvalidRequest(f"JSON body is nested deeper than {limit} levels")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


async def read_json_body(request: web.Request) -> Any:
    """The request's JSON body; the app's ``client_max_size`` refuses oversize bodies (413)."""
    if request.content_length is not None and request.content_length > PUBLIC_BODY_LIMIT:
        raise SizeLimitExceeded(f"request body exceeds the limit of {PUBLIC_BODY_LIMIT} bytes")
    raw = await request.read()
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("request body is not valid JSON") from None
    check_depth(document, MAX_JSON_DEPTH)
    return document


# --- handlers: chain ------------------------------------------------------------------------


async def get_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    chain = node.chain
    tip = chain.tip
    context = chain.parent_context(tip.hash)
    return web.json_response(
        {
            "chain_id": node.genesis.chain_id,
            "genesis": node.genesis_hash.hex(),
            "height": tip.height,
            "head": tip.hash.hex(),
            "timestamp": tip.header.timestamp_ms,
            "syncing": node.peers.syncing,
            "peers": node.peers.peer_count(),
            "difficulty": context.expected_difficulty,
            "effective_difficulty": chain.effective_difficulty_at(node.clock()),
            "model": render.model_fields(tip, True),
            "mempool": len(node.mempool),
            "mining": node.miner is not None,
            "address": node.node_key.address,
            "reward_address": encode_address(node.config.reward_account or node.node_key.account),
            "version": __version__,
        }
    )


def canonical_page(
    request: web.Request, render_entry: Callable[[IndexEntry], dict[str, Any]]
) -> dict[str, Any]:
    """One page of the best chain, oldest first, as asked by ``limit`` and ``from``: each
    block rendered by ``render_entry``, and ``next``, the ``from`` of the following page (None
    on the last one)."""
    node = request.app[NODE]
    limit = parse_limit(request)
    tip = node.chain.tip.height
    start = parse_from(request, tip, limit)
    items = [render_entry(entry) for entry in render.canonical_entries(node, start, limit)]
    following = start + limit
    return {"items": items, "next": following if following <= tip and items else None}


async def list_blocks(request: web.Request) -> web.Response:
    node = request.app[NODE]

    def summary(entry: IndexEntry) -> dict[str, Any]:
        return {**render.block_summary(node, entry), "txs": render.count_transactions(node, entry)}

    return web.json_response(canonical_page(request, summary))


def _find_entry(node: Node, ident: str) -> IndexEntry:
    """A block by hash (any stored block) or by height (the best chain's block there).

    64 characters always mean a hash, even when every one of them is a decimal digit: no
    height is that long, and about one hash in 10^13 is written with digits 0-9 only.
    """
    if len(ident) == 2 * HASH_SIZE:
        return node.chain.entry(parse_hex(ident, "block hash", HASH_SIZE))
    if not ident.isdigit():
        raise InvalidRequest(f"{ident[:80]!r} is neither a height nor a 64-digit block hash")
    block_hash = node.chain.hash_at(parse_uint(ident, "height"))
    if block_hash is None:
        raise NotFound(f"no block at height {ident}")
    return node.chain.entry(block_hash)


async def get_block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    entry = _find_entry(node, request.match_info["block"])
    block = node.chain.get_block(entry.hash)
    return web.json_response(render.block_json(node, entry, block))


async def get_transaction(request: web.Request) -> web.Response:
    node = request.app[NODE]
    txid = parse_hex(request.match_info["txid"], "transaction id", HASH_SIZE)
    pending = node.mempool.get(txid)
    if pending is not None:
        return web.json_response({"status": "pending", **render.transaction_json(pending)})
    location = node.store.get(schema.tx_index_key(txid))
    if location is None:
        raise NotFound(f"no transaction {txid.hex()}")
    fields = as_list(encoding.decode(location, 128), 2, "transaction location")
    block_hash, position = as_bytes(fields[0], HASH_SIZE), as_uint(fields[1])
    entry = node.chain.entry(block_hash)
    body = node.store.get(schema.body_key(block_hash))
    if body is None or position >= len(transactions := decode_transactions(body)):
        raise StorageError(f"transaction index points past block {block_hash.hex()}")
    tx = transactions[position]
    return web.json_response(
        {
            "status": "confirmed",
            **render.transaction_json(tx),
            "height": entry.height,
            "block": block_hash.hex(),
            "position": position,
            "confirmations": node.chain.tip.height - entry.height + 1,
        }
    )


async def post_transaction(request: web.Request) -> web.Response:
    node = request.app[NODE]
    document = await read_json_body(request)
    if not isinstance(document, dict) or set(document) != {"tx"}:
        raise InvalidRequest('body must be a JSON object {"tx": "<hex of the signed tx>"}')
    if not isinstance(document["tx"], str):
        raise InvalidRequest('"tx" must be a string of hex digits')
    tx = decode_transaction(parse_hex(document["tx"], "tx"))
    txid = await node.submit_transaction(tx)
    await node.peers.announce_transaction(txid)
    return web.json_response({"txid": txid.hex(), "status": "pending"}, status=202)


# --- handlers: accounts -----------------------------------------------------------------------


async def get_account(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response(render.account_json(node, path_address(request)))


async def get_rewards(request: web.Request) -> web.Response:
    node = request.app[NODE]
    account = path_address(request)
    limit = parse_limit(request)
    before_text = request.query.get("before")
    before = parse_uint(before_text, "before") if before_text is not None else None
    return web.json_response(render.account_rewards(node, account, before, limit))


def parse_cursor(text: str) -> tuple[int, int]:
    """A history cursor ``HEIGHT-SEQ`` as handed out in ``next``."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidRequest(f"cursor {text[:40]!r} must look like HEIGHT-SEQ")
    height, seq = int(match[1]), int(match[2])
    if height > _MAX_HEIGHT or seq >= 1 << 32:
        raise InvalidRequest(f"cursor {text[:40]!r} is out of range")
    return height, seq


async def get_history(request: web.Request) -> web.Response:
    node = request.app[NODE]
    account = path_address(request)
    limit = parse_limit(request)
    before_text = request.query.get("before")
    before = parse_cursor(before_text) if before_text is not None else None
    return web.json_response(render.account_history(node, account, before, limit))


# --- handlers: model --------------------------------------------------------------------------


async def get_model(request: web.Request) -> web.Response:
    node = request.app[NODE]
    tip = node.chain.tip
    return web.json_response(
        {
            "height": tip.height,
            "hash": tip.hash.hex(),
            "model_hash": tip.header.model_hash.hex(),
            **render.model_fields(tip, True),
            "parameters": parameter_count(node.genesis.task),
            "total_shares": str(node.chain.ledger.total_shares),
            "task": node.genesis.task.name,
            "open": node.genesis.params.model_open,
        }
    )


async def get_model_history(request: web.Request) -> web.Response:
    node = request.app[NODE]

    def model_step(entry: IndexEntry) -> dict[str, Any]:
        header = entry.header
        improvement = render.improvement_of(node, header)
        return {
            "height": header.height,
            "hash": header.hash.hex(),
            **render.model_fields(entry, True),
            "improvement": render.fixed(improvement),
            "improvement_fixed": improvement,
            "proposer": render.proposer_address(header),
        }

    return web.json_response(canonical_page(request, model_step))


async def get_model_weights(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    chain = node.chain
    tip = chain.tip
    if not node.genesis.params.model_open:
        try:
            key = verify_download(
                request.headers, node.genesis.chain_id, request.path, node.clock()
            )
        except AccessDenied as exc:
            raise Unauthorized(str(exc)) from exc
        if not may_download(chain.get_account(account_id(key)), tip.height, False):
            raise AccessDenied(f"{address_of(key)} holds neither a model licence nor shares")
    data = await node.run_chain(lambda: encode_weights(chain.weights_at(tip.hash)))
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={
            "X-DRL-Height": str(tip.height),
            "X-DRL-Block": tip.hash.hex(),
            "X-DRL-Model-Hash": tip.header.model_hash.hex(),
            "Content-Disposition": f'attachment; filename="model-{tip.height}.safetensors"',
        },
    )


# --- handlers: node ---------------------------------------------------------------------------


async def get_mempool(request: web.Request) -> web.Response:
    node = request.app[NODE]
    summary: dict[str, Any] = dict(node.mempool.summary())
    summary["total_fees"] = str(summary.get("total_fees", 0))
    summary["max_transactions"] = node.mempool.policy.max_transactions
    return web.json_response(summary)


async def get_peers(request: web.Request) -> web.Response:
    node = request.app[NODE]
    peers = node.peers.peers_summary()
    return web.json_response(
        {"items": peers, "count": node.peers.peer_count(), "syncing": node.peers.syncing}
    )


async def get_metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = generate_latest(node.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 description of this API, shipped beside this module."""
    text = resources.files("derelayl_chain").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    document["info"]["version"] = __version__
    return document


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# --- the application --------------------------------------------------------------------------


def public_routes() -> list[web.RouteDef]:
    return [
        web.get("/status", get_status),
        web.get("/blocks", list_blocks),
        web.get("/blocks/{block}", get_block),
        web.get("/txs/{txid}", get_transaction),
        web.post("/txs", post_transaction),
        web.get("/accounts/{address}", get_account),
        web.get("/accounts/{address}/rewards", get_rewards),
        web.get("/accounts/{address}/txs", get_history),
        web.get("/model", get_model),
        web.get("/model/history", get_model_history),
        web.get("/model/weights", get_model_weights),
        web.get("/mempool", get_mempool),
        web.get("/peers", get_peers),
        web.get("/metrics", get_metrics),
        web.get("/openapi.json", get_openapi),
    ]


async def _node_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the node with the server and stop it (mempool saved, store closed) after."""
    node = app[NODE]
    await node.start()
    try:
        yield
    finally:
        await asyncio.shield(node.stop())


def create_app(node: Node) -> web.Application:
    """The node's HTTP application: public API and peer endpoints on one port."""
    app = web.Application(middlewares=[error_middleware], client_max_size=PUBLIC_BODY_LIMIT)
    app[NODE] = node
    app.add_routes(public_routes())
    app.add_routes(node.peers.routes())
    app.cleanup_ctx.append(_node_lifecycle)
    return app
