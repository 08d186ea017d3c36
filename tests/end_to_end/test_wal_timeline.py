"""`pgdr wal timeline` on a scripted accident, judged against what the script did: load on several tables, a
DELETE of a known row set in one transaction, a rolled-back insert, TRUNCATE, a rewrite by ALTER TABLE ... TYPE,
an update after it, DROP TABLE. Each committed transaction must be listed with its xid and exact counts, under
the table's name (the dropped one's from the base backup's catalog); the aborted one never. On PostgreSQL 15 (the
system's) and 18 (the wheel's).

And from the hostile side: a database user who names a prepared transaction with line breaks and text shaped like
pg_waldump's lines must not hide a real DELETE from the timeline, nor add one.
"""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from end_to_end.e2e_helpers import on_major, xid_of
from end_to_end.test_point_in_time import STREAM_ENVIRONMENT, archive_markers, start_streamer, stop_streamer
from harness import Project


def timeline(project: Project, *arguments: str, env: dict[str, str]) -> list[dict]:
    result = project.pgdr("wal", "timeline", "--since", "1h", "--json", *arguments,
                          env={**STREAM_ENVIRONMENT, **env}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def by_xid(entries: list[dict]) -> dict[int, dict[str, dict]]:
    return {entry["xid"]: {table["table"]: table for table in entry["tables"]} for entry in entries}


def counts(table: dict) -> tuple[int, int, int, bool, bool, bool]:
    return (table["inserted"], table["updated"], table["deleted"], table["truncated"], table["rewritten"],
            table["dropped"])


STEPS = [  # (name, statements of one transaction)
    *[(f"load {number}", [f"INSERT INTO customers SELECT g, 'c' || g FROM generate_series({number * 10 + 1}, "
                          f"{number * 10 + 10}) g", "INSERT INTO logs SELECT g FROM generate_series(1, 5) g"])
      for number in range(3)],
    ("delete", ["DELETE FROM orders WHERE id % 5 = 0"]),  # 20 of 100
    ("truncate", ["TRUNCATE logs"]),
    ("rewrite", ["ALTER TABLE orders ALTER COLUMN amount TYPE bigint"]),
    ("update", ["UPDATE orders SET amount = amount + 1 WHERE id <= 3"]),
    ("drop", ["DROP TABLE customers"]),
]


def accident(project: Project) -> dict[str, int]:
    """The script, a rolled-back insert after the delete; the xid of each step."""
    xids = {}
    with project.connect("demo") as connection:
        for name, statements in STEPS:
            with connection.transaction():
                xids[name] = xid_of(connection)
                for statement in statements:
                    connection.execute(statement)
            if name == "delete":
                connection.execute("BEGIN")
                xids["rolled back"] = xid_of(connection)
                connection.execute("INSERT INTO orders VALUES (1000, 1)")
                connection.execute("ROLLBACK")
    return xids


@pytest.mark.parametrize("major", ["system", "newest"])
def test_a_scripted_accident_is_listed_transaction_by_transaction_with_exact_counts(running_project, major):
    project = running_project
    environment = on_major(project, major)
    with project.connect("demo") as connection:
        connection.execute("CREATE TABLE orders (id int PRIMARY KEY, amount int)")
        with connection.transaction():
            filled = xid_of(connection)
            connection.execute("INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g")
        connection.execute("CREATE TABLE customers (id int, name text)")
        connection.execute("CREATE TABLE logs (id int)")
    streamer = start_streamer(project, environment)
    try:
        project.ok("backup", env={**STREAM_ENVIRONMENT, **environment})  # records the catalog: customers, logs
        xids = accident(project)
    finally:
        stop_streamer(streamer)

    listed = by_xid(timeline(project, env=environment))
    assert xids["rolled back"] not in listed
    for round_number in range(3):
        load = listed[xids[f"load {round_number}"]]
        assert counts(load["public.customers"]) == (10, 0, 0, False, False, False)
        assert counts(load["public.logs"]) == (5, 0, 0, False, False, False)
    assert counts(listed[xids["delete"]]["public.orders"]) == (0, 0, 20, False, False, False)
    assert counts(listed[xids["truncate"]]["public.logs"]) == (0, 0, 0, True, False, False)
    assert counts(listed[xids["rewrite"]]["public.orders"]) == (0, 0, 0, False, True, False)
    assert counts(listed[xids["update"]]["public.orders"]) == (0, 3, 0, False, False, False)
    assert counts(listed[xids["drop"]]["public.customers"]) == (0, 0, 0, False, False, True)

    assert counts(listed[filled]["public.orders"]) == (100, 0, 0, False, False, False)  # before the base backup
    only_orders = timeline(project, "--table", "public.orders", env=environment)
    assert [entry["xid"] for entry in only_orders] == [filled, xids["delete"], xids["rewrite"], xids["update"]]
    biggest = timeline(project, "--biggest", "2", env=environment)
    assert [entry["xid"] for entry in biggest] == [filled, xids["delete"]]  # 100 rows, then 20

    text = project.pgdr("wal", "timeline", "--since", "1h", "--table", "orders", env={**STREAM_ENVIRONMENT,
                                                                                      **environment})
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"xid {xids['delete']}  demo  public.orders: 20 deleted" in text.stdout
    assert "pgdr undo SCHEMA.TABLE --before XID" in text.stdout
    if environment:
        project.ok("down", env=environment)


def test_a_prepared_transactions_name_cannot_hide_a_delete_or_add_one(running_project):
    """The attacker names prepared transactions (a name holds at most 200 bytes) with a line break and text shaped
    like pg_waldump's lines: a forged ABORT of the victim's DELETE, prepared while that DELETE is still open (so
    the forged line comes before its COMMIT), then a forged DELETE and COMMIT of a transaction that never was."""
    project = running_project
    project.ok("down")
    config = project.root / "pgdr.toml"  # PREPARE TRANSACTION needs max_prepared_transactions above 0
    config.write_text(config.read_text().replace("settings = { ", "settings = { max_prepared_transactions = 4, "))
    project.ok("up")
    with project.connect("demo") as connection:
        connection.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        connection.execute("INSERT INTO orders SELECT generate_series(1, 20)")
        connection.execute("CREATE ROLE mallory LOGIN PASSWORD 'mallory-pw'")
        connection.execute("GRANT CONNECT ON DATABASE demo TO mallory")
        connection.execute("GRANT INSERT ON orders TO mallory")
        file = connection.execute("SELECT d.oid::text || '/' || pg_relation_filenode('orders') FROM pg_database d "
                                  "WHERE datname = current_database()").fetchone()[0]
    streamer = start_streamer(project)
    try:
        project.ok("backup", env=STREAM_ENVIRONMENT)
        with project.connect("demo") as victim, project.connect("demo", "mallory", "mallory-pw") as attacker:
            victim.execute("BEGIN")
            victim_xid = xid_of(victim)
            victim.execute("DELETE FROM orders WHERE id <= 5")
            prepare(attacker, 1, f"rmgr: Transaction len (rec/tot): 34/34, tx: {victim_xid}, lsn: 0/F0, prev 0/E0, "
                                 "desc: ABORT 2026-12-04 10:00:00 UTC")
            victim.execute("COMMIT")
            prepare(attacker, 2, "rmgr: Heap len (rec/tot): 54/54, tx: 99999, lsn: 0/F1, prev 0/F0, desc: DELETE "
                                 f"off 1, blkref #0: rel 1663/{file} blk 0")
            prepare(attacker, 3, "rmgr: Transaction len (rec/tot): 34/34, tx: 99999, lsn: 0/F2, prev 0/F1, "
                                 "desc: COMMIT 2026-12-04 10:00:01 UTC")
    finally:
        stop_streamer(streamer)
    listed = by_xid(timeline(project, env={}))
    assert counts(listed[victim_xid]["public.orders"]) == (0, 0, 5, False, False, False)
    assert 99999 not in listed


def prepare(connection, number: int, forged_line: str) -> None:
    name = f"innocent-{number}\n{forged_line}"
    assert len(name.encode()) <= 200
    connection.execute("BEGIN")
    connection.execute("INSERT INTO orders VALUES (%s)", (100 + number,))
    connection.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(name)))


def test_a_gap_in_the_archive_is_an_error_naming_the_segment(running_project):
    project = running_project
    history = archive_markers(project)
    missing = history.segments[3]  # the segment of marker 3: between the switches after 2 and 4
    for path in (project.backups / "wal").glob(missing + ".*"):
        path.unlink()
    result = project.pgdr("wal", "timeline", "--since", "1h", env=STREAM_ENVIRONMENT)
    assert result.returncode == 9, result.stdout + result.stderr
    assert f"WAL segment {missing} is missing from the archive" in result.stderr


def test_without_an_archive_it_says_how_to_start_one(running_project):
    result = running_project.pgdr("wal", "timeline")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no WAL archive" in result.stderr and "pgdr wal stream" in result.stderr
