"""Keep pgdr's memory flat while it streams: large buffers go back to the OS as soon as they are freed.

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB). After the first few
chunks, the 1 MiB chunks pgdr streams and the compressors' outputs are then carved from the heap of whichever
thread allocated them, and each thread's heap keeps what it freed: with a reading thread and a compressing thread
that held 20-30 MB more than the data in flight (measured with bench/rusage_run.py on the 1 GB case). Fixing the
threshold turns that adjustment off, as the environment variable MALLOC_MMAP_THRESHOLD_ would.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def return_large_buffers_to_the_os() -> bool:
    """Returns whether the setting was applied (glibc on Linux); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt (musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
