"""The allocator setting a node applies at start: large buffers come from the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

_FOUR_MB_BUFFERS = """
import ctypes, sys
from derelayl_chain.allocator import keep_large_buffers_in_heap
if sys.argv[1] == "apply":
    assert keep_large_buffers_in_heap()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
buffers = [bytearray(4 << 20) for _ in range(4)]
print(libc.mallinfo2().hblks - before)
"""


def _run(script: str, apply: bool) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh process, with or without the setting applied first."""
    return subprocess.run(
        [sys.executable, "-c", script, "apply" if apply else "default"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_multi_megabyte_buffers_are_not_mapped_one_by_one() -> None:
    """By default each 4 MB buffer (a delta's size) is a mapping of its own; after the setting
    none is (fresh processes, so nothing earlier in the run has moved glibc's threshold)."""
    assert int(_run(_FOUR_MB_BUFFERS, apply=False).stdout) == 4
    assert int(_run(_FOUR_MB_BUFFERS, apply=True).stdout) == 0


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
    return _run(_THREADS_ALLOCATING_TOGETHER, apply).stderr.count("Arena ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_threads_allocating_together_share_one_arena() -> None:
    """Threads that allocate at once get arenas of their own by default; with the setting
    they all use the main heap, whose freed memory is kept for reuse."""
    assert _arenas_used(apply=False) > 1
    assert _arenas_used(apply=True) == 1
