"""How `pgdr wal timeline` names a committed transaction's files: the live catalog first, then the base backups'
catalogs; a dropped file is a TRUNCATE, a rewrite or a DROP by whether its table still exists and got rows in a
new file; system catalogs and TOAST tables are left out."""

from __future__ import annotations

from datetime import UTC, datetime

from pgdr.artifact import RelationName
from pgdr.wal.names import Names, describe
from pgdr.wal.waldump import Committed, Counts, RelationFile

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def name(relfilenode: int, table_oid: int, table: str, schema: str = "public", kind: str = "r") -> RelationName:
    return RelationName(database_oid=5, database="shop", tablespace=1663, relfilenode=relfilenode,
                        table_oid=table_oid, schema_name=schema, name=table, kind=kind)


def file(relfilenode: int) -> RelationFile:
    return RelationFile(1663, 5, relfilenode)


def committed(rows: dict[int, Counts] | None = None, created: list[int] | None = None,
              dropped: list[int] | None = None) -> Committed:
    return Committed(900, T0, "0/3000028", {file(number): counts for number, counts in (rows or {}).items()},
                     [file(number) for number in created or []], [file(number) for number in dropped or []])


LIVE = [name(20001, 16390, "orders"), name(20002, 16400, "logs"), name(2619, 2619, "pg_statistic", "pg_catalog"),
        name(20003, 16395, "pg_toast_16390", "pg_toast", "t")]
RECORDED = [name(16390, 16390, "orders"), name(16400, 16400, "logs"), name(16410, 16410, "customers")]
NAMES = Names(LIVE, RECORDED)


def summary(found) -> dict[str, tuple[int, int, int, bool, bool, bool]]:
    return {change.table: (change.counts.inserted, change.counts.updated, change.counts.deleted, change.truncated,
                           change.rewritten, change.dropped) for change in found.changes}


def test_rows_are_named_from_the_live_catalog_and_a_file_it_no_longer_has_from_the_base_backups():
    found = describe(committed({20001: Counts(deleted=3), 16410: Counts(inserted=2)}), NAMES, set())
    assert summary(found) == {"public.orders": (0, 0, 3, False, False, False),
                              "public.customers": (2, 0, 0, False, False, False)}
    assert found.database == "shop" and found.rows == 5


def test_a_dropped_file_of_a_table_that_still_exists_empty_is_a_truncate():
    found = describe(committed(created=[20002], dropped=[16400]), NAMES, set())
    assert summary(found) == {"public.logs": (0, 0, 0, True, False, False)}


def test_a_dropped_file_whose_table_got_its_rows_in_a_new_file_is_a_rewrite_not_inserts():
    found = describe(committed({20001: Counts(inserted=100)}, created=[20001], dropped=[16390]), NAMES, set())
    assert summary(found) == {"public.orders": (0, 0, 0, False, True, False)}


def test_a_dropped_file_of_a_table_gone_is_a_drop_named_from_the_base_backup():
    found = describe(committed(dropped=[16410]), NAMES, set())
    assert summary(found) == {"public.customers": (0, 0, 0, False, False, True)}


def test_an_unnamed_dropped_file_shows_only_if_it_held_rows():
    assert describe(committed(dropped=[30000]), NAMES, set()) is None  # an index's file, say
    found = describe(committed(dropped=[30001]), NAMES, {file(30001)})
    assert summary(found) == {"relfilenode 30001": (0, 0, 0, False, False, True)}


def test_system_catalogs_and_toast_tables_are_left_out():
    assert describe(committed({20003: Counts(inserted=4)}), NAMES, set()) is None
    assert describe(committed({2619: Counts(updated=1)}), NAMES, set()) is None
