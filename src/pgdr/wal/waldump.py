"""pg_waldump's text, read record by record: which committed transaction changed which relation file, and how.

pg_waldump is PostgreSQL's own WAL decoder; pgdr never decodes WAL itself. It prints one line per record:

    rmgr: Heap  len (rec/tot): 54/ 54, tx: 770, lsn: 0/0544F3E8, prev 0/0544F3C0, desc: DELETE ...,
          blkref #0: rel 1663/5/16394 blk 0            (one line)

Of those lines pgdr reads only what a person looking for a mistake needs:
- heap row changes by relation file (the first block reference): INSERT, MULTI_INSERT (its tuple count),
  UPDATE and HOT_UPDATE, DELETE;
- relation files created (Storage CREATE: a new table, or the new file of a TRUNCATE or a rewrite);
- the transaction records: COMMIT (its time, the files it drops `rels:`, its subtransactions `subxacts:`),
  ABORT (of a transaction or a subtransaction: its changes are forgotten), PREPARE, COMMIT_PREPARED and
  ABORT_PREPARED.
The description text changed across majors (16: `ntuples: 50` for `50 tuples`, `off: 1` for `off 1`); both are
read. Memory holds the changes of the transactions still open, never the WAL: it stays flat over any amount.
pg_waldump runs with TZ=UTC, so commit times are read as UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

FIRST_NORMAL_OID = 16384  # below: the catalogs' own files (bootstrap relfilenodes)
DEFAULT_TABLESPACE = 1663
GLOBAL_TABLESPACE = 1664

TUPLES = re.compile(r"(?:ntuples: (\d+)|(\d+) tuples)")
TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
PATH = re.compile(r"(?:base/(\d+)/(\d+)|global/(\d+)|pg_tblspc/(\d+)/[^/\s;]+/(\d+)/(\d+))")
PREPARED_XID = re.compile(r"^(?:COMMIT|ABORT)_PREPARED (\d+):")
ROW_KINDS = {f"{kind}{init}": column for kind, column in (("INSERT", "inserted"), ("UPDATE", "updated"),
                                                           ("HOT_UPDATE", "updated"), ("DELETE", "deleted"),
                                                           ("MULTI_INSERT", "multi"))
             for init in ("", "+INIT")}


@dataclass(frozen=True, order=True)
class RelationFile:
    """A relation's file: what the WAL names (the catalog maps it to a table, pgdr.wal.names)."""

    tablespace: int
    database: int
    relfilenode: int


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def add(self, other: Counts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass
class Changes:
    """What one transaction (or subtransaction) did so far."""

    rows: dict[str, Counts] = field(default_factory=dict)  # by block reference text, SPC/DB/REL (hot path)
    created: list[RelationFile] = field(default_factory=list)

    def merge(self, other: Changes) -> None:
        for file, counts in other.rows.items():
            self.rows.setdefault(file, Counts()).add(counts)
        self.created += other.created


@dataclass
class Committed:
    """A committed transaction that changed user data: its rows by file, the files it created and dropped."""

    xid: int
    time: datetime
    lsn: str
    rows: dict[RelationFile, Counts]
    created: list[RelationFile]
    dropped: list[RelationFile]

    @property
    def databases(self) -> set[int]:
        return {file.database for file in [*self.rows, *self.created, *self.dropped] if file.database}


class Record(NamedTuple):
    rmgr: str
    xid: int
    lsn: str
    prev: str
    desc: str


def parse_record(line: str) -> Record | None:
    """One of pg_waldump's record lines, split at its fixed ", " separators (the description comes last and may
    hold more); None for anything else. Hot: it runs once per record, millions of times per gigabyte."""
    if not line.startswith("rmgr: "):
        return None
    parts = line.split(", ", 4)
    if len(parts) != 5:
        return None
    head, tx, lsn, prev, desc = parts
    if not (tx.startswith("tx:") and lsn.startswith("lsn: ") and prev.startswith("prev ")
            and desc.startswith("desc: ")):
        return None
    try:
        xid = int(tx[3:])
    except ValueError:
        return None
    return Record(head[6:].split(" ", 1)[0], xid, lsn[5:], prev[5:], desc[6:])


def carries_text(rmgr: str, desc: str) -> bool:
    """Whether a record's description holds text a database user chose (and so may hold line breaks): a
    prepared transaction's name (PREPARE, and COMMIT/ABORT_PREPARED at wal_level logical), a restore point's
    name, a logical message's prefix."""
    return ((rmgr == "Transaction" and " gid " in f" {desc}") or rmgr == "LogicalMessage"
            or (rmgr == "XLOG" and desc.startswith("RESTORE_POINT")))


def relation_path(text: str) -> RelationFile | None:
    """base/DB/REL, global/REL or pg_tblspc/SPC/VERSION/DB/REL, as Storage and COMMIT records print them."""
    match = PATH.fullmatch(text)
    if match is None:
        return None
    default_db, default_rel, global_rel, space, space_db, space_rel = match.groups()
    if default_rel:
        return RelationFile(DEFAULT_TABLESPACE, int(default_db), int(default_rel))
    if global_rel:
        return RelationFile(GLOBAL_TABLESPACE, 0, int(global_rel))
    return RelationFile(int(space), int(space_db), int(space_rel))


def _file_of(key: str) -> RelationFile | None:
    """A block reference's `SPC/DB/REL` as a RelationFile."""
    parts = key.split("/")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    return RelationFile(int(parts[0]), int(parts[1]), int(parts[2]))


def _section(desc: str, name: str) -> list[str]:
    """The words of `; name: ...` in a transaction record's description."""
    for part in desc.split(";")[1:]:
        label, _, value = part.strip().partition(":")
        if label == name:
            return value.split()
    return []


class TransactionReader:
    """Feed it pg_waldump's lines in order; it answers each COMMIT that changed user files with what it did."""

    def __init__(self) -> None:
        self.open: dict[int, Changes] = {}
        self.records = 0

    def feed(self, line: str) -> Committed | None:
        record = parse_record(line)
        return self.feed_record(record) if record is not None else None

    def feed_record(self, record: Record) -> Committed | None:
        self.records += 1
        rmgr, xid, desc = record.rmgr, record.xid, record.desc
        if rmgr == "Heap" or rmgr == "Heap2":
            if xid:
                self._row_change(xid, desc)
            return None
        kind = desc.split(" ", 1)[0].split("+", 1)[0].rstrip(",")
        if rmgr == "Storage" and kind == "CREATE":
            file = relation_path(desc.split()[1]) if len(desc.split()) > 1 else None
            if file is not None and xid:
                self.open.setdefault(xid, Changes()).created.append(file)
        elif rmgr == "Transaction":
            return self._transaction(xid, kind, desc, record.lsn)
        return None

    def _row_change(self, xid: int, desc: str) -> None:
        kind = desc[:desc.find(" ")]
        column = ROW_KINDS.get(kind)
        if column is None:
            return
        count = 1
        if column == "multi":
            found = TUPLES.search(desc)
            count, column = (int(found[1] or found[2]) if found else 0), "inserted"
        start = desc.find("blkref #0: rel ")
        if start < 0:
            return
        start += 15
        file = desc[start:desc.find(" ", start)]  # "1663/5/16384", made a RelationFile at the commit
        changes = self.open.get(xid)
        if changes is None:
            changes = self.open[xid] = Changes()
        counts = changes.rows.get(file)
        if counts is None:
            counts = changes.rows[file] = Counts()
        if column == "inserted":
            counts.inserted += count
        elif column == "updated":
            counts.updated += count
        else:
            counts.deleted += count

    def _transaction(self, xid: int, kind: str, desc: str, lsn: str) -> Committed | None:
        prepared = PREPARED_XID.match(desc)
        if prepared:
            xid = int(prepared[1])
        subtransactions = [int(word) for word in _section(desc, "subxacts") if word.isdigit()]
        if kind in ("ABORT", "ABORT_PREPARED"):
            for forgotten in [xid, *subtransactions]:
                self.open.pop(forgotten, None)
            return None
        if kind not in ("COMMIT", "COMMIT_PREPARED"):
            return None  # PREPARE: the changes wait for COMMIT_PREPARED; ASSIGNMENT, INVALIDATION: nothing to count
        changes = self.open.pop(xid, Changes())
        for child in subtransactions:
            changes.merge(self.open.pop(child, Changes()))
        dropped = [file for file in map(relation_path, _section(desc, "rels")) if file is not None]
        stamp = TIMESTAMP.search(desc)
        if stamp is None:
            return None
        rows = {file: counts for file, counts in ((_file_of(key), counts) for key, counts in changes.rows.items())
                if file is not None and file.relfilenode >= FIRST_NORMAL_OID}
        created = [file for file in changes.created if file.relfilenode >= FIRST_NORMAL_OID]
        dropped = [file for file in dropped if file.relfilenode >= FIRST_NORMAL_OID]
        if not rows and not dropped:
            return None
        moment = datetime.fromisoformat(stamp[1]).replace(tzinfo=UTC)
        return Committed(xid, moment, lsn, rows, created, dropped)
