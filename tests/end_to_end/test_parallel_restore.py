"""Plain backups restore database by database, several psql sessions at a time, from the sections the manifest
records; one failing database stops the others and is named."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from conftest import count_orders, load_sample_data
from end_to_end.e2e_helpers import fake_bin_dir


def other_rows(project, database: str) -> int:
    with project.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM t").fetchone()[0])


@pytest.fixture
def three_databases(running_project):
    load_sample_data(running_project, 3000)
    for database, rows in (("other", 77), ("third", 500)):
        with running_project.connect() as connection:
            connection.execute(f"CREATE DATABASE {database}")
        with running_project.connect(database) as connection:
            connection.execute(f"CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, {rows}) g")
    config = running_project.config.read_text().replace('compression = "gzip"\n', 'compression = "gzip"\njobs = 2\n')
    running_project.config.write_text(config)
    return running_project


def newest_manifest(project) -> dict:
    key = json.loads(project.ok("list", "--json").stdout)[-1]["key"]
    return json.loads((project.backups / (key + ".manifest.json")).read_text())


def recording_psql(root: Path, log: Path, fail_database: str = "") -> Path:
    """psql that logs when each session starts and ends, holds each for a second (so sessions run side by side
    overlap whatever the machine's speed), and fails the session whose input starts with fail_database's part."""
    script = f"""LOG={shlex.quote(str(log))}
head=$(mktemp)
dd bs=1 count=40 of="$head" 2>/dev/null
label=$(sed -n 's/^-- Database "\\(.*\\)" dump$/\\1/p' "$head")
if [ -n "{fail_database}" ] && [ "$label" = "{fail_database}" ]; then
  echo "start $(date +%s.%N) $label" >> "$LOG"; sleep 1
  echo "ERROR:  injected failure in $label" >&2; rm -f "$head"; exit 3
fi
echo "start $(date +%s.%N) ${{label:-globals}}" >> "$LOG"
sleep 1
cat "$head" - | "$REAL" "$@"; status=$?
rm -f "$head"
echo "end $(date +%s.%N) ${{label:-globals}}" >> "$LOG"
exit $status
"""
    return fake_bin_dir(root, "psql", script)


def sessions(log: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        _, stamp, label = line.split(" ", 2)
        times.setdefault(label, []).append(float(stamp))
    return times


def test_a_plain_backup_records_where_each_database_starts(three_databases):
    three_databases.ok("backup")
    manifest = newest_manifest(three_databases)
    names = [section["database"] for section in manifest["sections"]]
    assert names == ["template1", "demo", "other", "postgres", "third"]  # pg_dumpall's order
    offsets = [section["offset"] for section in manifest["sections"]]
    assert 0 < offsets[0] and offsets == sorted(offsets) and offsets[-1] < manifest["uncompressed_size"]


def test_databases_restore_side_by_side_and_match_the_backup(three_databases, workdir):
    three_databases.ok("backup")
    three_databases.ok("clean", "hard", "--yes")
    three_databases.ok("up")
    log = workdir / "psql.log"
    bin_dir = recording_psql(workdir, log)
    restored = three_databases.ok("restore", "latest", env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert "5 databases, 2 at a time" in restored.stdout + restored.stderr
    times = sessions(log)
    assert set(times) == {"globals", "template1", "demo", "other", "postgres", "third"}
    assert max(times["globals"]) <= min(min(stamps) for label, stamps in times.items() if label != "globals")
    starts = sorted(stamps[0] for label, stamps in times.items() if label != "globals")
    ends = sorted(stamps[1] for label, stamps in times.items() if label != "globals")
    assert starts[1] < ends[0]  # a second database started before the first one ended
    assert count_orders(three_databases) == 3000
    assert other_rows(three_databases, "other") == 77 and other_rows(three_databases, "third") == 500
    three_databases.ok("init")
    three_databases.ok("verify")


def test_one_failing_database_stops_the_restore_and_is_named(three_databases, workdir):
    three_databases.ok("backup")
    three_databases.ok("clean", "hard", "--yes")
    three_databases.ok("up")
    log = workdir / "psql.log"
    bin_dir = recording_psql(workdir, log, fail_database="demo")
    failed = three_databases.pgdr("restore", "latest", env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert failed.returncode == 8, failed.stderr
    assert "psql (database demo)" in failed.stderr and "injected failure in demo" in failed.stderr
    assert "partial restore" in failed.stderr
    started = sessions(log)
    assert len(started) >= 3  # globals, demo, and a database that ran beside it and was stopped
    restored = three_databases.ok("restore", "latest", "--clean", "--yes")
    assert "Database restored successfully" in restored.stdout
    assert count_orders(three_databases) == 3000
