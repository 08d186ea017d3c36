"""The servers a benchmark run needs: pgdr projects (local mode), a scratch cluster for the baseline restore, moto.

As root, PostgreSQL runs as the OS user `postgres`, so every folder here must be traversable by it (the default
/var/tmp/pgdr-bench is; anything under /root is not). Each server is started by this run and stopped by it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generate import DATABASES, EXTENSIONS, Target

BENCH_DIR = Path(__file__).resolve().parent
SUPERUSER_PASSWORD = "bench-Sup3r-secret"
COMMAND_TIMEOUT = 600
MOTO_BUCKET = "pgdr-bench"
MOTO_REGION = "us-east-1"


class SetupFailed(Exception):
    """A command preparing the benchmark (not a timed case) failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def as_postgres() -> dict[str, Any]:
    """subprocess arguments running a command as the `postgres` OS user when we are root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": entry.pw_dir, "LC_ALL": "C"}}


def give_to_postgres(path: Path, mode: int = 0o700) -> None:
    path.chmod(mode)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """An untimed setup command; SetupFailed with its output when it fails."""
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise SetupFailed(f"{' '.join(argv)} timed out after {timeout:.0f} s") from None
    if completed.returncode != 0:
        raise SetupFailed(f"{' '.join(argv)} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def stop_cluster(bin_dir: Path, data_dir: Path, mode: str = "immediate") -> None:
    """Stop a cluster if it runs; immediate skips the shutdown checkpoint (the data is thrown away next)."""
    if postmaster_pid(data_dir) is None:
        return
    subprocess.run([str(bin_dir / "pg_ctl"), "stop", "-D", str(data_dir), "-m", mode, "-w", "-t", "120"],
                   capture_output=True, timeout=180, check=False, **as_postgres())


def settle(timeout: float = 300) -> None:
    """Flush dirty pages so the next case does not pay for this one's writeback."""
    subprocess.run(["sync"], timeout=timeout, check=False)


@dataclass
class ScratchCluster:
    """A cluster made by initdb for `gunzip -c | psql`, set up like pgdr's managed cluster (C locale, scram)."""

    root: Path
    port: int
    bin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def target(self) -> Target:
        return Target("127.0.0.1", self.port, "postgres", SUPERUSER_PASSWORD)

    def reset(self) -> None:
        """Throw the old cluster away and start a fresh, empty one."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        give_to_postgres(self.root)
        password_file = self.root / "pw"
        password_file.write_text(SUPERUSER_PASSWORD + "\n")
        give_to_postgres(password_file, 0o600)
        run([str(self.bin_dir / "initdb"), "--pgdata", str(self.data_dir), "--username", "postgres",
             "--pwfile", str(password_file), "--auth-local", "scram-sha-256", "--auth-host", "scram-sha-256",
             "--encoding", "UTF8", "--locale", "C"], **as_postgres())
        password_file.unlink()
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c password_encryption=scram-sha-256")
        run([str(self.bin_dir / "pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
             "-w", "-t", "120", "-o", options], **as_postgres())

    def pid(self) -> int | None:
        return postmaster_pid(self.data_dir)

    def stop(self) -> None:
        stop_cluster(self.bin_dir, self.data_dir)


def project_config(port: int, bin_dir: Path, backups: Path, targets: list[str], s3_url: str = "",
                   names: Iterable[str] = DATABASES) -> str:
    """names: the databases `pgdr init` provisions (with their application roles); none for a bare cluster."""
    databases = "".join(textwrap.dedent(f"""
        [[databases]]
        name = "{name}"
        extensions = {[*EXTENSIONS[name]]!r}
        readwrite_user = {{ name = "{name}_app", password = "{name.upper()}_APP_PASSWORD" }}
        readonly_user = {{ name = "{name}_reader", password = "{name.upper()}_READER_PASSWORD" }}
        """).replace("'", '"') for name in names)
    s3 = textwrap.dedent(f"""
        [s3]
        bucket = "{MOTO_BUCKET}"
        prefix = "bench"
        region = "{MOTO_REGION}"
        endpoint_url = "{s3_url}"
        """) if s3_url else ""
    return textwrap.dedent(f"""
        # written by bench/harness.py
        [postgres]
        mode = "local"
        data_dir = ".pgdr/pgdata"
        host = "127.0.0.1"
        port = {port}
        superuser = "postgres"
        password = "POSTGRES_PASSWORD"
        bin_dir = "{bin_dir}"

        [backup]
        dir = "{backups}"
        compression = "gzip"
        targets = {targets!r}
        min_size = "1kB"

        [secrets]
        sources = ["env", "dotenv"]
        dotenv = ".env"
        """).replace("'", '"') + s3 + databases


def clean_environment() -> dict[str, str]:
    """Our environment without anything that would steer pgdr or libpq."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("PG", "POSTGRES_", "AWS_", "PGDR_")) and name != "DATABASE_URL"}


@dataclass
class Project:
    """A local-mode pgdr project: pgdr.toml (+ pgdr-s3.toml), a 0600 .env, the managed cluster in .pgdr/."""

    root: Path
    port: int
    bin_dir: Path
    backups: Path
    databases: list[str] | None = None  # what `pgdr init` provisions; None: generate.py's three databases

    @classmethod
    def open(cls, root: Path, bin_dir: Path, backups: Path, reuse: bool, databases: list[str] | None = None
             ) -> Project:
        config = root / "pgdr.toml"
        if reuse and config.exists():
            port = int(tomllib.loads(config.read_text())["postgres"]["port"])
        else:
            port = free_port()
        project = cls(root, port, bin_dir, backups, databases)
        project.write(project.config, ["local"])
        return project

    @property
    def config(self) -> Path:
        return self.root / "pgdr.toml"

    @property
    def s3_config(self) -> Path:
        return self.root / "pgdr-s3.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / ".pgdr" / "pgdata"

    @property
    def target(self) -> Target:
        return Target("127.0.0.1", self.port, "postgres", SUPERUSER_PASSWORD)

    def write(self, path: Path, targets: list[str], s3_url: str = "") -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        names = DATABASES if self.databases is None else self.databases
        path.write_text(project_config(self.port, self.bin_dir, self.backups, targets, s3_url, names))
        secrets = [f'POSTGRES_PASSWORD="{SUPERUSER_PASSWORD}"']
        for name in DATABASES:
            secrets += [f'{name.upper()}_APP_PASSWORD="app-{name}-Passw0rd"',
                        f'{name.upper()}_READER_PASSWORD="reader-{name}-Passw0rd"']
        descriptor = os.open(self.root / ".env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(secrets) + "\n")

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_environment() | {"PYTHONUNBUFFERED": "1", "COLUMNS": "160", "NO_COLOR": "1"} | (extra or {})

    def argv(self, *args: str, config: Path | None = None, rusage_file: Path | None = None) -> list[str]:
        wrapper = [str(BENCH_DIR / "rusage_run.py"), str(rusage_file)] if rusage_file else []
        return [sys.executable, *wrapper, "-m", "pgdr", "--config", str(config or self.config), *args]

    def pgdr(self, *args: str, config: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """An untimed pgdr command (setup, listing, cleaning)."""
        return run(self.argv(*args, config=config), timeout=timeout, cwd=self.root, env=self.environment(env))

    def pid(self) -> int | None:
        return postmaster_pid(self.data_dir)

    def stop(self, mode: str = "immediate") -> None:
        stop_cluster(self.bin_dir, self.data_dir, mode)

    def fresh(self) -> None:
        """An empty, running cluster: `pgdr clean hard --yes && pgdr up`."""
        self.stop()
        if self.data_dir.exists():
            self.pgdr("clean", "hard", "--yes")
        self.pgdr("up")


@dataclass
class Moto:
    """moto's S3 server in a process of its own (its CPU is then not the harness's)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": MOTO_REGION,
                "AWS_ENDPOINT_URL": self.url, "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": "/nonexistent/pgdr-bench-aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pgdr-bench-aws-credentials"}

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_environment(), start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SetupFailed("moto's server did not start within 60 s")
        self.client().create_bucket(Bucket=MOTO_BUCKET)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=MOTO_REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def empty_bucket(self) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=MOTO_BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=MOTO_BUCKET, Key=item["Key"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
