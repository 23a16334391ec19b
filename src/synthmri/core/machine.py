"""What this machine offers a run: usable cores, available memory, and handing freed
memory back to the system (used by the executors)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from pathlib import Path

__all__ = ["available_memory", "cores", "release_memory"]


def cores() -> int:
    """CPU cores this process may run on (its affinity on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available to new work (``MemAvailable``); None where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def release_memory() -> None:
    """Free unreachable objects and hand the C heap's free pages back to the system (glibc
    keeps them otherwise: a process holds its largest step's memory for good)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
