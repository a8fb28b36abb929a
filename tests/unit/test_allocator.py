"""The allocator setting a node applies at start: large buffers come from the heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
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


_THREADS_ALLOCATING_TOGETHER = """
import ctypes, sys, threading
from derelayl_chain.allocator import keep_large_buffers_in_heap
if sys.argv[1] == "apply":
    assert keep_large_buffers_in_heap()
start = threading.Barrier(4)
def allocate():
    start.wait()
    buffers = [bytearray(1 << 20) for _ in range(16)]
    start.wait()
threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas_used(apply: bool) -> int:
    """Arenas glibc reports after four threads allocated at the same time (fresh process)."""
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_ALLOCATING_TOGETHER, "apply" if apply else "default"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr.count("Arena ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_threads_allocating_together_share_one_arena() -> None:
    """Threads that allocate at once get arenas of their own by default; with the setting
    they all use the main heap, whose freed memory is kept for reuse."""
    assert _arenas_used(apply=False) > 1
    assert _arenas_used(apply=True) == 1
