"""The mode a file is created with, seen from outside the process: strace records every open(O_CREAT)/creat and
rename, so a test tells "created 0600" from "created 0666, then chmodded", which the final mode cannot.

Run the program with a umask of 0: the mode argument of the system call is then exactly the file's mode.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CALLS = "trace=open,openat,openat2,creat,rename,renameat,renameat2,link,linkat,chmod,fchmod,fchmodat"
OPEN = re.compile(r'\b(?:open|openat)\((?:[^,]+, )?"((?:[^"\\]|\\.)*)", ([A-Z_|]+)(?:, (0[0-7]*))?\) = (-?\d+)')
CREAT = re.compile(r'\bcreat\("((?:[^"\\]|\\.)*)", (0[0-7]*)\) = (-?\d+)')
RENAME = re.compile(r'\brename(?:at2?)?\((?:[^,]+, )?"((?:[^"\\]|\\.)*)", (?:[^,]+, )?"((?:[^"\\]|\\.)*)"'
                    r'(?:, [^)]*)?\) = 0')


@dataclass(frozen=True)
class Created:
    path: Path
    mode: int


def strace() -> str:
    """The strace binary, or a skip that names what is lost."""
    found = shutil.which("strace")
    if found is None:
        pytest.skip("strace is not installed: the mode a secrets file is created with cannot be observed, only its "
                    "final mode was checked (apt-get install strace)")
    return found


def traced(argv: Sequence[str], log: Path, cwd: Path, env: Mapping[str, str],
           timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run argv (and its children) under strace, recording file creations and renames into log."""
    return subprocess.run([strace(), "-f", "-qq", "-s", "4096", "-e", CALLS, "-o", str(log), *argv], cwd=cwd,
                          env=dict(env), capture_output=True, text=True, timeout=timeout)


def created_files(log: Path, cwd: Path) -> list[Created]:
    """Every file the traced processes created, with the mode they asked for, in order."""
    created = []
    for line in log.read_text(errors="replace").splitlines():
        opened = OPEN.search(line)
        if opened and "O_CREAT" in opened.group(2) and int(opened.group(4)) >= 0:
            created.append(Created(cwd / opened.group(1), int(opened.group(3) or "0", 8)))
        made = CREAT.search(line)
        if made and int(made.group(3)) >= 0:
            created.append(Created(cwd / made.group(1), int(made.group(2), 8)))
    return created


def renames(log: Path, cwd: Path) -> list[tuple[Path, Path]]:
    return [(cwd / found.group(1), cwd / found.group(2))
            for line in log.read_text(errors="replace").splitlines() if (found := RENAME.search(line))]


def creation_modes_of(target: Path, log: Path, cwd: Path) -> list[int]:
    """The modes `target` was created with: directly, or as a file renamed onto it afterwards. Empty when the
    trace shows neither (the test must then fail: it did not see the file being written)."""
    created = created_files(log, cwd)
    sources = {source for source, destination in renames(log, cwd) if destination == target}
    return [item.mode for item in created if item.path == target or item.path in sources]
