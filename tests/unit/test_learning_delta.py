"""Tests for weight deltas: canonical encoding, strict decoding of untrusted bytes, compression
(learning/delta.py, with the parser in learning/weights.py)."""

from __future__ import annotations

import io
import json
import pathlib
import pickle
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from derelayl_chain.exceptions import InvalidDelta
from derelayl_chain.learning.delta import (
    MAX_DELTA_BYTES,
    compress,
    decode_delta,
    decompress,
    delta_hash,
    encode_delta,
    zero_delta,
)
from derelayl_chain.learning.model import Weights, weight_spec
from derelayl_chain.learning.task import DEFAULT_TASK

SPEC = weight_spec(DEFAULT_TASK)


def random_delta(seed: int = 0) -> Weights:
    """Small random float32 tensors in the default task's layout."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(shape, generator=generator, dtype=torch.float32) * 0.01
        for name, (shape, _) in SPEC.items()
    }


VALID = encode_delta(random_delta())
"""A valid canonical delta that the malformed cases below start from."""


def split_delta(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (parsed) and the tensor data of safetensors bytes."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join_delta(header: bytes, payload: bytes) -> bytes:
    """Safetensors framing around raw header bytes: 8-byte little-endian length, header, data."""
    return len(header).to_bytes(8, "little") + header + payload


def with_header(header: object, payload: bytes | None = None) -> bytes:
    """VALID's tensor data (or ``payload``) under another JSON header."""
    data = split_delta(VALID)[1] if payload is None else payload
    return join_delta(json.dumps(header, separators=(",", ":")).encode(), data)


def last_tensor(header: dict[str, Any]) -> str:
    """The name of the tensor whose data comes last."""
    return max(SPEC, key=lambda name: header[name]["data_offsets"][0])


def rejected(data: bytes, match: str, max_size: int = MAX_DELTA_BYTES) -> None:
    """Assert that decode_delta refuses ``data`` with a message matching ``match``."""
    with pytest.raises(InvalidDelta, match=match):
        decode_delta(data, SPEC, max_size)


class TouchOnUnpickle:
    """An object whose unpickling creates a file: proof that something was unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (pathlib.Path.touch, (self.target,))


# --- encoding --------------------------------------------------------------------------------


def test_round_trip() -> None:
    """decode_delta(encode_delta(d)) gives back bit-identical tensors."""
    delta = random_delta(1)
    decoded = decode_delta(encode_delta(delta), SPEC)
    assert decoded.keys() == delta.keys()
    for name in delta:
        assert torch.equal(decoded[name], delta[name])


def test_same_tensors_same_bytes() -> None:
    """Equal tensors encode to identical bytes, whatever the dict order or memory layout."""
    delta = random_delta(2)
    reordered = {name: delta[name].t().contiguous().t() for name in reversed(list(delta))}
    assert encode_delta(reordered) == encode_delta(delta)


def test_different_tensors_different_bytes() -> None:
    """Different deltas encode to different bytes."""
    assert encode_delta(random_delta(3)) != encode_delta(random_delta(4))


def test_zero_delta_round_trip() -> None:
    """The zero delta follows the spec and decodes to zeros."""
    decoded = decode_delta(encode_delta(zero_delta(DEFAULT_TASK)), SPEC)
    assert {name: tuple(t.shape) for name, t in decoded.items()} == {
        name: shape for name, (shape, _) in SPEC.items()
    }
    assert not any(t.any() for t in decoded.values())


def test_delta_at_size_limit_accepted() -> None:
    """A delta exactly max_size bytes long is accepted."""
    assert decode_delta(VALID, SPEC, max_size=len(VALID)).keys() == SPEC.keys()


# --- malformed deltas ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_value_rejected(value: float) -> None:
    """A NaN, +Inf or -Inf anywhere in a delta is refused."""
    delta = random_delta()
    delta["0.weight"][5, 9] = value
    rejected(encode_delta(delta), "'0.weight' contains NaN or infinite")


def test_missing_tensor_rejected() -> None:
    """A delta lacking one of the model's tensors is refused, naming it."""
    delta = random_delta()
    del delta["2.bias"]
    rejected(encode_delta(delta), r"missing \['2.bias'\]")


def test_extra_tensor_rejected() -> None:
    """A delta with a tensor the model does not have is refused, naming it."""
    delta = random_delta()
    delta["4.weight"] = torch.zeros(2, 2)
    rejected(encode_delta(delta), r"unexpected \['4.weight'\]")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16, torch.int32])
def test_wrong_dtype_rejected(dtype: torch.dtype) -> None:
    """A tensor of any dtype but float32 is refused, naming the tensor and dtype."""
    delta = random_delta()
    delta["0.bias"] = delta["0.bias"].to(dtype)
    rejected(encode_delta(delta), "'0.bias' has dtype '(F16|F64|BF16|I32)', expected F32")


def test_wrong_shape_rejected() -> None:
    """A tensor of the wrong shape (same element count) is refused, naming both shapes."""
    delta = random_delta()
    delta["0.weight"] = delta["0.weight"].reshape(64, 32).contiguous()
    rejected(encode_delta(delta), r"'0.weight' has shape \[64, 32\], expected \[32, 64\]")


def test_scalar_in_place_of_tensor_rejected() -> None:
    """A zero-dimensional tensor in place of a bias is refused."""
    delta = random_delta()
    delta["2.bias"] = torch.tensor(0.0)
    rejected(encode_delta(delta), "'2.bias' has shape")


def test_truncated_data_rejected() -> None:
    """A delta cut short inside its tensor data is refused as truncated."""
    rejected(VALID[:-4], "truncated")


def test_truncated_header_rejected() -> None:
    """A delta cut short inside its header is refused."""
    rejected(VALID[:40], "declares a header of")


@pytest.mark.parametrize("cut", [1, 7])
def test_shorter_than_length_prefix_rejected(cut: int) -> None:
    """Fewer than 8 bytes cannot even hold the header length."""
    rejected(VALID[:cut], "too short")


def test_trailing_bytes_rejected() -> None:
    """Bytes after the last tensor are refused."""
    rejected(VALID + b"\x00\x00\x00\x00", "4 stray data bytes")


def test_header_length_beyond_data_rejected() -> None:
    """A header length pointing past the end of the data is refused."""
    rejected(len(VALID).to_bytes(8, "little") + VALID[8:], "declares a header of")


def test_huge_header_length_rejected() -> None:
    """A header length of 2**63 is refused without allocating anything."""
    rejected((1 << 63).to_bytes(8, "little") + VALID[8:], "declares a header of")


def test_header_over_limit_rejected() -> None:
    """A header longer than 64 KiB is refused even when the data is long enough."""
    padding = b" " * (70_000 - len(json.dumps(split_delta(VALID)[0])))
    header = json.dumps(split_delta(VALID)[0]).encode() + padding
    rejected(join_delta(header, split_delta(VALID)[1]), "declares a header of 70000")


def test_header_not_json_rejected() -> None:
    """A header that is not JSON is refused."""
    length = int.from_bytes(VALID[:8], "little")
    rejected(VALID[:8] + b"\xff" * length + VALID[8 + length :], "header is not JSON")


@pytest.mark.parametrize("header", [b"[" * 50_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000])
def test_deeply_nested_header_rejected(header: bytes) -> None:
    """A short header nested too deeply for the JSON parser is refused, not a RecursionError."""
    rejected(join_delta(header, b""), "header is not JSON")


@pytest.mark.parametrize("header", [[], "text", 42, None])
def test_header_not_object_rejected(header: object) -> None:
    """A header that is JSON but not an object is refused."""
    rejected(with_header(header), "header is not a JSON object")


def test_tensor_entry_not_object_rejected() -> None:
    """A tensor entry that is not a JSON object is refused."""
    header, _ = split_delta(VALID)
    header["0.bias"] = [0, 128]
    rejected(with_header(header), "'0.bias' has dtype")


def test_overlapping_offsets_rejected() -> None:
    """Tensors whose data ranges overlap are refused."""
    header, _ = split_delta(VALID)
    begin, end = header[last_tensor(header)]["data_offsets"]
    header[last_tensor(header)]["data_offsets"] = [begin - 4, end - 4]
    rejected(with_header(header), "overlaps or leaves a gap")


def test_gap_in_offsets_rejected() -> None:
    """Tensors with unused bytes between their data ranges are refused."""
    header, payload = split_delta(VALID)
    name = last_tensor(header)
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + 4, end + 4]
    rejected(with_header(header, payload + b"\x00" * 4), "overlaps or leaves a gap")


def test_offsets_of_wrong_length_rejected() -> None:
    """A data range that does not match the tensor's size is refused."""
    header, _ = split_delta(VALID)
    header["0.bias"]["data_offsets"] = [0, 124]
    rejected(with_header(header), "'0.bias' has bad data offsets")


@pytest.mark.parametrize("offsets", [[0.0, 128.0], [False, 128], ["0", "128"], [0], None])
def test_offsets_of_wrong_type_rejected(offsets: object) -> None:
    """Data offsets must be a pair of JSON integers."""
    header, _ = split_delta(VALID)
    header["0.bias"]["data_offsets"] = offsets
    rejected(with_header(header), "'0.bias' has bad data offsets")


def test_metadata_rejected() -> None:
    """A delta carrying __metadata__ is not canonical and is refused."""
    delta = {name: tensor.contiguous() for name, tensor in random_delta().items()}
    data = bytes(safetensors.torch.save(delta, metadata={"format": "pt"}))
    rejected(data, "carries metadata")


def test_non_canonical_header_rejected() -> None:
    """The same header re-serialised with other whitespace is refused as non-canonical."""
    header, payload = split_delta(VALID)
    rejected(join_delta(json.dumps(header, indent=1).encode(), payload), "not in canonical")


def test_duplicate_header_key_rejected() -> None:
    """A header naming one tensor twice is refused."""
    length = int.from_bytes(VALID[:8], "little")
    raw = VALID[8 : 8 + length].rstrip()
    entry = json.dumps(split_delta(VALID)[0]["0.bias"], separators=(",", ":"))
    doubled = raw[:-1] + b',"0.bias":' + entry.encode() + b"}"
    rejected(join_delta(doubled, split_delta(VALID)[1]), "canonical|not valid safetensors")


def test_oversize_rejected() -> None:
    """A delta larger than max_size is refused before parsing."""
    rejected(VALID, "over the limit", max_size=len(VALID) - 1)


def test_empty_bytes_rejected() -> None:
    """Empty bytes are not a delta."""
    rejected(b"", "too short")


def test_pickle_payload_refused_without_unpickling(tmp_path: Path) -> None:
    """A pickle that would create a file if unpickled is refused, and the file never appears."""
    target = tmp_path / "pwned"
    with pytest.raises(InvalidDelta):
        decode_delta(pickle.dumps(TouchOnUnpickle(target)), SPEC)
    assert not target.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_protocols_refused_without_unpickling(tmp_path: Path, protocol: int) -> None:
    """Pickles of every protocol are refused without being unpickled."""
    target = tmp_path / "pwned"
    with pytest.raises(InvalidDelta):
        decode_delta(pickle.dumps(TouchOnUnpickle(target), protocol=protocol), SPEC)
    assert not target.exists()


def test_torch_save_payload_refused_without_unpickling(tmp_path: Path) -> None:
    """torch.save bytes (a zip holding a pickle) are refused without being unpickled."""
    target = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"0.weight": TouchOnUnpickle(target)}, buffer)
    with pytest.raises(InvalidDelta):
        decode_delta(buffer.getvalue(), SPEC)
    assert not target.exists()


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload used above does create its file when unpickled."""
    target = tmp_path / "touched"
    pickle.loads(pickle.dumps(TouchOnUnpickle(target)))
    assert target.exists()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_invalid_delta(data: bytes) -> None:
    """Arbitrary bytes never raise anything but InvalidDelta."""
    with pytest.raises(InvalidDelta):
        decode_delta(data, SPEC)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(0, 255))
def test_mutated_delta_decodes_canonically_or_fails(position: int, value: int) -> None:
    """A valid delta with one byte changed is refused with InvalidDelta or decodes to exactly
    the tensors its bytes hold."""
    mutated = VALID[:position] + bytes([value]) + VALID[position + 1 :]
    try:
        decoded = decode_delta(mutated, SPEC)
    except InvalidDelta:
        return
    assert encode_delta(decoded) == mutated


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*SPEC, "__metadata__", "x"]), json_values, max_size=5),
    st.binary(max_size=64),
)
def test_random_header_only_invalid_delta(header: dict[str, Any], payload: bytes) -> None:
    """Arbitrary JSON headers over arbitrary data never raise anything but InvalidDelta."""
    with pytest.raises(InvalidDelta):
        decode_delta(join_delta(json.dumps(header).encode(), payload), SPEC)


# --- hashes ----------------------------------------------------------------------------------


def test_delta_hash_differs_for_different_deltas() -> None:
    """Different delta bytes have different hashes."""
    assert delta_hash(encode_delta(random_delta(5))) != delta_hash(encode_delta(random_delta(6)))


def test_delta_hash_is_stable() -> None:
    """The same delta bytes always hash the same, to 32 bytes."""
    assert delta_hash(VALID) == delta_hash(bytes(VALID))
    assert len(delta_hash(VALID)) == 32


# --- compression -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"x", VALID], ids=["empty", "one byte", "delta"])
def test_compress_round_trip(data: bytes) -> None:
    """decompress(compress(b)) is b."""
    assert decompress(compress(data), len(data)) == data


def test_compress_shrinks_zero_delta() -> None:
    """A zero delta compresses to a small fraction of its size."""
    data = encode_delta(zero_delta(DEFAULT_TASK))
    assert len(compress(data)) < len(data) // 10


@pytest.mark.parametrize(
    "garbage",
    [b"", b"garbage", b"\x28\xb5\x2f\xfd", b"\x28\xb5\x2f\xfd" + b"\xff" * 20],
    ids=["empty", "text", "magic only", "magic then junk"],
)
def test_decompress_garbage_rejected(garbage: bytes) -> None:
    """Bytes that are not a zstd frame are an InvalidDelta."""
    with pytest.raises(InvalidDelta):
        decompress(garbage, MAX_DELTA_BYTES)


def test_decompress_truncated_rejected() -> None:
    """A compressed delta cut short is an InvalidDelta."""
    packed = compress(VALID)
    with pytest.raises(InvalidDelta):
        decompress(packed[: len(packed) // 2], MAX_DELTA_BYTES)


def test_decompress_bounded_by_max_size() -> None:
    """Output larger than max_size is refused, even when the frame declares its size."""
    with pytest.raises(InvalidDelta, match="over 1000"):
        decompress(compress(b"\x00" * 100_000), 1000)


def test_decompress_bounded_without_declared_size() -> None:
    """Output larger than max_size is refused for a frame that does not declare its size."""
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 100_000)
    with pytest.raises(InvalidDelta):
        decompress(packed, 1000)


def test_decompress_exactly_max_size_accepted() -> None:
    """Output of exactly max_size bytes is accepted."""
    assert decompress(compress(b"\x01" * 1000), 1000) == b"\x01" * 1000


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_decompress_random_bytes_only_invalid_delta(data: bytes) -> None:
    """Arbitrary bytes decompress within the bound or raise InvalidDelta, nothing else."""
    try:
        output = decompress(data, 4096)
    except InvalidDelta:
        return
    assert len(output) <= 4096
