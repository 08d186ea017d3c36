"""Backup never lies: when any stage fails, pgdr exits non-zero, names the stage, and leaves nothing that
`list` or `restore latest` would take. Failures are injected with a fake pg_dumpall and a file size limit;
the server is real.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from end_to_end.e2e_helpers import (
    assert_no_password_in_dump,
    backup_path,
    fails,
    fake_bin_dir,
    keys,
    list_json,
    tree_snapshot,
)
from harness import count_orders, load_sample_data

FAKE_PG_DUMPALL = {
    # dies with an error status after part of the dump
    "exits-non-zero": '"$REAL" "$@" | head -c 30000\necho "pg_dumpall: simulated failure midway" >&2\nexit 3\n',
    # killed by a signal after part of the dump
    "killed": '"$REAL" "$@" | head -c 30000\necho "pg_dumpall: about to be killed" >&2\nkill -9 $$\n',
    # the classic lie: stops early but exits 0 (what `pg_dumpall | gzip > f` never notices)
    "exits-zero-early": '"$REAL" "$@" | head -c 30000\nexit 0\n',
}




def test_backup_of_a_stopped_server_fails_with_a_hint_and_leaves_no_file_at_all(live):
    live.ok("down")
    result = fails(live, "backup", code=4)
    assert "pgdr up" in result.stderr
    assert tree_snapshot(live.backups) == {}, "a failed backup left files (hidden temporaries included)"
    assert list_json(live) == []
    nothing = fails(live, "restore", "latest", code=11)
    assert "no backups" in nothing.stderr


@pytest.mark.parametrize("mode", sorted(FAKE_PG_DUMPALL))
def test_backup_fails_naming_pg_dumpall_when_it_dies_midway_and_keeps_nothing(live, workdir, mode):
    load_sample_data(live, 100)
    live.ok("backup")
    [good] = keys(live)
    load_sample_data(live, 2000)  # the dump is now well beyond the 30 kB the fake lets through
    before = tree_snapshot(live.backups)
    bin_dir = fake_bin_dir(workdir, "pg_dumpall", FAKE_PG_DUMPALL[mode])

    result = fails(live, "backup", code=7, env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert "pg_dumpall" in result.stderr.splitlines()[0]
    if mode == "exits-non-zero":
        assert "exit status 3" in result.stderr
    if mode == "killed":
        assert "SIGKILL" in result.stderr

    assert tree_snapshot(live.backups) == before, "the failed backup left or changed files"
    assert keys(live) == [good]
    live.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(live) == 100, "restore latest did not take the last good backup"


def test_backup_fails_when_the_disk_is_full_and_keeps_nothing(live):
    load_sample_data(live, 3000)
    # a file size limit makes every write past 64 kB fail with EFBIG, like a full disk does with ENOSPC
    result = subprocess.run(["sh", "-c", 'ulimit -f 64 && exec "$0" -m pgdr backup', sys.executable],
                            cwd=live.root, env=live.environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 11, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "file size limit" in result.stderr
    assert tree_snapshot(live.backups) == {}
    assert list_json(live) == []


def test_a_successful_backup_is_complete_with_a_manifest_and_holds_no_password(live):
    load_sample_data(live, 500)
    live.ok("backup")
    [record] = list_json(live)
    assert record["verified"] is True
    key = str(record["key"])
    files = sorted(tree_snapshot(live.backups))
    assert files == [key, key + ".manifest.json"], files
    assert_no_password_in_dump(backup_path(live, key))


FAKE_PG_DUMP = {name: script.replace("pg_dumpall", "pg_dump") for name, script in FAKE_PG_DUMPALL.items()
                if name != "exits-zero-early"}  # an archive cut short with status 0 is not detected (see docs)


@pytest.mark.parametrize("mode", sorted(FAKE_PG_DUMP))
def test_a_split_backup_whose_pg_dump_dies_midway_fails_naming_it_and_keeps_nothing(live, workdir, mode):
    """Each database's archive is streamed into pgdr's encoder while pg_dump writes it: a pg_dump that dies
    midway leaves no part and no manifest, and the last good split backup stays the latest."""
    live.config.write_text(live.config.read_text().replace('compression = "gzip"\n',
                                                           'compression = "gzip"\nformat = "split"\n'))
    load_sample_data(live, 100)
    live.ok("backup")
    [good] = keys(live)
    load_sample_data(live, 2000)  # demo's archive is now well beyond the 30 kB the fake lets through
    before = tree_snapshot(live.backups)
    bin_dir = fake_bin_dir(workdir, "pg_dump", FAKE_PG_DUMP[mode])

    result = fails(live, "backup", code=7, env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert "pg_dump " in result.stderr.splitlines()[0], result.stderr
    assert ("exit status 3" if mode == "exits-non-zero" else "SIGKILL") in result.stderr, result.stderr

    assert tree_snapshot(live.backups) == before, "the failed backup left or changed files"
    assert keys(live) == [good]
    live.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(live) == 100, "restore latest did not take the last good backup"
