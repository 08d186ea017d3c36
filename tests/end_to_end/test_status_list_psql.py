"""Looking at the state: `list --json` flags suspicious backups, `status --json` reports the server and the
newest backup, commands against a stopped server say `pgdr up`, and `pgdr psql` passes its arguments through.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from end_to_end.e2e_helpers import fails, keys, list_json, tree_snapshot
from harness import load_sample_data


def test_list_json_flags_backups_under_min_size_and_under_half_the_previous(live):
    load_sample_data(live, 3000)
    live.ok("backup")
    with live.connect("demo") as connection:
        connection.execute("TRUNCATE orders")
    time.sleep(1.1)  # keys have one-second resolution
    live.ok("backup")

    big, small = list_json(live)
    assert big["size"] > 2 * small["size"]
    assert big["flags"] == []  # above min_size (1kB in the test config), nothing before it
    assert any("under half the previous" in flag for flag in small["flags"]), small["flags"]
    assert not any("min_size" in flag for flag in small["flags"]), small["flags"]
    for record in (big, small):
        assert record["verified"] is True
        assert len(str(record["sha256"])) == 64
        assert str(record["created"]).endswith("+00:00")

    strict = list_json(live, env={"PGDR_BACKUP__MIN_SIZE": "10MB"})
    for record in strict:
        assert any("smaller than min_size" in flag for flag in record["flags"]), record["flags"]
    assert "under half the previous" in live.ok("list").stdout


def test_status_json_shows_the_server_its_databases_and_the_newest_backup(live):
    load_sample_data(live, 100)
    live.ok("backup")
    [key] = keys(live)
    report = json.loads(live.ok("status", "--json").stdout)
    assert report["reachable"] is True
    assert "PostgreSQL" in report["version"]
    sizes = {database["name"]: database["size"] for database in report["databases"]}
    assert "demo" in sizes and "postgres" in sizes
    assert all(isinstance(size, int) and size > 0 for size in sizes.values())
    after_status = live.root / "after-status"
    after_status.touch()  # its mtime: a moment after status measured the age
    newest = report["newest_backup"]
    assert newest["key"] == key
    assert newest["verified"] is True
    # status measured the age at created + age (rounded to the second): after the backup ended, before we looked
    measured_at = datetime.fromisoformat(newest["created"]).timestamp() + newest["age_seconds"]
    manifest = json.loads((live.backups / (key + ".manifest.json")).read_text())
    assert datetime.fromisoformat(manifest["finished_at"]).timestamp() - 0.5 <= measured_at
    assert measured_at <= after_status.stat().st_mtime + 1.0


def test_status_of_a_stopped_server_exits_4_and_still_shows_the_newest_backup(live):
    live.ok("backup")
    [key] = keys(live)
    live.ok("down")
    result = live.pgdr("status", "--json")
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert report["reachable"] is False
    assert "pgdr up" in report["problem"]
    assert report["newest_backup"]["key"] == key
    human = live.pgdr("status")
    assert human.returncode == 4
    assert "not reachable" in human.stderr and "pgdr up" in human.stderr


STOPPED_SERVER_COMMANDS = [("backup",), ("init",), ("verify",), ("clean", "soft", "--yes"),
                           ("restore", "latest", "--clean", "--yes"), ("psql", "-c", "select 1")]


def test_commands_against_a_stopped_server_exit_4_say_pgdr_up_and_write_nothing(live):
    live.ok("backup")
    before = tree_snapshot(live.root / ".pgdr" / "backups")
    live.ok("down")
    for command in STOPPED_SERVER_COMMANDS:
        result = fails(live, *command, code=4)
        assert "pgdr up" in result.stderr, command
    assert tree_snapshot(live.root / ".pgdr" / "backups") == before


def test_psql_passes_arguments_through_and_exits_with_psqls_status(live, workdir):
    result = live.ok("psql", "-X", "-At", "-c", "select 40 + 2", "-c", "select current_user")
    assert result.stdout.split() == ["42", "postgres"]

    failed = live.pgdr("psql", "-X", "-c", "select * from no_such_table")
    assert failed.returncode == 1
    assert "no_such_table" in failed.stderr

    script = workdir / "fails.sql"
    script.write_text("select 1;\nselect 1/0;\nselect 2;\n")
    script.chmod(0o644)
    stopped = live.pgdr("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script))
    assert stopped.returncode == 3  # psql: "an error occurred in a script and ON_ERROR_STOP was set"
    assert "division by zero" in stopped.stderr

    on_demo = live.ok("psql", "-X", "-At", "-d", "demo", "-c", "select current_database()")
    assert on_demo.stdout.strip() == "demo"
