"""Plain backups restore database by database, several psql sessions at a time, from the sections the manifest
records; one failing database stops the others and is named.

A recording psql logs each session's start and end in one file (appends, so the file's order is the order of
events). No clock decides an outcome: a database session waits until a second one has started, so sessions that
run side by side always meet, and sessions run one after the other never do; a session that must be stopped
waits for a release the test gives only afterwards. A hang is caught by the timeout.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import fake_bin_dir
from harness import count_orders, load_sample_data


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


def recording_psql(root: Path, log: Path, fail_database: str = "", release: Path | None = None) -> Path:
    """psql that logs `start LABEL PID` and `end LABEL PID` for each session (LABEL: the database, or globals).

    A database session first waits until a second database session has started. The one for fail_database then
    fails (exit 3, an ERROR line); with `release`, every other database session waits for that file before it
    restores anything, so it is still running when the failure comes, and ends only if nobody stops it.
    As root pgdr runs psql as the cluster's OS user: the log is created writable for it."""
    log.touch()
    log.chmod(0o666)
    script = f"""LOG={shlex.quote(str(log))}
RELEASE={shlex.quote(str(release or ""))}
head=$(mktemp)
dd bs=1 count=40 of="$head" 2>/dev/null
label=$(sed -n 's/^-- Database "\\(.*\\)" dump$/\\1/p' "$head")
label=${{label:-globals}}
echo "start $label $$" >> "$LOG"
if [ "$label" != globals ]; then
  until [ "$(grep '^start ' "$LOG" | grep -vc '^start globals ')" -ge 2 ]; do sleep 0.05; done
fi
if [ "$label" = "{fail_database}" ]; then
  echo "fail $label $$" >> "$LOG"
  echo "ERROR:  injected failure in $label" >&2; rm -f "$head"; exit 3
fi
if [ -n "$RELEASE" ] && [ "$label" != globals ]; then
  until [ -e "$RELEASE" ]; do sleep 0.05; done
fi
cat "$head" - | "$REAL" "$@"; status=$?
rm -f "$head"
echo "end $label $$" >> "$LOG"
exit $status
"""
    return fake_bin_dir(root, "psql", script)


def events(log: Path) -> list[tuple[str, str, int]]:
    """(start|fail|end, label, pid) in the order they happened."""
    found = []
    for line in log.read_text().splitlines():
        kind, label, pid = line.split(" ")
        found.append((kind, label, int(pid)))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


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
    order = [(kind, label) for kind, label, _ in events(log)]
    databases = {"template1", "demo", "other", "postgres", "third"}
    assert order[:2] == [("start", "globals"), ("end", "globals")], "the globals did not go first, alone"
    assert sorted(order[2:]) == sorted((kind, label) for kind in ("start", "end") for label in databases)
    assert [kind for kind, _ in order[2:4]] == ["start", "start"], f"no two databases ran side by side: {order}"
    assert count_orders(three_databases) == 3000
    assert other_rows(three_databases, "other") == 77 and other_rows(three_databases, "third") == 500
    three_databases.ok("init")
    three_databases.ok("verify")


@pytest.mark.timeout(240)  # a restore that waits for the held session instead of stopping it hangs: it fails here
def test_one_failing_database_stops_the_restore_and_is_named(three_databases, workdir):
    three_databases.ok("backup")
    three_databases.ok("clean", "hard", "--yes")
    three_databases.ok("up")
    log, release = workdir / "psql.log", workdir / "release-held-sessions"
    bin_dir = recording_psql(workdir, log, fail_database="demo", release=release)
    try:
        failed = three_databases.pgdr("restore", "latest", env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
        happened = events(log)
        left_running = [pid for kind, label, pid in happened if kind == "start" and running(pid)]
    finally:
        release.touch()  # a session nobody stopped may go on now, so nothing hangs after the test
    assert failed.returncode == 8, failed.stderr
    assert "psql (database demo)" in failed.stderr and "injected failure in demo" in failed.stderr
    assert "partial restore" in failed.stderr
    started = [label for kind, label, _ in happened if kind == "start" and label != "globals"]
    assert "demo" in started and len(started) == 2, f"not demo and one database beside it (jobs = 2): {happened}"
    [beside] = [label for label in started if label != "demo"]
    assert ("end", beside) not in [(kind, label) for kind, label, _ in happened], "the other session was not stopped"
    assert left_running == [], f"sessions still running after pgdr exited: {left_running}"
    restored = three_databases.ok("restore", "latest", "--clean", "--yes")
    assert "Database restored successfully" in restored.stdout
    assert count_orders(three_databases) == 3000
