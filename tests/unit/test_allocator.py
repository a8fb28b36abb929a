"""The allocator setting a node applies at start: large buffers come from the heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from derelayl_chain.allocator import keep_large_buffers_in_heap


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mmapped_chunks() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("this C library has no mallinfo2")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblks)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_multi_megabyte_buffers_are_not_mapped_one_by_one() -> None:
    """After the setting, 4 MB buffers (a delta's size) are no separate mappings."""
    assert keep_large_buffers_in_heap()
    before = _mmapped_chunks()
    buffers = [bytearray(4 << 20) for _ in range(4)]
    assert _mmapped_chunks() == before
    assert sum(len(b) for b in buffers) == 16 << 20
