"""Split restores never fail where a one-job restore succeeds (issue 13, item 5), end to end through the CLI.

A one-pass `pg_restore --jobs 4` of the two archives built here fails about every other time on PostgreSQL 15: a
deadlock between INDEX ATTACH and FK CONSTRAINT (or two INDEX ATTACHes) on two-level partitioned tables, and a
foreign-key violation when an extension's configuration tables are loaded out of order. Restored six times each,
every restore must succeed in its passes, without the serial redo (whose warning would hide a race), with the
rows and the indexes and constraints of the original.

A fake pg_restore only where a failure must be forced: a deadlock (the redo with --jobs 1 must repair it, or be
reported when it fails too), and to hold the other databases' sessions until the failing one has failed (so a
restore that stopped them on the first failure could not pass by luck). The failure itself is a real one: an
index over a function whose body calls another one without a schema, which pg_dump's empty search_path breaks.
No clock decides an outcome; a hang is caught by the timeout.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import fails, fake_bin_dir
from harness import server_bin_dir

REPEATS = 6
REDO_WARNING = "restoring it again with pg_restore --jobs 1"

PARTITIONED_SCHEMA = """
CREATE TABLE customers (region int, id int, name text, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE orders (region int, id int, customer int, amount int, PRIMARY KEY (region, id),
                     FOREIGN KEY (region, customer) REFERENCES customers) PARTITION BY LIST (region);
CREATE INDEX ON customers (name);
CREATE INDEX ON orders (customer);
CREATE INDEX ON orders (amount);
"""
EXTENSION = "pgdr_test_config"
EXTENSION_CONTROL = """comment = 'pgdr tests: two configuration tables, one referencing the other'
default_version = '1.0'
relocatable = false
superuser = true
"""
# No rows of its own: pg_extension_config_dump(table, '') dumps every row, which CREATE EXTENSION must not make.
EXTENSION_SCRIPT = """\\echo Use "CREATE EXTENSION pgdr_test_config" to load this file. \\quit
CREATE TABLE @extschema@.pgdr_topology (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE @extschema@.pgdr_layer (topology_id integer NOT NULL REFERENCES @extschema@.pgdr_topology (id),
                                     layer_id integer NOT NULL, PRIMARY KEY (topology_id, layer_id));
SELECT pg_catalog.pg_extension_config_dump('@extschema@.pgdr_topology', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.pgdr_layer', '');
"""


def configure(project, text: str) -> None:
    config = project.config.read_text().replace('compression = "gzip"\n', 'compression = "gzip"\n' + text + "\n")
    project.config.write_text(config)


@pytest.fixture
def split_project(running_project):
    configure(running_project, 'format = "split"\njobs = 4')
    return running_project


def create_partitioned(project, database: str) -> None:
    """Two levels (list by region, hash by id), a foreign key to another two-level partitioned table, indexes on
    the parents: pg_dump writes an INDEX ATTACH per partition and level."""
    with project.connect() as connection:
        connection.execute(f"CREATE DATABASE {database}")
    with project.connect(database) as connection:
        connection.execute(PARTITIONED_SCHEMA)
        for table in ("customers", "orders"):
            for region in (1, 2, 3):
                connection.execute(f"CREATE TABLE {table}_{region} PARTITION OF {table} FOR VALUES IN ({region}) "
                                   "PARTITION BY HASH (id)")
                for remainder in range(3):
                    connection.execute(f"CREATE TABLE {table}_{region}_{remainder} PARTITION OF {table}_{region} "
                                       f"FOR VALUES WITH (modulus 3, remainder {remainder})")
        connection.execute("INSERT INTO customers SELECT r, g, 'n' || g FROM generate_series(1, 3) r, "
                           "generate_series(1, 1000) g")
        connection.execute("INSERT INTO orders SELECT r, g, g % 1000 + 1, g FROM generate_series(1, 3) r, "
                           "generate_series(1, 5000) g")


def contents(project, database: str) -> dict[str, object]:
    """Rows per table, every index with its validity, every constraint with its table: what a restore brings back."""
    with project.connect(database) as connection:
        tables = [(row[0], row[1]) for row in connection.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")]
        rows = {f"{schema}.{table}": int(connection.execute(
            f'SELECT count(*) FROM ONLY "{schema}"."{table}"').fetchone()[0]) for schema, table in tables}
        indexes = sorted((row[0], row[1]) for row in connection.execute(
            "SELECT indexrelid::regclass::text, indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'pg_toast')"))
        constraints = sorted((row[0], row[1], row[2]) for row in connection.execute(
            "SELECT conrelid::regclass::text, conname, contype FROM pg_constraint WHERE conrelid <> 0 "
            "AND connamespace <> 'pg_catalog'::regnamespace"))
    return {"rows": rows, "indexes": indexes, "constraints": constraints}


def drop(project, database: str) -> None:
    with project.connect() as connection:
        connection.execute(f"DROP DATABASE {database} WITH (FORCE)")


def restore_again_and_again(project, database: str) -> None:
    """Back up once, then drop the database and restore it alone, REPEATS times: each time whole, in passes."""
    original = contents(project, database)
    assert original["rows"], "nothing to restore"
    project.ok("backup")
    for attempt in range(REPEATS):
        drop(project, database)
        restored = project.ok("restore", "latest", "--database", database)
        output = restored.stdout + restored.stderr
        assert "Database restored successfully" in restored.stdout
        assert REDO_WARNING not in output, f"attempt {attempt + 1}: the parallel passes raced:\n{output}"
        assert contents(project, database) == original, f"attempt {attempt + 1} restored something else"


@pytest.mark.timeout(400)
def test_partitioned_tables_with_a_foreign_key_restore_every_time(split_project):
    create_partitioned(split_project, "parted")
    with split_project.connect("parted") as connection:
        attaches = connection.execute("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                      "WHERE c.relkind IN ('i', 'I')").fetchone()[0]
    assert attaches >= 30, "too few attached indexes to race"
    restore_again_and_again(split_project, "parted")


@pytest.fixture
def test_extension() -> Iterator[str]:
    """The extension's control file and script in the share dir of the server's binaries, removed after."""
    pg_config = server_bin_dir() / "pg_config"
    if not pg_config.exists():
        pytest.skip(f"no pg_config beside the server binaries in {pg_config.parent}: cannot install a test extension")
    folder = Path(subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True,
                                 check=True).stdout.strip()) / "extension"
    if not os.access(folder, os.W_OK):
        pytest.skip(f"{folder} is not writable: cannot install a test extension")
    files = [folder / f"{EXTENSION}.control", folder / f"{EXTENSION}--1.0.sql"]
    files[0].write_text(EXTENSION_CONTROL)
    files[1].write_text(EXTENSION_SCRIPT)
    yield EXTENSION
    for path in files:
        path.unlink(missing_ok=True)


@pytest.mark.timeout(400)
def test_extension_configuration_tables_with_a_foreign_key_restore_every_time(split_project, test_extension):
    with split_project.connect() as connection:
        connection.execute("CREATE DATABASE ext")
    with split_project.connect("ext") as connection:
        connection.execute(f"CREATE EXTENSION {test_extension}")
        connection.execute("INSERT INTO pgdr_topology SELECT g, 't' || g FROM generate_series(1, 200) g")
        connection.execute("INSERT INTO pgdr_layer SELECT t, l FROM generate_series(1, 200) t, "
                           "generate_series(1, 50) l")
    restore_again_and_again(split_project, "ext")
    assert contents(split_project, "ext")["rows"] == {"public.pgdr_layer": 10000, "public.pgdr_topology": 200}


def test_template1_comes_back_and_a_closed_database_is_not_dumped(split_project):
    with split_project.connect("template1") as connection:
        connection.execute("CREATE SCHEMA house_rules")
        connection.execute("CREATE TABLE house_rules.rule AS SELECT g AS id, 'rule ' || g AS text "
                           "FROM generate_series(1, 12) g")
    with split_project.connect() as connection:
        connection.execute("CREATE DATABASE closed")
        connection.execute("ALTER DATABASE closed WITH ALLOW_CONNECTIONS false")
    split_project.ok("backup")
    record = json.loads(split_project.ok("list", "--json").stdout)[-1]
    manifest = json.loads((split_project.backups / (record["key"] + ".manifest.json")).read_text())
    assert {part["database"] for part in manifest["parts"]} == {None, "demo", "postgres", "template1"}
    split_project.ok("clean", "hard", "--yes")
    split_project.ok("up")
    with split_project.connect("template1") as connection:
        assert connection.execute("SELECT to_regclass('house_rules.rule')").fetchone()[0] is None, "not a new cluster"
    restored = split_project.ok("restore", "latest")
    assert "Database restored successfully" in restored.stdout
    with split_project.connect("template1") as connection:
        rules = connection.execute("SELECT count(*), max(text) FROM house_rules.rule").fetchone()
    assert rules == (12, "rule 9")
    with split_project.connect() as connection:
        flags = connection.execute("SELECT datistemplate, datallowconn FROM pg_database "
                                   "WHERE datname = 'template1'").fetchone()
        connection.execute("CREATE DATABASE from_template")  # from template1: it holds the restored contents
    assert flags == (True, True)
    with split_project.connect("from_template") as connection:
        assert connection.execute("SELECT count(*) FROM house_rules.rule").fetchone()[0] == 12


def deadlocking_pg_restore(root: Path, mark: Path, serial_too: bool) -> Path:
    """pg_restore whose first parallel pass (or, with serial_too, every pass after pre-data and the redo) fails
    the way a deadlock makes it fail; --list and everything else run the real one."""
    condition = ('[ "$pre" = no ]' if serial_too else '[ ! -e "$MARK" ] && [ "$jobs" != 1 ]')
    script = f"""MARK={shlex.quote(str(mark))}
jobs=1; pre=no
for argument in "$@"; do
  case "$argument" in --list) exec "$REAL" "$@";; --jobs=*) jobs=${{argument#--jobs=}};; --section=pre-data) pre=yes;;
  esac
done
if {condition}; then
  touch "$MARK"
  echo "pg_restore: error: could not execute query: ERROR:  deadlock detected" >&2
  echo "DETAIL:  Process 1 waits for AccessExclusiveLock on relation 2 of database 3; blocked by process 4." >&2
  echo "Command was: ALTER INDEX public.orders_1_pkey ATTACH PARTITION public.orders_1_0_pkey;" >&2
  echo "pg_restore: error: a worker process died unexpectedly" >&2
  exit 1
fi
exec "$REAL" "$@"
"""
    return fake_bin_dir(root, "pg_restore", script)


def test_a_parallel_race_is_redone_with_one_job_and_said_so(split_project, workdir):
    create_partitioned(split_project, "parted")
    original = contents(split_project, "parted")
    split_project.ok("backup")
    drop(split_project, "parted")
    mark = workdir / "deadlocked"
    bin_dir = deadlocking_pg_restore(workdir, mark, serial_too=False)
    restored = split_project.ok("restore", "latest", "--database", "parted",
                                env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert mark.exists(), "the fake never failed a pass"
    output = restored.stdout + restored.stderr
    assert "parted: the parallel restore failed (pg_restore parted (data): deadlock detected" in output
    assert REDO_WARNING in output and "parted: restored with pg_restore --jobs 1" in output
    assert contents(split_project, "parted") == original


def test_a_race_the_serial_redo_hits_too_is_reported(split_project, workdir):
    create_partitioned(split_project, "parted")
    split_project.ok("backup")
    drop(split_project, "parted")
    bin_dir = deadlocking_pg_restore(workdir, workdir / "deadlocked", serial_too=True)
    failed = fails(split_project, "restore", "latest", "--database", "parted", code=8,
                   env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert REDO_WARNING in failed.stderr
    assert ("database parted failed in pg_restore --jobs 1 parted: deadlock detected (statement: ALTER INDEX "
            "public.orders_1_pkey ATTACH PARTITION public.orders_1_0_pkey;). Partially restored: parted; no database "
            "restored completely") in " ".join(failed.stderr.split())


def held_pg_restore(root: Path, log: Path, failing: str) -> Path:
    """pg_restore that logs `end DATABASE STATUS` after each pass of `failing`'s archive, and holds every other
    database's passes until one of those failed: they are still running, or not started, when it fails."""
    log.touch()
    script = f"""LOG={shlex.quote(str(log))}
for archive in "$@"; do :; done
case " $* " in *" --list "*) exec "$REAL" "$@";; esac
if "$REAL" --list "$archive" | grep -qx ';     dbname: {failing}'; then
  "$REAL" "$@"; status=$?
  echo "end {failing} $status" >> "$LOG"
  exit $status
fi
waited=0
until grep -q '^end {failing} [1-9]' "$LOG"; do
  sleep 0.05; waited=$((waited + 1))
  if [ $waited -gt 3000 ]; then echo "pg_restore: error: {failing} never failed" >&2; exit 1; fi
done
exec "$REAL" "$@"
"""
    return fake_bin_dir(root, "pg_restore", script)


@pytest.mark.timeout(400)
def test_a_failing_database_shows_its_error_and_lets_the_others_finish(split_project, workdir):
    """jobs = 2: broken (the biggest, restored first) and one other database start; the others wait in the queue.
    The held pg_restore lets no other database restore anything before broken has failed."""
    split_project.config.write_text(split_project.config.read_text().replace("jobs = 4", "jobs = 2"))
    with split_project.connect() as connection:
        for database in ("broken", "one", "two", "three"):
            connection.execute(f"CREATE DATABASE {database}")
    with split_project.connect("broken") as connection:
        connection.execute("CREATE FUNCTION g(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1'")
        connection.execute("CREATE FUNCTION f(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT g($1)'")
        connection.execute("CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, 50000) g")
        connection.execute("CREATE INDEX t_f ON t (f(a))")
    for rows, database in enumerate(("one", "two", "three"), 1):
        with split_project.connect(database) as connection:
            connection.execute(f"CREATE TABLE t AS SELECT g AS a FROM generate_series(1, {rows * 10}) g")
            connection.execute("CREATE INDEX ON t (a)")
    split_project.ok("backup")
    split_project.ok("clean", "hard", "--yes")
    split_project.ok("up")
    log = workdir / "pg_restore.log"
    bin_dir = held_pg_restore(workdir, log, "broken")
    failed = fails(split_project, "restore", "latest", code=8, env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    message = " ".join(failed.stderr.split())
    assert ("database broken failed in pg_restore broken (post-data): function g(integer) does not exist "
            '(statement: CREATE INDEX "t_f" ON "public"."t" USING "btree" ("public"."f"("a"));). Partially restored: '
            "broken; "
            "restored completely: ") in message, failed.stderr
    complete = message.split("restored completely: ", 1)[1].split(" fix: ", 1)[0].split(", ")
    assert sorted(complete) == ["demo", "one", "postgres", "template1", "three", "two"], failed.stderr
    assert "worker process died" not in message
    assert log.read_text().splitlines()[-1] == "end broken 1", "broken went on after its failure"
    for rows, database in enumerate(("one", "two", "three"), 1):
        with split_project.connect(database) as connection:
            assert connection.execute("SELECT count(*) FROM t").fetchone()[0] == rows * 10
            assert connection.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 't'").fetchone()[0] == 1
