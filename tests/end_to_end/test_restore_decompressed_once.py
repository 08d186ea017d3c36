"""A parallel restore of a many-database plain backup reads the backup once, not once per database.

The backup ends a compressed member at each database; each restore session reads and decompresses its own part
alone. How much of the backup a restore read is counted by the kernel: the pgdr process's `rchar` (bytes its
threads got from read calls, /proc/self/io) is recorded as it exits, by a sitecustomize that only observes. The
baseline is the same restore in one stream (jobs = 1), which reads the file twice (checksum, then restore): the
parallel restore may read no more than that, while each session decompressing from the start (what a manifest of an
older pgdr gets) reads it about databases/2 more times, which the same count shows. Every restore must give back
the source cluster, compared as pg_dumpall scripts.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from harness import Project
from security.security_helpers import assert_same_dump, pg_dumpall

DATABASES = 20
ROWS = 15000  # ~1.1 MB of SQL per database, ~0.6 MB stored: the backup dwarfs what else the process reads


@pytest.fixture
def many_databases(running_project: Project) -> Project:
    with running_project.connect() as connection:
        for number in range(DATABASES):
            connection.execute(f'CREATE DATABASE "db{number:02d}"')
    for number in range(DATABASES):
        with running_project.connect(f"db{number:02d}") as connection:
            connection.execute(f"CREATE TABLE t AS SELECT g AS a, md5(g::text || '{number}') AS b "
                               f"FROM generate_series(1, {ROWS + number * 100}) g")
    return running_project


def io_observer(folder: Path, project: Project) -> dict[str, str]:
    """PYTHONPATH holding a sitecustomize that appends the process's rchar to a log when it exits, before the
    project's own PYTHONPATH (which the mutation pass points at its copy of pgdr: replacing it would test the
    unmutated code)."""
    folder.mkdir()
    log = folder / "rchar.log"
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import atexit

        def _record():
            fields = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
            with open({str(log)!r}, "a") as handle:
                handle.write(fields["rchar"] + "\\n")

        atexit.register(_record)
        """))
    python_path = os.pathsep.join(filter(None, [str(folder), project.environment.get("PYTHONPATH")]))
    return {"PYTHONPATH": python_path, "PGDR_TEST_RCHAR_LOG": str(log)}


def restored_reading(project: Project, observer: dict[str, str], jobs: int) -> tuple[int, str]:
    """Restore the newest backup into a new cluster with `jobs` sessions: (bytes pgdr read, its output)."""
    project.ok("clean", "hard", "--yes")
    project.ok("up")
    log = Path(observer["PGDR_TEST_RCHAR_LOG"])
    log.unlink(missing_ok=True)
    result = project.ok("restore", "latest", env={**observer, "PGDR_BACKUP__JOBS": str(jobs)})
    [rchar] = log.read_text().split()
    return int(rchar), result.stdout + result.stderr


def backup_and_its_manifest(project) -> tuple[Path, Path, dict]:
    project.ok("backup")
    [stored] = [path for path in project.backups.rglob("*.sql.gz")]
    manifest_path = stored.with_name(stored.name + ".manifest.json")
    return stored, manifest_path, json.loads(manifest_path.read_text())


def test_a_parallel_restore_reads_the_backup_once_and_gives_back_the_cluster(many_databases, workdir):
    project = many_databases
    source = pg_dumpall(project)
    stored, manifest_path, manifest = backup_and_its_manifest(project)
    assert len(manifest["sections"]) == DATABASES + 3  # template1, demo, postgres and ours
    assert all(section["compressed_offset"] for section in manifest["sections"])
    size = stored.stat().st_size
    observer = io_observer(workdir / "observer", project)

    one_stream, _ = restored_reading(project, observer, jobs=1)
    assert_same_dump(source, pg_dumpall(project), "the cluster restored in one stream")

    parallel, output = restored_reading(project, observer, jobs=3)
    assert f"{DATABASES + 3} databases, 3 at a time" in output
    assert_same_dump(source, pg_dumpall(project), "the cluster restored by 3 sessions")
    assert parallel <= one_stream + size // 2, (
        f"3 sessions read {parallel} bytes, one stream {one_stream}: the {size}-byte backup was read more than once")

    # the same backup as an older pgdr's manifest describes it: each session decompresses from the start
    for section in manifest["sections"]:
        del section["compressed_offset"]
    manifest_path.write_text(json.dumps(manifest))
    from_the_start, output = restored_reading(project, observer, jobs=3)
    assert "decompresses the backup from its start" in output
    assert_same_dump(source, pg_dumpall(project), "the cluster restored from an older manifest")
    assert from_the_start > one_stream + 5 * size, "the count would not see a backup read once per database"


def test_offsets_that_do_not_match_the_file_are_said_and_the_restore_reads_from_the_start(many_databases, workdir):
    """A manifest whose compressed offsets point elsewhere (valid JSON, checksum of the file intact): found before
    the first psql starts, said, and the restore still gives back the cluster the slow way."""
    project = many_databases
    source = pg_dumpall(project)
    _, manifest_path, manifest = backup_and_its_manifest(project)
    manifest["sections"][5]["compressed_offset"] += 7
    manifest_path.write_text(json.dumps(manifest))
    _, output = restored_reading(project, io_observer(workdir / "observer", project), jobs=3)
    assert "the file does not match; each session decompresses the backup from its start" in output
    assert_same_dump(source, pg_dumpall(project), "the cluster restored with wrong offsets in the manifest")
