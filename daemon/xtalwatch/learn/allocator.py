"""Hand freed tensor memory back to the OS (glibc), so a CPU run's resident memory follows its work.

glibc serves a large allocation with ``mmap`` (and unmaps it on free) only above a threshold, and it
raises that threshold to the size of every mapped block that is freed, up to 32 MiB. After one
training step, later activations of that size come from the heap instead, and freed heap memory
mostly stays resident: ``evaluate`` at 128 px kept 1.3-1.7 GB of anonymous memory between phases
that needed 0.5-1.3 GB. A fixed threshold turns the raising off; measured in docs/BENCHMARKS.md
("Memory"): peak RSS 2,201 → 1,766 MiB for 1,000 images at 128 px.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["hand_back_freed_memory", "keep_to_memory_budget", "MMAP_THRESHOLD_BYTES"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1 << 20  # blocks of 1 MiB and more: a 32 px batch's feature maps and up
_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def hand_back_freed_memory(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of ``threshold_bytes`` or more with its own mapping, returned to the OS
    when freed. Process-wide, for the rest of the process; True when glibc took it (False elsewhere:
    macOS, musl), in which case nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    if done:
        log.debug("allocator: blocks of %d bytes or more are mapped and returned when freed", threshold_bytes)
    return done


def keep_to_memory_budget(max_memory_gb: float | None) -> bool:
    """What a training process (``train``, ``evaluate``, the retraining child) does first when
    ``train.max_memory_gb`` is set: a budget is only kept if freed activations leave the process."""
    return max_memory_gb is not None and hand_back_freed_memory()
