"""Relation files named as tables, and a committed transaction described as a person reads it.

A file of the WAL (pgdr.wal.waldump.RelationFile) is named from the live catalog first (tables that still exist,
under their file now), then from the catalogs the physical base backups recorded when they started (a table
dropped or rewritten since, under its file then), newest first; else it is `relfilenode N`. System catalogs and
TOAST tables are left out: a user's change to a table shows on the table.

A file the commit drops is the old file of a TRUNCATE or a rewrite (ALTER TABLE ... TYPE, VACUUM FULL, CLUSTER)
when its table still exists, and a DROP otherwise; rows written into a file created by the same transaction for
a table it rewrote are the rewrite's copy, not inserts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pgdr.artifact import RelationName
from pgdr.wal.waldump import Committed, Counts, RelationFile

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class Names:
    def __init__(self, live: Iterable[RelationName], recorded: Iterable[RelationName]) -> None:
        """`recorded`: the base backups' catalogs, newest first (the first name a file had wins)."""
        self.live = {_file_of(name): name for name in live}
        self.known = dict(self.live)
        for name in recorded:
            self.known.setdefault(_file_of(name), name)
        self.live_tables = {(name.database_oid, name.table_oid) for name in self.live.values()}
        self.databases = {name.database_oid: name.database for name in [*self.known.values()]}

    def of(self, file: RelationFile) -> RelationName | None:
        return self.known.get(file)

    def database(self, oid: int) -> str:
        return self.databases.get(oid, f"database {oid}")

    def still_exists(self, name: RelationName) -> bool:
        return (name.database_oid, name.table_oid) in self.live_tables


def _file_of(name: RelationName) -> RelationFile:
    return RelationFile(name.tablespace, name.database_oid, name.relfilenode)


@dataclass
class TableChange:
    table: str  # schema.name, or "relfilenode N" when no catalog names the file
    counts: Counts = field(default_factory=Counts)
    truncated: bool = False
    rewritten: bool = False
    dropped: bool = False

    def describe(self) -> str:
        parts = [f"{value} {label}" for value, label in ((self.counts.inserted, "inserted"),
                                                         (self.counts.updated, "updated"),
                                                         (self.counts.deleted, "deleted")) if value]
        parts += [word for word, flag in (("TRUNCATE", self.truncated), ("rewritten", self.rewritten),
                                          ("DROP", self.dropped)) if flag]
        return f"{self.table}: {', '.join(parts)}"

    def as_json(self) -> dict[str, object]:
        return {"table": self.table, "inserted": self.counts.inserted, "updated": self.counts.updated,
                "deleted": self.counts.deleted, "truncated": self.truncated, "rewritten": self.rewritten,
                "dropped": self.dropped}


@dataclass
class Transaction:
    """One line of `pgdr wal timeline`."""

    time: datetime
    xid: int
    lsn: str
    databases: tuple[str, ...]
    changes: list[TableChange]

    @property
    def database(self) -> str:
        return ", ".join(self.databases)

    @property
    def rows(self) -> int:
        return sum(change.counts.total for change in self.changes)

    def as_json(self) -> dict[str, object]:
        return {"time": self.time.isoformat(), "xid": self.xid, "lsn": self.lsn, "database": self.database,
                "rows": self.rows, "tables": [change.as_json() for change in self.changes]}


def describe(committed: Committed, names: Names, heap_files: set[RelationFile]) -> Transaction | None:
    """The transaction by table name; None when it changed only system catalogs or TOAST tables. `heap_files`:
    every file the WAL read so far changed rows in (an unnamed dropped file is shown only if it held rows)."""
    changes: dict[str, TableChange] = {}
    rewritten = _rewritten_tables(committed, names)

    def change_of(file: RelationFile) -> TableChange | None:
        name = names.of(file)
        if name is not None and (name.kind == "t" or name.schema_name in SYSTEM_SCHEMAS):
            return None
        label = f"{name.schema_name}.{name.name}" if name is not None else f"relfilenode {file.relfilenode}"
        return changes.setdefault(label, TableChange(label))

    for file, counts in committed.rows.items():
        change = change_of(file)
        if change is None:
            continue
        name = names.of(file)
        if file in committed.created and name is not None and (name.database_oid, name.table_oid) in rewritten:
            continue  # the rewrite's copy of the rows
        change.counts.add(counts)
    for file in committed.dropped:
        name = names.of(file)
        if name is None and file not in heap_files:
            continue  # an index's or a TOAST table's file, or one of a table never written to
        change = change_of(file)
        if change is None:
            continue
        if name is not None and (name.database_oid, name.table_oid) in rewritten:
            change.rewritten = True
        elif name is not None and names.still_exists(name):
            change.truncated = True
        else:
            change.dropped = True
    kept = [change for change in changes.values()
            if change.counts.total or change.truncated or change.rewritten or change.dropped]
    if not kept:
        return None
    return Transaction(committed.time, committed.xid, committed.lsn,
                       tuple(names.database(oid) for oid in sorted(committed.databases)), kept)


def _rewritten_tables(committed: Committed, names: Names) -> set[tuple[int, int]]:
    """Tables whose old file the commit drops while a file it created holds their rows: rewritten, with rows."""
    dropped = {(name.database_oid, name.table_oid) for file in committed.dropped
               if (name := names.of(file)) is not None}
    filled = {(name.database_oid, name.table_oid) for file in committed.created
              if file in committed.rows and (name := names.of(file)) is not None}
    return dropped & filled
