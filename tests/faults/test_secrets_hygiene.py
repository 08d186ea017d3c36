"""Secrets hygiene, observed from outside: no password in any process's argv while the runbook runs (a thread
samples /proc/*/cmdline), none in the environment of the client tools pgdr starts (psql, pg_dumpall, pg_dump)
or of verify.command beyond the DATABASE_URL it needs, none in output, none in the server log even with every
statement logged, and the temporary PGPASSFILE is 0600 and removed.

Covered elsewhere, not repeated: no password in backups or output through the whole runbook
(tests/end_to_end/test_secrets_local.py::test_passwords_appear_in_no_backup_and_in_no_output_of_the_whole_runbook),
the dotenv file written 0600 whatever the umask (test_secrets_local.py::test_secrets_pull_creates_a_missing_dotenv_0600,
tests/unit/test_secrets.py::test_new_dotenv_file_is_0600_whatever_the_umask), a dump holding role passwords refused
(tests/integration/test_dumpscan_real.py::test_dump_with_role_passwords_is_detected), one redaction point
(tests/unit/test_redact.py).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.fault_helpers import PASSWORDS, cluster_project, fake_binary
from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD, load_sample_data, needs_pyrage

SECRET_ENVIRONMENT = {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD, "POSTGRES_DEMO_USER_PASSWORD": USER_PASSWORD,
                      "POSTGRES_DEMO_READONLY_PASSWORD": READONLY_PASSWORD, "PGPASSWORD": SUPERUSER_PASSWORD}
CLIENT_TOOLS = {"psql", "pg_dumpall", "pg_dump", "pg_restore"}
SECRET_NAME = re.compile(rb"^(POSTGRES_\w*PASSWORD|PGPASSWORD|PGDR_AGE_IDENTITY)=", re.MULTILINE)
VERIFIER = re.compile(r"SCRAM-SHA-256\$|md5[0-9a-f]{32}")
LOGGED = '{ fsync = false, synchronous_commit = false, log_statement = "all", log_min_duration_statement = 0 }'


@pytest.fixture(scope="module")
def live() -> Iterator:
    """Every statement the server runs is logged; verify.command dumps its environment to a file."""
    with cluster_project(settings=LOGGED, config_suffix='\n[verify]\ncommand = "sh -c \'env > verify-command.env\'"\n'
                         ) as project:
        load_sample_data(project, 500)
        yield project


class ProcessWatcher(threading.Thread):
    """Samples every process's argv, and the environment of the client tools, until stopped."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.secrets = [secret.encode() for secret in secrets]
        self.leaks: list[str] = []
        self.seen: set[str] = set()
        self.sweeps = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    self.inspect(entry.name)
            self.sweeps += 1
            time.sleep(0.002)

    def inspect(self, pid: str) -> None:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if not argv:
            return
        name = os.path.basename(argv.split(b"\0")[0].decode(errors="replace"))
        self.seen.add(name)
        if any(secret in argv for secret in self.secrets):
            self.leaks.append(f"argv of {name} (pid {pid}): {argv[:80]!r}")
        if name in CLIENT_TOOLS:
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                return
            names = SECRET_NAME.findall(environment.replace(b"\0", b"\n"))
            values = [number for number, secret in enumerate(self.secrets) if secret in environment]
            if names or values:
                self.leaks.append(f"environment of {name} (pid {pid}): names {names}, values #{values}")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def test_no_password_in_any_argv_or_client_environment_during_the_whole_runbook(live):
    watcher = ProcessWatcher(PASSWORDS)
    watcher.start()
    try:
        for args in [("backup",), ("restore", "latest", "--clean", "--yes"), ("init",), ("verify",),
                     ("secrets", "pull"), ("psql", "-c", "select count(*) from pg_roles"), ("clean", "hard", "--yes"),
                     ("up",), ("restore", "latest"), ("init",), ("verify",)]:
            live.ok(*args, env=SECRET_ENVIRONMENT)  # the secrets are in pgdr's own environment too
    finally:
        watcher.stop()
    assert watcher.sweeps > 100, "the watcher hardly looked"
    assert {"pg_dumpall", "pg_dump", "psql", "initdb"} <= watcher.seen, f"the client tools were never seen: " \
                                                                        f"{sorted(watcher.seen)}"
    assert watcher.leaks == [], "\n".join(watcher.leaks)
    live.assert_no_password_in_output()
    command_environment = (live.root / "verify-command.env").read_text()
    assert "DATABASE_URL=postgresql://demo_user:" in command_environment  # the one secret it needs
    for name in SECRET_ENVIRONMENT:
        assert f"{name}=" not in command_environment, f"verify.command inherited {name}"
    assert command_environment.count(USER_PASSWORD) == 1 and SUPERUSER_PASSWORD not in command_environment


def test_the_server_log_with_every_statement_logged_holds_no_password_and_no_verifier(live):
    live.ok("init")
    live.ok("init")
    live.ok("verify")
    log = (live.root / ".pgdr" / "postgres.log").read_text(errors="replace")
    assert "statement: " in log and "duration: " in log, "statements were not logged: the test proves nothing"
    assert "pgdr_verify_" in log, "verify's statements are not in the log"
    for password in PASSWORDS:
        assert password not in log
    assert not VERIFIER.search(log), f"a password verifier was logged: {VERIFIER.search(log)[0]}"


@needs_pyrage
def test_pg_dumpall_gets_a_0600_pgpassfile_that_is_removed_and_no_secret_in_its_environment(live):
    import pyrage

    workdir = live.root.parent
    out = workdir / "dumpall-saw"
    out.mkdir(exist_ok=True)
    script = ('stat -c %a "$PGPASSFILE" > "$FAULT_OUT/pgpass-mode"\necho "$PGPASSFILE" > "$FAULT_OUT/pgpass-path"\n'
              'env > "$FAULT_OUT/environment"\nexec "$REAL" "$@"\n')
    bin_dir = fake_binary(workdir, "env-dump", "pg_dumpall", script)
    identity = pyrage.x25519.Identity.generate()
    result = live.ok("backup", env={
        **SECRET_ENVIRONMENT, "PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_OUT": str(out),
        "PGDR_BACKUP__ENCRYPTION": "age", "PGDR_BACKUP__AGE_RECIPIENTS": f'["{identity.to_public()}"]',
        "PGDR_AGE_IDENTITY": str(identity)})  # the private key is a secret too: a backup does not even need it
    assert (out / "pgpass-mode").read_text().strip() == "600"
    assert not Path((out / "pgpass-path").read_text().strip()).exists(), "the PGPASSFILE was not removed"
    environment = (out / "environment").read_bytes()
    assert b"PGPASSFILE=" in environment and b"PGHOST=127.0.0.1" in environment
    assert not SECRET_NAME.search(environment), SECRET_NAME.search(environment)[0]
    for secret in (*PASSWORDS, str(identity)):
        assert secret.encode() not in environment
    assert str(identity) not in result.stdout + result.stderr
