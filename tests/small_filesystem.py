"""A small real filesystem to fill, for ENOSPC ("disk full"): a tmpfs, or an ext4 image mounted through a loop
device, so a machine where one of the two cannot be mounted still tests the other. Both need root and the right
to mount; where that is missing the test is skipped, naming what is lost.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

KINDS = ("tmpfs", "ext4-loop")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _mount(kind: str, mountpoint: Path, size_kib: int, image: Path) -> subprocess.CompletedProcess[str]:
    if kind == "tmpfs":
        return _run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mountpoint)])
    if shutil.which("mkfs.ext4") is None:
        return subprocess.CompletedProcess([], 1, "", "mkfs.ext4 is not installed (e2fsprogs)")
    with open(image, "wb") as handle:
        handle.truncate(size_kib * 1024)
    made = _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-b", "1024", "-N", "32", str(image)])
    if made.returncode != 0:
        return made
    return _run(["mount", "-o", "loop", str(image), str(mountpoint)])


@contextmanager
def small_filesystem(kind: str, mountpoint: Path, size_kib: int) -> Iterator[Path]:
    """Mount a `size_kib` filesystem of `kind` on mountpoint (created if missing) for the duration."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    image = mountpoint.with_name(mountpoint.name + ".img")
    lost = f"ENOSPC on a real {kind} filesystem is untested"
    if os.geteuid() != 0:
        pytest.skip(f"not root: cannot mount a {kind}; {lost}")
    mounted = _mount(kind, mountpoint, size_kib, image)
    if mounted.returncode != 0:
        image.unlink(missing_ok=True)
        pytest.skip(f"cannot mount a {kind} here ({mounted.stderr.strip() or 'needs CAP_SYS_ADMIN'}); {lost}")
    try:
        yield mountpoint
    finally:
        _run(["umount", str(mountpoint)])
        image.unlink(missing_ok=True)
