"""`backup.format = "physical"` against a real cluster, judged by PostgreSQL's own tools: GNU tar reads the stored
tar, pg_verifybackup accepts what it extracts, and the manifest's WAL position is the one backup_label and
backup_manifest hold. A pg_basebackup that dies midway leaves nothing a recovery could pick up, and
`pgdr restore` refuses a base backup with the command that recovers it."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import fake_bin_dir, real_bin_dir, server_major
from harness import Project

PHYSICAL = {"PGDR_BACKUP__FORMAT": "physical"}


def only_backup(project: Project) -> Path:
    found = [path for path in project.backups.rglob("*.base.tar*")
             if not path.name.endswith((".manifest.json", ".backup_manifest"))]
    assert len(found) == 1, found
    return found[0]


def test_a_base_backup_is_what_postgresql_tools_read_and_its_manifest_says_where_it_sits(running_project, workdir):
    project = running_project
    result = project.ok("backup", env=PHYSICAL)
    assert "Backup " in result.stdout
    stored = only_backup(project)
    manifest = json.loads(Path(str(stored) + ".manifest.json").read_text())
    assert manifest["format"] == "physical" and manifest["size"] == stored.stat().st_size
    facts = manifest["physical"]

    extracted = workdir / "extracted"
    extracted.mkdir(mode=0o700)
    subprocess.run(["tar", "-xzf", str(stored), "-C", str(extracted)], check=True)  # GNU tar: the reference reader
    label = (extracted / "backup_label").read_text()
    assert f"START WAL LOCATION: {facts['start_lsn']} " in label
    assert f"START TIMELINE: {facts['timeline']}\n" in label
    wal_ranges = json.loads((extracted / "backup_manifest").read_text())["WAL-Ranges"]
    assert wal_ranges[-1]["End-LSN"] == facts["stop_lsn"]
    kept_copy = gzip.decompress(Path(str(stored) + ".backup_manifest").read_bytes())  # for the next incremental
    assert kept_copy == (extracted / "backup_manifest").read_bytes()
    assert facts["backup_manifest_sha256"] == hashlib.sha256(kept_copy).hexdigest()
    verified = subprocess.run([str(real_bin_dir() / "pg_verifybackup"), str(extracted)], capture_output=True,
                              text=True)
    assert verified.returncode == 0, verified.stderr
    with project.connect() as connection:
        identifier = connection.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    assert facts["system_identifier"] == identifier and facts["wal_included"] is True
    assert facts["start_time"] <= facts["stop_time"] <= manifest["finished_at"]


def test_incremental_on_a_server_older_than_17_takes_a_full_base_backup_and_says_why(running_project):
    project = running_project
    major = server_major(project)
    if major >= 17:
        pytest.skip(f"the system's PostgreSQL is {major}: this test needs one older than 17")
    result = project.ok("backup", env={**PHYSICAL, "PGDR_BACKUP__INCREMENTAL": "true"})
    assert f"backup.incremental needs PostgreSQL 17 or newer (the server is {major}): taking a full base backup" \
        in result.stdout + result.stderr
    manifest = json.loads(Path(str(only_backup(project)) + ".manifest.json").read_text())
    assert manifest["physical"]["incremental_of"] is None


def test_restore_refuses_a_base_backup_and_names_the_recovery(running_project):
    project = running_project
    project.ok("backup", env=PHYSICAL)
    with project.connect("demo") as connection:
        connection.execute("CREATE TABLE kept (id int)")
    result = project.pgdr("restore", "latest", "--clean", "--yes", env=PHYSICAL)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "pgdr recover" in result.stderr
    with project.connect("demo") as connection:
        assert connection.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone()[0]


def test_a_base_backup_cut_off_midway_leaves_nothing_behind(running_project, workdir):
    project = running_project
    dies = 'exec "$REAL" "$@" | head -c 3000000\nexit 1\n'  # a part of the real tar, then a failure
    bin_dir = fake_bin_dir(workdir, "pg_basebackup", dies)
    result = project.pgdr("backup", env={**PHYSICAL, "PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert result.returncode == 7, result.stdout + result.stderr
    assert "pg_basebackup" in result.stderr
    assert not [path for path in project.backups.rglob("*") if path.is_file() and "wal" not in path.parts]


def test_a_stored_tar_is_the_data_directory_pg_basebackup_sent(running_project):
    """Every member GNU tar lists is in the base backup's own manifest: the stream was stored whole, in order."""
    project = running_project
    project.ok("backup", env=PHYSICAL)
    with tarfile.open(only_backup(project), "r:gz") as archive:
        names = {member.name for member in archive.getmembers() if member.isreg()}
        manifest = json.loads(archive.extractfile("backup_manifest").read())  # type: ignore[union-attr]
    listed = {entry["Path"] for entry in manifest["Files"]}
    assert listed <= names and "PG_VERSION" in names
    assert gzip.decompress(only_backup(project).read_bytes())[-1024:] == bytes(1024)  # the end-of-archive blocks
    assert re.fullmatch(r"\d{8}/postgres-all-\d{8}-\d{6}\.base\.tar\.gz", str(only_backup(project).relative_to(
        project.backups)))
