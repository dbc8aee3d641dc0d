"""The allocator setting: big freed blocks go back to the OS instead of staying in the heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process: allocate 8 MiB, free it, allocate 8 MiB again, and say whether the second block
# lies in the heap ("[heap]" in /proc/self/maps) or in a mapping of its own.
_PROBE = r"""
import ctypes, sys
if sys.argv[1] == "on":
    from xtalwatch.learn.allocator import hand_back_freed_memory
    assert hand_back_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free(libc.malloc(8 << 20))
second = libc.malloc(8 << 20)
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo <= second < hi:
        print("heap" if line.rstrip().endswith("[heap]") else "mapped")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_a_freed_big_block_is_not_served_again_from_the_heap() -> None:
    where = {mode: subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                                  check=True, timeout=60).stdout.strip() for mode in ("off", "on")}
    # glibc's own rule raised the threshold after the first free: the second block came from the heap
    assert where == {"off": "heap", "on": "mapped"}
