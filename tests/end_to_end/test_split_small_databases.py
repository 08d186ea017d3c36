"""A split restore of many databases: the `jobs` biggest are restored in pg_restore passes, each smaller one in one
`pg_restore --jobs 1` of its whole archive (pgdr.formats.split.pass_jobs), and every database comes back whole.

A recording pg_restore logs, for each call that restores (not --list), the database its archive holds and its
arguments; it then runs the real one."""

from __future__ import annotations

import shlex
from pathlib import Path

from end_to_end.e2e_helpers import fake_bin_dir
from harness import count_orders, load_sample_data

SMALL = ("one", "two", "three", "four")


def recording_pg_restore(root: Path, log: Path) -> Path:
    log.touch()
    log.chmod(0o666)
    script = f"""LOG={shlex.quote(str(log))}
for archive in "$@"; do :; done
case " $* " in *" --list "*) exec "$REAL" "$@";; esac
database=$("$REAL" --list "$archive" | sed -n 's/^;     dbname: //p')
echo "$database $*" >> "$LOG"
exec "$REAL" "$@"
"""
    return fake_bin_dir(root, "pg_restore", script)


def calls(log: Path) -> dict[str, list[list[str]]]:
    """database -> the arguments of each restoring call, in order."""
    found: dict[str, list[list[str]]] = {}
    for line in log.read_text().splitlines():
        database, *arguments = line.split(" ")
        found.setdefault(database, []).append(arguments)
    return found


def rows(project, database: str) -> int:  # type: ignore[no-untyped-def]
    with project.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM t").fetchone()[0])


def test_small_databases_restore_in_one_pass_and_the_biggest_in_passes(running_project, workdir):
    project = running_project
    config = project.config.read_text().replace('compression = "gzip"\n', 'compression = "gzip"\nformat = "split"\n'
                                                                        "jobs = 2\n")
    project.config.write_text(config)
    load_sample_data(project, 3000)  # demo: the biggest
    for number, database in enumerate(("big", *SMALL)):
        with project.connect() as connection:
            connection.execute(f"CREATE DATABASE {database}")
        with project.connect(database) as connection:
            count = 20000 if database == "big" else 10 * number
            connection.execute(f"CREATE TABLE t AS SELECT g AS a, md5(g::text) AS b FROM generate_series(1, {count}) g")
            connection.execute("CREATE INDEX ON t (a)")
            connection.execute("ALTER TABLE t ADD PRIMARY KEY (a)")
    project.ok("backup")
    project.ok("clean", "hard", "--yes")
    project.ok("up")
    log = workdir / "pg_restore.log"
    restored = project.ok("restore", "latest", env={"PGDR_POSTGRES__BIN_DIR": str(recording_pg_restore(workdir, log))})

    assert "each in one pg_restore --jobs 1" in restored.stdout + restored.stderr
    made = calls(log)
    one_pass = {database for database, passes in made.items() if len(passes) == 1}
    assert one_pass >= set(SMALL), made
    for database in SMALL:
        [arguments] = made[database]
        assert "--jobs=1" in arguments and "--create" in arguments, arguments
        assert not any(argument.startswith(("--use-list", "--section")) for argument in arguments), arguments
    in_passes = [database for database, passes in made.items() if len(passes) > 1]
    assert sorted(in_passes) == ["big", "demo"], made  # the two biggest (jobs = 2)
    assert all(any("--jobs=2" in arguments for arguments in made[database]) for database in in_passes)
    assert count_orders(project) == 3000
    assert rows(project, "big") == 20000
    assert [rows(project, database) for database in SMALL] == [10, 20, 30, 40]
