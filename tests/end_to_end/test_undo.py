"""`pgdr undo` on scripted accidents, on PostgreSQL 15 and 18: a DELETE of a known row set, a DROP TABLE and a
TRUNCATE, each undone by its xid into a new table beside the live one, whose rows must equal the rows just before
the mistake exactly while the live table stays as it is; then the whole database. Undo never overwrites: a
second undo to the same name is refused; a table that did not exist at the moment, or a moment before the oldest
base backup, is refused; the scratch cluster is gone afterwards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import on_major, xid_of
from end_to_end.test_point_in_time import STREAM_ENVIRONMENT, start_streamer, stop_streamer
from harness import Project


def rows(project: Project, table: str) -> list[tuple]:
    with project.connect("demo") as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def undo(project: Project, environment: dict[str, str], *arguments: str) -> tuple[int, str, str]:
    result = project.pgdr("undo", *arguments, "--database", "demo", env={**STREAM_ENVIRONMENT, **environment},
                          timeout=600)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("major", ["system", "newest"])
def test_a_delete_a_truncate_and_a_drop_are_undone_beside_the_live_tables(running_project, major):
    project = running_project
    environment = on_major(project, major)
    with project.connect("demo") as connection:
        connection.execute("CREATE TABLE logs (line text)")
        connection.execute("INSERT INTO logs SELECT 'line ' || g FROM generate_series(1, 12) g")
        connection.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        connection.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 30) g")
        connection.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, "
                           "amount numeric NOT NULL CHECK (amount > 0))")
        connection.execute("CREATE INDEX orders_by_customer ON orders (customer)")
        connection.execute("INSERT INTO orders (customer, amount) SELECT g % 30 + 1, g FROM generate_series(1, 100) g")
    with project.connect() as connection:
        before_the_backup = connection.execute("SELECT clock_timestamp()").fetchone()[0]
    streamer = start_streamer(project, environment)
    try:
        project.ok("backup", env={**STREAM_ENVIRONMENT, **environment})
        with project.connect("demo") as connection:
            connection.execute("UPDATE orders SET amount = amount * 2 WHERE id <= 10")
            before_delete = connection.execute("SELECT * FROM orders ORDER BY 1").fetchall()
            with connection.transaction():
                deleted = xid_of(connection)
                connection.execute("DELETE FROM orders WHERE id % 5 = 0")
            connection.execute("INSERT INTO orders (customer, amount) VALUES (1, 7)")
            connection.execute("ALTER TABLE orders DROP CONSTRAINT orders_customer_fkey")
            customers_before = connection.execute("SELECT * FROM customers ORDER BY 1").fetchall()
            with connection.transaction():
                dropped = xid_of(connection)
                connection.execute("DROP TABLE customers")
            logs_before = connection.execute("SELECT * FROM logs ORDER BY 1").fetchall()
            with connection.transaction():
                truncated = xid_of(connection)
                connection.execute("TRUNCATE logs")
    finally:
        stop_streamer(streamer)
    live_orders = rows(project, "orders")

    code, stdout, stderr = undo(project, environment, "public.orders", "--before", str(deleted), "--dry-run")
    assert code == 0 and "dry run: nothing recovered, nothing created" in stdout, stdout + stderr
    code, stdout, stderr = undo(project, environment, "public.orders", "--to", before_the_backup.isoformat(sep=" "))
    assert code == 3 and "no base backup ends before" in stderr, stdout + stderr
    with project.connect("demo") as connection:
        assert connection.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'orders_before_%'")\
            .fetchone()[0] == 0

    code, stdout, stderr = undo(project, environment, "public.orders", "--before", str(deleted))
    assert code == 0, stdout + stderr
    copy = f"orders_before_{deleted}"
    assert rows(project, copy) == before_delete
    assert rows(project, "orders") == live_orders
    assert f"public.{copy}: 100 rows" in stdout and "public.orders now: 81 rows" in stdout
    assert f"INSERT INTO \"public\".\"orders\" SELECT * FROM \"public\".\"{copy}\" EXCEPT" in stdout
    scratch = Path(re.search(r"a scratch cluster on port \d+ in (\S+),", stdout)[1])
    assert not scratch.exists()
    with project.connect("demo") as connection:
        indexes = {row[0] for row in connection.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", (copy,))}
        assert indexes == {f"orders_pkey_before_{deleted}", f"orders_by_customer_before_{deleted}"}
        default = connection.execute("SELECT column_default FROM information_schema.columns WHERE table_name = %s "
                                     "AND column_name = 'id'", (copy,)).fetchone()[0]
        assert default is None  # the live table's sequence is not shared with the copy

    code, stdout, stderr = undo(project, environment, "public.orders", "--before", str(deleted))
    assert code == 3 and f"public.{copy} already exists" in stderr, stdout + stderr

    code, stdout, stderr = undo(project, environment, "customers", "--before", str(dropped), "--json")
    assert code == 0, stdout + stderr
    report = json.loads(stdout)
    assert report["copy"] == f"public.customers_before_{dropped}" and report["live_rows"] is None
    assert rows(project, f"customers_before_{dropped}") == customers_before

    code, stdout, stderr = undo(project, environment, "public.nothing", "--before", str(deleted))
    assert code == 3 and "public.nothing did not exist in demo" in stderr, stdout + stderr

    code, stdout, stderr = undo(project, environment, "logs", "--before", str(truncated), "--as", "logs_kept")
    assert code == 0, stdout + stderr
    assert rows(project, "logs_kept") == logs_before and rows(project, "logs") == []

    code, stdout, stderr = undo(project, environment, "--before", str(deleted))  # the whole database
    assert code == 0, stdout + stderr
    with project.connect(f"demo_before_{deleted}") as connection:
        assert connection.execute("SELECT * FROM orders ORDER BY 1").fetchall() == before_delete
        assert connection.execute("SELECT * FROM customers ORDER BY 1").fetchall() == customers_before
    if environment:
        project.ok("down", env=environment)
