"""The harness every tier that needs a server shares: real PostgreSQL servers in temporary folders, and a pgdr
project driven like a user does. Plain functions and classes, imported as `from harness import ...`; the fixtures
that hand them to tests (workdir, pg_server, project, running_project) are in tests/conftest.py.

Servers are started with initdb + pg_ctl directly (not through pgdr's own code), in a temporary folder with the
unix socket inside it and fsync off. As root, the server runs as the unprivileged OS user `postgres`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgdr.postgres.binaries import find_toolset, relocated_embedded

needs_pyrage = pytest.mark.skipif(
    importlib.util.find_spec("pyrage") is None,
    reason="pyrage is not installed: age encryption at rest is untested (pip install -e '.[test]' installs it)")

SUPERUSER_PASSWORD = "Sup3r-secret-for-tests"
USER_PASSWORD = "Rw-Passw0rd-for-tests"
READONLY_PASSWORD = "Ro-Passw0rd-for-tests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_as_postgres_kwargs() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class TestServer:
    """A PostgreSQL server started by initdb + pg_ctl, independent of pgdr's cluster code."""

    __test__ = False  # a helper, not a test class, whatever its name

    data_dir: Path
    socket_dir: Path
    port: int
    bin_dir: Path
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    password: str = SUPERUSER_PASSWORD
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir.parent / "server.log"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
                              capture_output=True, check=check, **run_as_postgres_kwargs())  # type: ignore[arg-type]

    def start(self) -> None:
        options = f"-c port={self.port} -c listen_addresses={self.host} -c unix_socket_directories={self.socket_dir} " \
                  "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", options)

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate", "-w", check=False)

    def connect(self, database: str = "postgres", user: str | None = None, password: str | None = None):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, dbname=database, user=user or self.superuser,
                               password=password or self.password, autocommit=True)


def server_bin_dir() -> Path:
    """initdb/pg_ctl/postgres the `postgres` OS user can run (the embedded wheel is copied out of /root)."""
    toolset = find_toolset("", ("initdb", "pg_ctl", "postgres"))
    if os.geteuid() == 0:
        toolset = relocated_embedded(toolset, lambda path: os.access(path, os.X_OK) and
                                     all(parent.stat().st_mode & 0o001 for parent in path.parents))
    return toolset.folder or Path(toolset.path("initdb")).resolve().parent


def start_test_server(root: Path) -> TestServer:
    bin_dir = server_bin_dir()
    server_root = root / "server"
    server_root.mkdir()
    chown_to_postgres(server_root)
    socket_dir = server_root / "sock"
    socket_dir.mkdir()
    chown_to_postgres(socket_dir)
    password_file = server_root / "pw"
    password_file.write_text(SUPERUSER_PASSWORD + "\n")
    chown_to_postgres(password_file)
    data_dir = server_root / "data"
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--pwfile", str(password_file),
                    "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync"],
                   capture_output=True, check=True, env={**os.environ, "LC_ALL": "C"},
                   **run_as_postgres_kwargs())  # type: ignore[arg-type]
    password_file.unlink()
    server = TestServer(data_dir, socket_dir, free_port(), bin_dir)
    server.log_file.touch()
    chown_to_postgres(server.log_file)
    server.start()
    return server


@dataclass
class Project:
    """A folder with pgdr.toml and .env, and a way to run the pgdr CLI in it as a user would."""

    root: Path
    port: int
    environment: dict[str, str]

    @property
    def config(self) -> Path:
        return self.root / "pgdr.toml"

    @property
    def backups(self) -> Path:
        return self.root / ".pgdr" / "backups"

    def pgdr(self, *args: str, input_text: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pgdr", *args], cwd=self.root, input=input_text,
                              capture_output=True, text=True, timeout=timeout,
                              env={**self.environment, **(env or {})})

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self.pgdr(*args, **kwargs)  # type: ignore[arg-type]
        command = " ".join(args)
        assert result.returncode == 0, f"pgdr {command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def connect(self, database: str = "postgres", user: str = "postgres", password: str = SUPERUSER_PASSWORD):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=database, user=user, password=password,
                               autocommit=True)

    def backup_files(self) -> list[Path]:
        """Every file under the backup dir, hidden temporaries included."""
        return sorted(path for path in self.backups.rglob("*") if path.is_file()) if self.backups.exists() else []


def project_config(port: int, extra: str = "") -> str:
    return textwrap.dedent(f"""
        [postgres]
        mode = "local"
        data_dir = ".pgdr/pgdata"
        host = "127.0.0.1"
        port = {port}
        superuser = "postgres"
        password = "POSTGRES_PASSWORD"
        settings = {{ fsync = false, synchronous_commit = false, full_page_writes = false }}

        [backup]
        dir = ".pgdr/backups"
        compression = "gzip"
        targets = ["local"]
        min_size = "1kB"

        [secrets]
        sources = ["env", "dotenv"]
        dotenv = ".env"

        [[databases]]
        name = "demo"
        description = "Demo application database"
        extensions = ["pg_trgm"]
        readwrite_user = {{ name = "demo_user", password = "POSTGRES_DEMO_USER_PASSWORD", connection_limit = 50 }}

        [databases.readonly_user]
        name = "demo_readonly_user"
        password = "POSTGRES_DEMO_READONLY_PASSWORD"
        connection_limit = 20
        """) + extra


def write_dotenv(path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f'POSTGRES_PASSWORD="{SUPERUSER_PASSWORD}"\n'
                     f'POSTGRES_DEMO_USER_PASSWORD="{USER_PASSWORD}"\n'
                     f'POSTGRES_DEMO_READONLY_PASSWORD="{READONLY_PASSWORD}"\n')


def clean_environment() -> dict[str, str]:
    """The caller's environment without anything that would leak into or steer pgdr."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("PG", "POSTGRES_", "AWS_")) and name != "DATABASE_URL"}


def load_sample_data(project: Project, rows: int = 5000) -> None:
    with project.connect("demo", "demo_user", USER_PASSWORD) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, customer text, amount numeric, "
                           "note text)")
        connection.execute("INSERT INTO orders (customer, amount, note) SELECT 'c' || g, g * 1.5, "
                           "E'line\\twith tab\\nand newline ' || md5(g::text) FROM generate_series(1, %s) g", (rows,))


def count_orders(project: Project) -> int:
    with project.connect("demo") as connection:
        row = connection.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0])
