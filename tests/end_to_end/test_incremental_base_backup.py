"""Incremental base backups on PostgreSQL 18 (the wheel's): a chain of a full base backup and two incrementals
taken while `pgdr wal stream` runs, then `pgdr recover --to T` from the newest incremental, combined by
pg_combinebackup; the marker table says row by row whether the recovered cluster holds exactly what was
committed before T. A chain with a link gone is no starting point: the recovery falls back to the full one.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from end_to_end.e2e_helpers import newer_binaries, start_over_on
from end_to_end.test_point_in_time import (
    STREAM_ENVIRONMENT,
    History,
    between,
    commit_markers,
    markers,
    recover,
    start_streamer,
    stop_streamer,
)
from harness import Project

INCREMENTAL = {**STREAM_ENVIRONMENT, "PGDR_BACKUP__INCREMENTAL": "true"}


def manifests(project: Project) -> list[dict]:
    """The pgdr manifests of the base backups, oldest first."""
    return [json.loads(path.read_text()) for path in sorted(project.backups.rglob("*.base.tar*.manifest.json"))]


def forget_the_kept_copy(project: Project) -> None:
    """The backup_manifest this host kept of its newest base backup: without it, the copy in storage is read."""
    kept = list(project.root.rglob("newest_backup_manifest*"))
    assert kept, "the host keeps the backup_manifest of the newest base backup it took"
    for path in kept:
        assert path.stat().st_mode & 0o077 == 0
        path.unlink()


def backup(project: Project, environment: dict[str, str]) -> str:
    result = project.ok("backup", env=environment)
    return result.stdout + result.stderr


def test_a_chain_of_incrementals_recovers_to_a_point_and_a_broken_chain_falls_back_to_the_full_one(running_project):
    project, history = running_project, History()
    environment = {**INCREMENTAL, **newer_binaries()}
    start_over_on(project, environment)
    streamer = start_streamer(project, environment)
    try:
        backup(project, environment)
        commit_markers(project, range(1, 3), history)
        forget_the_kept_copy(project)  # read from storage, checked against the digest
        assert "incremental against" in backup(project, environment)
        commit_markers(project, range(3, 5), history)
        assert "incremental against" in backup(project, environment)  # this host's own copy
        commit_markers(project, range(5, 7), history)
        forget_the_kept_copy(project)
        stored_copy = next(project.backups.rglob(manifests(project)[-1]["key"].split("/")[1] + ".backup_manifest"))
        with gzip.open(stored_copy, "wb") as forged:
            forged.write(b'{ "PostgreSQL-Backup-Manifest-Version": 2, "Files": [] }')
        assert "does not match the digest its manifest recorded (altered or damaged): taking a full base backup" \
            in backup(project, environment)
        with project.connect() as connection:
            connection.execute("ALTER SYSTEM SET summarize_wal = off")
            connection.execute("SELECT pg_reload_conf()")
        assert "summarize_wal is off: taking a full base backup" in backup(project, environment)
    finally:
        stop_streamer(streamer)

    full, first, second, after_forgery, unsummarized = manifests(project)
    assert full["physical"]["incremental_of"] is None
    assert first["physical"]["incremental_of"] == full["key"]
    assert second["physical"]["incremental_of"] == first["key"]
    assert after_forgery["physical"]["incremental_of"] is None
    assert unsummarized["physical"]["incremental_of"] is None
    listed = {item["key"]: item for item in json.loads(project.ok("list", "--json", env=environment).stdout)}
    assert listed[second["key"]]["flags"] == [], "an incremental is small by design, not suspicious"

    result = recover(project, "--to", between(history, 5), "--clean", env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from base backup {second['key']}, an incremental on 2 more" in result.stdout
    assert "Combining the 3 base backups of the chain" in result.stdout
    assert markers(project) == [1, 2, 3, 4, 5]

    for path in project.backups.rglob(Path(first["key"]).name + "*"):
        path.unlink()
    result = recover(project, "--to", between(history, 5), "--clean", env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from base backup {full['key']} (" in result.stdout
    assert "Combining" not in result.stdout
    assert markers(project) == [1, 2, 3, 4, 5]
    project.ok("down", env=environment)
