"""An encrypted backup of many databases restores database by database without leaking a decrypting thread or
its pipe per section: 300 databases under `ulimit -n 256`, which the leak (two descriptors and a thread left per
section) used to exhaust."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from harness import Project, needs_pyrage

DATABASES = 300
FILE_LIMIT = 256


def limited_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@needs_pyrage
@pytest.mark.timeout(1200)  # 300 databases dumped, cleaned and restored: minutes on a busy 2-core machine
def test_restoring_300_encrypted_databases_under_256_open_files(running_project: Project) -> None:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    config = running_project.config
    config.write_text(config.read_text().replace(
        "[backup]\n", f'[backup]\njobs = 2\nencryption = "age"\nage_recipients = ["{identity.to_public()}"]\n', 1))
    with running_project.connect() as connection:
        for number in range(DATABASES):
            connection.execute(f"CREATE DATABASE many_{number:03d}")
        connection.execute("CREATE TABLE marker (a int)")
        connection.execute("INSERT INTO marker VALUES (1), (2)")
    backup = running_project.pgdr("backup", timeout=900)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    running_project.ok("clean", "hard", "--yes")
    running_project.ok("up")
    restore = subprocess.run(
        [sys.executable, "-m", "pgdr", "restore", "latest"], cwd=running_project.root, capture_output=True,
        text=True, timeout=900, preexec_fn=limited_files,  # noqa: PLW1509 - the limit is the point of the test
        env={**running_project.environment, "PGDR_AGE_IDENTITY": str(identity)},
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert f"{DATABASES + 3} databases, 2 at a time" in restore.stdout  # the parallel path, one section each
    # an offset into age's ciphertext is no place to start reading: each session decrypts from the start, and says so
    assert "encrypted backup: each session decompresses the backup from its start" in restore.stdout
    with running_project.connect() as connection:
        names = {row[0] for row in connection.execute("SELECT datname FROM pg_database WHERE datname LIKE 'many_%'")}
        rows = connection.execute("SELECT count(*) FROM marker").fetchone()
    assert len(names) == DATABASES and rows is not None and rows[0] == 2
