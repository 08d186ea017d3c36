"""As root, the psql that feeds a backup to the server runs as the cluster's unprivileged OS user, not as root:
even a psql meta-command that got past the lexer and pg_dump's \\restrict would not run with root's rights."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import fake_bin_dir
from harness import Project, load_sample_data


@pytest.mark.skipif(os.geteuid() != 0, reason="only root changes the user psql runs as")
@pytest.mark.parametrize("jobs", [1, 2])
def test_the_restoring_psql_runs_as_the_clusters_os_user(running_project: Project, workdir: Path, jobs: int) -> None:
    load_sample_data(running_project, rows=200)
    log_folder = workdir / "psql-log"
    log_folder.mkdir()
    log_folder.chmod(0o777)  # written by psql as whichever user it runs as
    log = log_folder / "uids"
    bin_dir = fake_bin_dir(workdir, "psql", f'echo "$(id -u) $*" >> {log}\nexec "$REAL" "$@"\n')
    config = running_project.config
    config.write_text(config.read_text().replace("[postgres]\n", f'[postgres]\nbin_dir = "{bin_dir}"\n', 1)
                      .replace("[backup]\n", f"[backup]\njobs = {jobs}\n", 1))
    running_project.ok("backup")
    result = running_project.ok("restore", "latest", "--clean", "--yes")
    restoring = [line.split(" ", 1)[0] for line in log.read_text().splitlines() if "--file -" in line]
    postgres_uid = str(pwd.getpwnam("postgres").pw_uid)
    assert restoring, "no restoring psql was started through the wrapper"
    assert set(restoring) == {postgres_uid}, f"restoring psql ran as uids {restoring}"
    assert "psql runs as OS user postgres" in result.stdout
