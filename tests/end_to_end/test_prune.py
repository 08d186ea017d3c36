"""pgdr prune: GFS retention applied to a real backup folder and to moto's S3 server, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from end_to_end.e2e_helpers import fails, keys
from end_to_end.ops_helpers import fabricate, local_keys, only_backup, rekeyed_manifest, set_config
from faults.fault_helpers import held_input_bin_dir, mark_file
from harness import Project
from moto_fixtures import S3_PREFIX, aws_project, object_keys
from pgdr.artifact import MANIFEST_SUFFIX, make_key
from pgdr.drill_lock import marker_key
from sync_helpers import poll_until

RETENTION = """
[retention]
enabled = true
keep_last = 2
keep_daily = 3
keep_weekly = 2
keep_monthly = 3
keep_safety = 1
"""


def at(month: int, day: int, hour: int = 2) -> datetime:
    return datetime(2025, month, day, hour, 0, tzinfo=UTC)


def with_manifests(*backup_keys: str) -> set[str]:
    return {name for key in backup_keys for name in (key, key + MANIFEST_SUFFIX)}


def test_prune_keeps_the_gfs_set_and_deletes_the_rest_with_reasons(running_project: Project):
    project = running_project
    project.ok("backup")
    newest = only_backup(project)
    a, b, c = fabricate(project, newest, at(3, 10)), fabricate(project, newest, at(4, 20)), \
        fabricate(project, newest, at(4, 30))
    d, e, g = fabricate(project, newest, at(5, 5)), fabricate(project, newest, at(5, 6)), \
        fabricate(project, newest, at(5, 7))
    f = fabricate(project, newest, at(5, 6, 14), verified=False)  # newer than e on its day, but unverified
    s1 = fabricate(project, newest, at(5, 1), safety=True)
    s2 = fabricate(project, newest, at(5, 2), safety=True)
    (project.backups / marker_key(b)).write_text('{"host": "elsewhere", "pid": 1}\n')  # a drill reads b
    orphan = make_key(at(2, 1), "gzip").key + MANIFEST_SUFFIX  # left by a prune that stopped half-way
    (project.backups / orphan).parent.mkdir(parents=True)
    (project.backups / orphan).write_bytes(b"{}")
    before = local_keys(project)

    refused = fails(project, "prune", "--yes", code=2)
    assert "retention is not enabled" in refused.stderr
    set_config(project, RETENTION)

    dry = project.ok("prune", "--dry-run")
    assert local_keys(project) == before
    assert "keep 6, would delete 4" in dry.stdout
    assert f"would delete {f}" in dry.stdout and "not among the last 2, nor the newest of the last 3 days" in dry.stdout
    assert f"keep    {b}  (a drill is reading it)" in dry.stdout
    assert f"keep    {e}  (daily 2025-05-06)" in dry.stdout
    assert f"keep    {c}  (monthly 2025-04)" in dry.stdout
    assert f"would delete {s1}" in dry.stdout and "safety backup older than the newest 1" in dry.stdout
    assert f"{orphan}  (manifest without its backup)" in dry.stdout

    refused = fails(project, "prune", code=3)  # no terminal, no --yes
    assert "--yes" in refused.stderr
    assert local_keys(project) == before

    pruned = project.ok("prune", "--yes")
    assert "Pruned local: deleted 4 backups" in pruned.stdout
    assert local_keys(project) == with_manifests(newest, g, e, c, b, s2) | {marker_key(b)}
    assert not (project.backups / "20250310").exists(), "an emptied day folder is removed"
    assert not (project.backups / "20250201").exists()
    assert keys(project) == [b, c, e, g, newest]
    assert {a, d, f, s1}.isdisjoint(local_keys(project))

    again = project.ok("prune", "--yes", "--json")
    assert json.loads(again.stdout)[0]["deleted"] == []
    assert local_keys(project) == with_manifests(newest, g, e, c, b, s2) | {marker_key(b)}


def test_prune_runs_after_each_backup_but_not_after_a_safety_backup(running_project: Project):
    project = running_project
    set_config(project, "[retention]\nenabled = true\nprune_after_backup = true\nkeep_last = 1\n"
                        "keep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n")
    project.ok("backup")
    first = only_backup(project)
    old = [fabricate(project, first, at(1, day)) for day in (1, 2)]

    project.ok("restore", "latest", "--clean", "--yes")  # takes a safety backup first: no prune after it
    assert set(old) <= set(keys(project))
    safety = [key for key in keys(project, "--safety") if key.startswith("safety/")]
    assert len(safety) == 1

    result = project.ok("backup")
    assert "Pruned local: deleted 3 backups" in result.stdout
    latest = keys(project)
    assert len(latest) == 1 and latest[0] != first
    assert [key for key in keys(project, "--safety") if key.startswith("safety/")] == safety


def test_prune_leaves_the_backup_a_running_drill_reads(running_project: Project):
    project = running_project
    set_config(project, "[retention]\nenabled = true\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\n"
                        "keep_monthly = 0\n")
    project.ok("backup")
    newest = only_backup(project)
    old = fabricate(project, newest, at(6, 1))
    # the drill's psql gets one byte, then nothing until the release: the drill is still reading while prune runs
    workdir = project.root.parent
    fed, release = mark_file(workdir, "drill-psql-fed"), mark_file(workdir, "drill-release")
    environment = {**project.environment, "PGDR_POSTGRES__BIN_DIR": str(held_input_bin_dir(workdir, "psql")),
                   "FAULT_MARK": str(fed), "FAULT_MARK_AFTER": "1", "FAULT_HOLD": str(release)}
    drill = subprocess.Popen([sys.executable, "-m", "pgdr", "drill", "--file", old], cwd=project.root,
                             env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        marker = project.backups / marker_key(old)
        poll_until(lambda: fed.exists() or drill.poll() is not None)
        assert drill.poll() is None, "the drill ended before its restore was held"
        assert marker.exists(), "the drill did not mark the backup it reads"
        pruned = project.ok("prune", "--yes")
        assert "a drill is reading it" in pruned.stdout
        assert old in keys(project)
    finally:
        release.touch()
        stdout, stderr = drill.communicate(timeout=240)
    assert drill.returncode == 0, stdout + stderr
    assert not marker.exists(), "the drill removes its marker when it ends"
    project.ok("prune", "--yes")
    assert keys(project) == [newest]


@pytest.mark.s3
def test_prune_in_s3(running_project: Project, moto_server, s3_bucket, ssm_path):
    project = aws_project(running_project, moto_server, s3_bucket, ssm_path, targets=("s3",))
    set_config(project, "[retention]\nenabled = true\nkeep_last = 9\nkeep_daily = 0\nkeep_weekly = 0\n"
                        "keep_monthly = 0\n\n[retention.s3]\nkeep_last = 1\n")  # the override is what applies
    project.ok("backup")
    client = moto_server.client("s3")
    (newest,) = [key[len(S3_PREFIX):] for key in object_keys(moto_server, s3_bucket) if key.endswith(".sql.gz")]
    manifest = client.get_object(Bucket=s3_bucket, Key=S3_PREFIX + newest + MANIFEST_SUFFIX)["Body"].read()

    def copy(created: datetime, verified: bool = True) -> str:
        key = make_key(created, "gzip").key
        client.copy_object(Bucket=s3_bucket, Key=S3_PREFIX + key, CopySource={"Bucket": s3_bucket,
                                                                              "Key": S3_PREFIX + newest})
        if verified:
            client.put_object(Bucket=s3_bucket, Key=S3_PREFIX + key + MANIFEST_SUFFIX,
                              Body=rekeyed_manifest(manifest, key))
        return key

    old, read_by_drill, unverified = copy(at(1, 1)), copy(at(2, 1)), copy(at(3, 1), verified=False)
    client.put_object(Bucket=s3_bucket, Key=S3_PREFIX + marker_key(read_by_drill), Body=b"{}")

    dry = project.ok("prune", "--from", "s3", "--dry-run")
    assert "keep 2, would delete 2" in dry.stdout

    project.ok("prune", "--from", "s3", "--yes")
    remaining = {key[len(S3_PREFIX):] for key in object_keys(moto_server, s3_bucket)}
    assert remaining == with_manifests(newest, read_by_drill) | {marker_key(read_by_drill)}
    assert {old, unverified}.isdisjoint(remaining)
    assert keys(project, "--from", "s3") == [read_by_drill, newest]
