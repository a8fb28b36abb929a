"""Weight deltas: the learning step a block carries, checked before anything else uses it."""

from __future__ import annotations

import torch
import zstandard

from derelayl_chain.encoding import bulk_hash
from derelayl_chain.exceptions import InvalidDelta
from derelayl_chain.learning.model import Weights, WeightSpec, weight_spec
from derelayl_chain.learning.task import TaskSpec
from derelayl_chain.learning.weights import decode_tensors, encode_tensors

MAX_DELTA_BYTES = 16 << 20
_COMPRESSION_LEVEL = -1
"""zstd's fast level -1: trained float32 deltas of the large model shrink to 75-81 % of their
size (depending on how they were trained) in about 4.5 ms per 4 MB, against 59-66 % in 7.5 ms
at level 1. The compressed delta must reach the disk (fdatasync)
before the block it belongs to connects, and at level -1 compressing and writing finish within
the evaluation that runs beside them; at level 1 the import waits for them."""


def encode_delta(delta: Weights) -> bytes:
    """Canonical safetensors bytes of a delta."""
    return encode_tensors(delta)


def decode_delta(data: bytes, spec: WeightSpec, max_size: int = MAX_DELTA_BYTES) -> Weights:
    """Parse an untrusted delta: exact names, shapes, float32, canonical, finite."""
    return decode_tensors(data, spec, max_size, what="delta")


def delta_hash(data: bytes) -> bytes:
    return bulk_hash(b"drl-delta", data)


def zero_delta(task: TaskSpec) -> Weights:
    return {
        name: torch.zeros(shape, dtype=torch.float32)
        for name, (shape, _) in weight_spec(task).items()
    }


def compress(data: bytes) -> bytes:
    """zstd-compressed bytes for storage at rest."""
    return zstandard.ZstdCompressor(level=_COMPRESSION_LEVEL).compress(data)


def decompress(data: bytes, max_size: int) -> bytes:
    """Inverse of :func:`compress`, refusing output larger than ``max_size``.

    The library sizes its output by the content size a frame declares and ignores
    ``max_output_size`` then, so the declared size is checked first.
    """
    try:
        declared = zstandard.frame_content_size(data)
        if declared > max_size:
            raise InvalidDelta(f"compressed data declares {declared} bytes, over {max_size}")
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise InvalidDelta(f"compressed data is corrupt or over {max_size} bytes: {exc}") from exc
