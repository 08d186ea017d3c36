"""The glibc setting that keeps streamed buffers out of the threads' heaps is applied where it exists."""

from __future__ import annotations

import platform
import sys

import pytest

from pgdr.memory import return_large_buffers_to_the_os


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="not glibc: the mmap threshold is a glibc setting, there is none to test")
def test_the_mmap_threshold_is_set_on_glibc() -> None:
    assert return_large_buffers_to_the_os() is True

