"""pgdr recover and pgdr drill, driven through the CLI against real PostgreSQL servers.

recover: the whole runbook (up -> restore -> secrets -> init -> verify) as one command, safe to re-run.
drill: the same recovery into a scratch cluster that never touches the live one, recorded in a history file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import (
    assert_users_log_in,
    backup_path,
    fails,
    keys,
    manifest_path,
    recorded,
    server_state,
    tree_snapshot,
)
from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD, count_orders, load_sample_data
from moto_fixtures import S3_PREFIX, aws_project, object_keys

STEPS = ["up", "restore", "secrets", "init", "verify"]
RTO_LINE = re.compile(r"^✅ Recovered \S+: RTO \d+\.\d+s \(up \d+\.\d+s, restore \d+\.\d+s, secrets \d+\.\d+s, "
                      r"init \d+\.\d+s, verify \d+\.\d+s\)$", re.MULTILINE)
DRILL_LINE = re.compile(r"scratch cluster on port (\d+) \((\S+)\)")
SECRETS = {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD, "POSTGRES_DEMO_USER_PASSWORD": USER_PASSWORD,
           "POSTGRES_DEMO_READONLY_PASSWORD": READONLY_PASSWORD}


@pytest.fixture
def live(running_project):
    """The running, provisioned project; after the test, no command may have shown a password."""
    project = recorded(running_project)
    yield project
    project.assert_no_password_in_output()


def state_dir(project) -> Path:
    return project.root / ".pgdr"


def data_fingerprint(project) -> dict[str, object]:
    """What a drill must not change: row counts, an md5 over every row, and when the live server started."""
    with project.connect("demo") as connection:
        checksum = connection.execute(
            "SELECT md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o").fetchone()[0]
    with project.connect() as connection:
        started, system_id = connection.execute(
            "SELECT pg_postmaster_start_time(), system_identifier FROM pg_control_system()").fetchone()
    return {"state": server_state(project), "orders_md5": checksum, "postmaster_started": started,
            "system_identifier": system_id}


def private_tmp(workdir: Path) -> tuple[Path, dict[str, str]]:
    """A temp dir of the test's own for the drill's scratch folder (TMPDIR), so leftovers can be checked exactly:
    other people's drills running at the same time come and go in the shared /tmp."""
    folder = workdir / "tmp"
    folder.mkdir()
    folder.chmod(0o755)
    return folder, {"TMPDIR": str(folder)}


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def history(project) -> list[dict[str, object]]:
    return json.loads(project.ok("drill", "--history", "--json").stdout)


def remove_secret(dotenv: Path, name: str) -> str:
    """Drop one line from the 0600 .env and return it, so the test can put it back."""
    lines = dotenv.read_text().splitlines(keepends=True)
    [removed] = [line for line in lines if line.startswith(f"{name}=")]
    write_private(dotenv, "".join(line for line in lines if line != removed))
    return removed


def write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate_to_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# recover ---------------------------------------------------------------------------------------------------------

def test_recover_after_hard_clean_from_local_brings_data_back_verified_with_summary_and_rto(live):
    load_sample_data(live, 1500)
    live.ok("backup")
    before = server_state(live)
    live.ok("clean", "hard", "--yes")
    assert not (state_dir(live) / "pgdata").exists()

    result = live.ok("recover", "--yes")

    assert count_orders(live) == 1500
    assert server_state(live) == before
    assert_users_log_in(live)
    out = result.stdout
    assert "row counts match backup" in out  # verify ran and passed
    for line in ("✅ Database restored successfully", "✅ User passwords reset", "✅ Application can connect"):
        assert line in out, f"summary line {line!r} missing:\n{out}"
    assert RTO_LINE.search(out), f"no RTO line with per-step seconds:\n{out}"
    assert out.index("Database restored") < out.index("User passwords reset") < out.index("Application can connect")


def test_recover_json_reports_every_step_and_the_rto(live):
    load_sample_data(live, 300)
    live.ok("backup")
    [key] = keys(live)
    live.ok("clean", "hard", "--yes")

    result = live.ok("recover", "--yes", "--json")

    report = json.loads(result.stdout)
    assert report["kind"] == "recover"
    assert report["outcome"] == "ok"
    assert report["key"] == key
    assert list(report["steps"]) == STEPS
    assert all(seconds >= 0 for seconds in report["steps"].values())
    assert report["rto_seconds"] == pytest.approx(sum(report["steps"].values()), abs=0.01)
    assert report["rto_seconds"] > 0
    assert "Application can connect" in result.stderr  # human lines go to stderr with --json
    assert count_orders(live) == 300


def test_recover_refuses_a_non_empty_cluster_without_clean_and_changes_nothing(live):
    load_sample_data(live, 400)
    live.ok("backup")
    with live.connect("demo") as connection:
        connection.execute("DELETE FROM orders WHERE id > 100")  # live data differs from the backup
    before = data_fingerprint(live)
    backups_before = tree_snapshot(live.backups)

    result = fails(live, "recover", "--yes", code=3)

    assert "refusing to restore over live data" in result.stderr
    assert "pgdr recover --yes --clean" in result.stderr
    assert data_fingerprint(live) == before
    assert count_orders(live) == 100
    assert tree_snapshot(live.backups) == backups_before  # not even a safety backup
    assert not (state_dir(live) / "last-restore.json").exists()


def test_recover_rerun_after_a_failure_between_restore_and_init_does_not_restore_twice(live):
    load_sample_data(live, 800)
    live.ok("backup")
    [key] = keys(live)
    live.ok("clean", "hard", "--yes")
    dotenv = live.root / ".env"
    removed = remove_secret(dotenv, "POSTGRES_DEMO_USER_PASSWORD")

    first = fails(live, "recover", "--yes", code=6)

    assert "Database restored successfully" in first.stdout  # the restore completed ...
    assert "User passwords reset" not in first.stdout  # ... and init never ran
    assert "POSTGRES_DEMO_USER_PASSWORD" in first.stderr
    assert count_orders(live) == 800
    record = json.loads((state_dir(live) / "last-restore.json").read_text())
    assert (record["key"], record["status"]) == (key, "complete")
    with live.connect("demo") as connection:  # written after the first restore: a second restore would lose it
        connection.execute("CREATE TABLE written_after_restore AS SELECT g AS id FROM generate_series(1, 7) g")

    write_private(dotenv, dotenv.read_text() + removed)
    second = live.ok("recover", "--yes", "--json")

    assert f"{key} was already restored here: not restoring it twice" in second.stderr
    assert "Database restored successfully" not in second.stderr
    report = json.loads(second.stdout)
    assert report["outcome"] == "ok"
    assert report["skipped"] == ["restore"]
    assert list(report["steps"]) == ["up", "secrets", "init", "verify"]
    assert "Application can connect" in second.stderr
    with live.connect("demo") as connection:
        assert connection.execute("SELECT count(*) FROM written_after_restore").fetchone()[0] == 7
    assert count_orders(live) == 800
    assert_users_log_in(live)


def test_recover_restores_again_when_the_restored_cluster_was_lost_outside_pgdr(live):
    load_sample_data(live, 600)
    live.ok("backup")
    live.ok("clean", "hard", "--yes")
    live.ok("recover", "--yes")
    live.ok("down")
    shutil.rmtree(state_dir(live) / "pgdata")  # the disk is gone; pgdr's record of the last restore survived

    result = live.ok("recover", "--yes")

    assert "Database restored successfully" in result.stdout
    assert "already restored" not in result.stdout
    assert count_orders(live) == 600
    assert "Application can connect" in result.stdout


@pytest.mark.s3
def test_recover_from_s3_takes_a_machine_with_only_the_config_to_a_verified_cluster(project, moto_server, s3_bucket,
                                                                                     ssm_path):
    live = recorded(aws_project(project, moto_server, s3_bucket, ssm_path))
    for name, value in SECRETS.items():
        live.ok("secrets", "push", name, input_text=value + "\n")
    (live.root / ".env").unlink()  # the passwords live in Parameter Store only
    live.ok("up")
    live.ok("init")
    load_sample_data(live, 1200)
    live.ok("backup")
    [key] = keys(live, "--from", "s3")
    before = server_state(live)
    live.ok("clean", "hard", "--yes")
    shutil.rmtree(state_dir(live))  # the server, its disk, pgdr's state and any local copy are gone
    assert sorted(path.name for path in live.root.iterdir()) == ["pgdr.toml"]

    result = live.ok("recover", "--from", "s3", "--yes")

    assert key in result.stdout
    for line in ("✅ Database restored successfully", "✅ User passwords reset", "✅ Application can connect"):
        assert line in result.stdout
    assert RTO_LINE.search(result.stdout)
    assert count_orders(live) == 1200
    assert server_state(live) == before
    assert_users_log_in(live)

    drilled = json.loads(live.ok("drill", "--from", "s3", "--json").stdout)
    assert (drilled["outcome"], drilled["key"], drilled["source"]) == ("ok", key, "s3")
    assert S3_PREFIX + "drill-history.jsonl" in object_keys(moto_server, s3_bucket)  # history beside the backups
    [entry] = json.loads(live.ok("drill", "--history", "--from", "s3", "--json").stdout)
    assert (entry["key"], entry["outcome"]) == (key, "ok")
    live.assert_no_password_in_output()


# drill -----------------------------------------------------------------------------------------------------------

def test_drill_leaves_the_live_cluster_data_and_port_untouched_and_writes_its_history(live):
    load_sample_data(live, 2000)
    live.ok("backup")
    [key] = keys(live)
    before = data_fingerprint(live)
    backups_before = tree_snapshot(live.backups)

    result = live.ok("drill", "--json")

    port, folder = DRILL_LINE.search(result.stderr).groups()
    assert int(port) != live.port
    assert Path(folder).parent == Path(tempfile.gettempdir())  # /tmp/pgdr-drill-*
    assert Path(folder).name.startswith("pgdr-drill-")
    assert not Path(folder).exists(), "the scratch folder was left behind in /tmp"
    assert not listening(int(port)), "the scratch cluster is still running"
    assert listening(live.port)
    assert data_fingerprint(live) == before  # same rows, same server process (never restarted), same cluster
    assert not (state_dir(live) / "last-restore.json").exists()  # the live state dir was not used
    backups_after = tree_snapshot(live.backups)
    assert set(backups_after) - set(backups_before) == {"drill-history.jsonl"}
    assert {name: backups_after[name] for name in backups_before} == backups_before

    report = json.loads(result.stdout)
    assert (report["kind"], report["outcome"], report["key"]) == ("drill", "ok", key)
    assert "row counts match backup" in result.stderr  # verified against the manifest
    [entry] = history(live)
    assert entry["key"] == key
    assert entry["outcome"] == "ok"
    assert list(entry["steps"]) == STEPS
    assert entry["rto_seconds"] == report["rto_seconds"] > 0
    assert entry["started_at"]
    table = live.ok("drill", "--history").stdout
    assert key in table and "ok" in table


@pytest.mark.parametrize(("damage", "expected"), [
    (flip_one_bit, "corrupt"),
    (truncate_to_half, "truncated"),
])
def test_drill_against_a_damaged_backup_fails_clearly_and_is_recorded_as_failed(live, workdir, damage, expected):
    load_sample_data(live, 2000)
    live.ok("backup")
    [key] = keys(live)
    damage(backup_path(live, key))
    before = data_fingerprint(live)
    tmp, environment = private_tmp(workdir)

    result = fails(live, "drill", code=9, env=environment)

    assert key in result.stderr
    assert expected in result.stderr, result.stderr
    port, folder = DRILL_LINE.search(result.stdout).groups()
    assert Path(folder).parent == tmp
    assert list(tmp.iterdir()) == [], "the failed drill left its scratch folder behind"
    assert not listening(int(port)), "the failed drill left its scratch cluster running"
    assert data_fingerprint(live) == before
    [entry] = history(live)
    assert (entry["key"], entry["outcome"]) == (key, "failed")
    assert key in entry["error"]
    assert "verify" not in entry["steps"]
    assert "failed" in live.ok("drill", "--history").stdout


def test_drill_against_a_truncated_backup_without_manifest_fails_on_the_stream_itself(live):
    load_sample_data(live, 2000)
    live.ok("backup")
    [key] = keys(live)
    manifest_path(live, key).unlink()  # as the old shell pipeline left them: no size or checksum to compare
    truncate_to_half(backup_path(live, key))

    result = fails(live, "drill", code=9)

    assert key in result.stderr
    assert re.search(r"does not decompress|incomplete", result.stderr), result.stderr
    [entry] = history(live)
    assert entry["outcome"] == "failed"


def test_drill_over_the_rto_objective_exits_14_and_is_recorded_as_rto_exceeded(live, workdir):
    load_sample_data(live, 200)
    live.ok("backup")
    [key] = keys(live)
    tmp, environment = private_tmp(workdir)

    result = fails(live, "drill", code=14, env={**environment, "PGDR_RECOVERY__RTO_OBJECTIVE": "0s"})

    assert list(tmp.iterdir()) == [], "the scratch cluster was not removed"

    assert "over the RTO objective of 0s" in result.stderr
    assert "Application can connect" in result.stdout  # the recovery itself worked
    [entry] = history(live)
    assert (entry["key"], entry["outcome"]) == (key, "rto_exceeded")
    assert list(entry["steps"]) == STEPS
    assert entry["rto_seconds"] > 0
