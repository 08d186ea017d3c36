"""Restore never destroys without a net: damaged backups are refused (exit 9) before the server is touched,
--clean takes a safety backup first, a failing statement stops the restore and is reported, and destructive
commands ask on a terminal and refuse without one.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from end_to_end.e2e_helpers import (
    backup_path,
    decompress,
    fails,
    keys,
    list_json,
    manifest_path,
    run_in_terminal,
    server_state,
    tree_snapshot,
)
from harness import count_orders, load_sample_data


@pytest.fixture
def backed_up(live):
    """A project with one good backup of 400 rows, then live changes the backup does not hold."""
    load_sample_data(live, 400)
    live.ok("backup")
    with live.connect("demo") as connection:
        connection.execute("DELETE FROM orders WHERE id > 150")
        connection.execute("CREATE TABLE after_backup (id int)")
    return live


def flip_a_bit_in_the_middle(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate_to_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def wrong_manifest_sha256(path):
    manifest = json.loads(manifest_path_of(path).read_text())
    manifest["sha256"] = "0" * 64
    manifest_path_of(path).write_text(json.dumps(manifest))


def manifest_path_of(path):
    return path.with_name(path.name + ".manifest.json")


def assert_refused_before_the_server_is_touched(project, *args):
    before = server_state(project)
    record = project.root / ".pgdr" / "last-restore.json"
    record_before = record.read_bytes() if record.exists() else None
    result = fails(project, *args, code=9)
    assert server_state(project) == before, "the server changed although the backup was refused"
    assert not (project.backups / "safety").exists(), "a safety backup was taken for a refused restore"
    assert (record.read_bytes() if record.exists() else None) == record_before
    assert "Restoring" not in result.stdout
    return result


@pytest.mark.parametrize("damage", [flip_a_bit_in_the_middle, truncate_to_half, wrong_manifest_sha256])
def test_a_damaged_backup_with_a_manifest_is_refused_with_exit_9_before_the_server_is_touched(backed_up, damage):
    [key] = keys(backed_up)
    damage(backup_path(backed_up, key))
    result = assert_refused_before_the_server_is_touched(backed_up, "restore", "latest", "--clean", "--yes")
    assert key in result.stderr
    assert count_orders(backed_up) == 150


@pytest.mark.parametrize("damage", [flip_a_bit_in_the_middle, truncate_to_half])
def test_a_damaged_backup_without_a_manifest_is_refused_with_exit_9_before_the_server_is_touched(backed_up, damage):
    [key] = keys(backed_up)
    manifest_path(backed_up, key).unlink()
    damage(backup_path(backed_up, key))
    assert_refused_before_the_server_is_touched(backed_up, "restore", "file", key, "--clean", "--yes")
    assert count_orders(backed_up) == 150


def test_a_backup_from_a_newer_server_is_refused_up_front(backed_up):
    [key] = keys(backed_up)
    manifest = json.loads(manifest_path(backed_up, key).read_text())
    manifest["server_version"] = "PostgreSQL 99.1 on x86_64-pc-linux-gnu"
    manifest_path(backed_up, key).write_text(json.dumps(manifest))
    before = server_state(backed_up)
    result = fails(backed_up, "restore", "latest", "--clean", "--yes", code=3)
    assert "99" in result.stderr
    assert server_state(backed_up) == before
    assert not (backed_up.backups / "safety").exists()


def test_restore_clean_takes_a_safety_backup_that_holds_the_replaced_state(backed_up):
    backed_up.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(backed_up) == 400
    safety = [record for record in list_json(backed_up, "--safety") if str(record["key"]).startswith("safety/")]
    assert len(safety) == 1
    assert not [key for key in keys(backed_up) if key.startswith("safety/")], "list shows safety backups by default"

    backed_up.ok("restore", "file", str(safety[0]["key"]), "--clean", "--yes")
    assert count_orders(backed_up) == 150, "the safety backup does not hold the state it replaced"


def test_restore_into_a_server_with_data_and_without_clean_is_refused_and_changes_nothing(backed_up):
    before = server_state(backed_up)
    result = fails(backed_up, "restore", "latest", code=3)
    assert "--clean" in result.stderr
    assert server_state(backed_up) == before
    assert not (backed_up.backups / "safety").exists()


def test_restore_clean_without_yes_and_without_a_terminal_is_refused_and_changes_nothing(backed_up):
    before = server_state(backed_up)
    result = fails(backed_up, "restore", "latest", "--clean", code=3)
    assert "--yes" in result.stderr
    assert server_state(backed_up) == before
    assert not (backed_up.backups / "safety").exists()


@pytest.mark.parametrize("command", [("clean", "soft"), ("clean", "hard")])
def test_clean_without_yes_and_without_a_terminal_is_refused_and_changes_nothing(backed_up, command):
    before = server_state(backed_up)
    files_before = tree_snapshot(backed_up.root / ".pgdr" / "pgdata" / "global")
    result = fails(backed_up, *command, code=3)
    assert "--yes" in result.stderr
    assert server_state(backed_up) == before
    assert tree_snapshot(backed_up.root / ".pgdr" / "pgdata" / "global").keys() == files_before.keys()


def test_a_failing_statement_stops_the_restore_and_is_reported(backed_up):
    [key] = keys(backed_up)
    dump = decompress(backup_path(backed_up, key)).decode()
    line_end = re.search(r'^\\connect "?demo"?\n', dump, re.MULTILINE).end()
    broken = dump[:line_end] + "CREATE TABLE public.broken (id integer REFERENCES nowhere (id));\n" + dump[line_end:]
    created = datetime.now(UTC) - timedelta(days=2)
    broken_key = f"{created:%Y%m%d}/postgres-all-{created:%Y%m%d-%H%M%S}.sql.gz"
    target = backup_path(backed_up, broken_key)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(broken.encode()))

    backed_up.ok("clean", "soft", "--yes")
    result = fails(backed_up, "restore", "file", broken_key, code=8)
    assert "nowhere" in result.stderr
    assert "REFERENCES nowhere" in result.stderr, "the failing statement is not reported"
    assert "partial restore" in result.stderr
    verified = fails(backed_up, "verify", code=10)
    assert f"last restore ({broken_key}) completed: it was interrupted or failed" in verified.stderr


def test_restore_file_without_key_on_a_terminal_lists_the_backups_and_restores_the_chosen_one(backed_up):
    load_sample_data(backed_up, 50)  # 150 -> 200 rows
    time.sleep(1.1)
    backed_up.ok("backup")
    older, newer = keys(backed_up)
    backed_up.ok("clean", "soft", "--yes")

    status, screen = run_in_terminal(backed_up, ["restore", "file"], {r"Backup to restore \[1-2\]": "1"})
    assert status == 0, screen
    assert older in screen and newer in screen
    assert count_orders(backed_up) == 400


@pytest.mark.parametrize(("answer", "expected_status"), [("n", 3), ("y", 0)])
def test_clean_soft_on_a_terminal_asks_and_does_only_what_was_answered(live, answer, expected_status):
    status, screen = run_in_terminal(live, ["clean", "soft"], {r"Continue\? \[y/N\]": answer})
    assert status == expected_status, screen
    assert "demo" in screen  # the question names what would be dropped
    databases = server_state(live)["databases"]
    assert ("demo" in databases) == (answer == "n")


def test_the_backup_key_is_the_documented_layout(backed_up):
    [key] = keys(backed_up)
    assert re.fullmatch(r"(\d{8})/postgres-all-\1-\d{6}\.sql\.gz", key), key
