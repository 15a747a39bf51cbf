"""Process-wide settings for glibc's allocator, called by the CLI, ``bench`` and the app (not at import).

PyTorch's CPU tensors come from ``malloc``. By default glibc serves blocks over a dynamic threshold (at most
32 MB) with ``mmap`` and hands them back to the kernel on ``free``, and it trims the top of the heap above
128 kB: every network evaluation then faults its activation buffers in again, page by page. On this 2-core
machine that was a third of DiffCR's 1-step time at 256 px and up to half of a 4096² scene's wall time (as
system time). Keeping freed memory for reuse costs no extra peak memory (the same buffers come back next call).
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and stay there after free


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, loaded once per process; None where it is not glibc (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # both symbols exist only in glibc
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def tune_malloc(arenas: int | None = None) -> bool:
    """Keep freed heap memory for reuse (and cap the malloc arenas at ``arenas`` when given, e.g. for a server
    with many threads). An explicit ``MALLOC_*`` environment setting wins. Returns whether glibc took it."""
    libc = _libc()
    if libc is None:
        return False
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok &= libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        ok &= libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    if arenas and "MALLOC_ARENA_MAX" not in os.environ:
        ok &= libc.mallopt(M_ARENA_MAX, arenas) == 1
    return bool(ok)


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``). A whole-scene run allocates and frees
    many same-sized tile buffers; without this its resident memory creeps up strip after strip through heap
    fragmentation."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
