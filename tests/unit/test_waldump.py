"""pgdr.wal.waldump against what PostgreSQL's own pg_waldump printed (waldump/pg15.txt and pg18.txt, taken from real
servers running one script: inserts, COPY, updates, a DELETE with a released savepoint, a rolled-back insert,
TRUNCATE, ALTER TABLE ... TYPE (15), DROP TABLE). Each committed transaction must come back with exactly the rows
the script changed; the aborted one never."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgdr.wal.waldump import RelationFile, TransactionReader, relation_path

FOLDER = Path(__file__).parent / "waldump"


def summary(name: str) -> list[tuple[int, dict[int, tuple[int, int, int]], list[int], list[int]]]:
    reader = TransactionReader()
    found = []
    for line in (FOLDER / name).read_text().splitlines():
        committed = reader.feed(line)
        if committed is not None:
            found.append((committed.xid,
                          {file.relfilenode: (counts.inserted, counts.updated, counts.deleted)
                           for file, counts in committed.rows.items()},
                          [file.relfilenode for file in committed.created],
                          [file.relfilenode for file in committed.dropped]))
    assert reader.open == {}, "every transaction of the script ended"
    return found


def test_postgresql_15s_records_give_each_committed_transaction_and_its_rows():
    assert summary("pg15.txt") == [
        (725, {16384: (5, 0, 0)}, [], []),  # INSERT of 5 rows into orders
        (726, {16391: (50, 0, 0)}, [], []),  # COPY of 50 rows into other: one MULTI_INSERT
        (727, {16384: (0, 2, 0)}, [], []),  # two HOT updates
        (728, {16384: (0, 0, 2), 16391: (1, 0, 0)}, [], []),  # the delete, and the released savepoint's insert
        (731, {}, [16394], [16391]),  # TRUNCATE other: a new file, the old one dropped at commit
        (732, {16397: (3, 0, 0)}, [16395, 16397, 16400, 16401, 16402], [16384, 16387, 16388, 16395, 16389]),
        (733, {}, [], [16394]),  # DROP TABLE other
    ]


def test_postgresql_18s_descriptions_read_the_same():
    assert summary("pg18.txt") == [
        (766, {16394: (5, 0, 0)}, [], []),
        (767, {16402: (50, 0, 0)}, [], []),
        (768, {16394: (0, 2, 0)}, [], []),
        (769, {16394: (0, 1, 0)}, [], []),  # an UPDATE that changed the key: not HOT
        (770, {16394: (0, 0, 3), 16402: (1, 0, 0)}, [], []),
        (773, {}, [16405], [16402]),
        (774, {}, [], [16405]),
    ]


def test_commit_time_lsn_and_database_come_from_the_commit_record():
    reader = TransactionReader()
    committed = [found for line in (FOLDER / "pg18.txt").read_text().splitlines()
                 if (found := reader.feed(line)) is not None]
    first = committed[0]
    assert first.time == datetime(2026, 12, 4, 5, 45, 8, 694568, tzinfo=UTC)
    assert first.lsn == "0/0544EFA0" and first.databases == {5}


def test_a_rolled_back_subtransaction_is_forgotten_and_a_prepared_one_waits_for_its_commit():
    lines = [
        "rmgr: Heap        len (rec/tot):     59/    59, tx:        900, lsn: 0/01000100, prev 0/01000000, "
        "desc: INSERT off: 1, flags: 0x00, blkref #0: rel 1663/5/16500 blk 0",
        "rmgr: Heap        len (rec/tot):     59/    59, tx:        901, lsn: 0/01000140, prev 0/01000100, "
        "desc: DELETE xmax: 901, off: 2, infobits: [KEYS_UPDATED], flags: 0x00, blkref #0: rel 1663/5/16500 blk 0",
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        901, lsn: 0/01000180, prev 0/01000140, "
        "desc: ABORT 2026-12-04 10:00:00.5 UTC",
        "rmgr: Transaction len (rec/tot):     80/    80, tx:        900, lsn: 0/010001C0, prev 0/01000180, "
        "desc: PREPARE gid p1: 2026-12-04 10:00:01 UTC",
        "rmgr: Transaction len (rec/tot):     40/    40, tx:          0, lsn: 0/01000200, prev 0/010001C0, "
        "desc: COMMIT_PREPARED 900: 2026-12-04 10:00:02 UTC",
    ]
    reader = TransactionReader()
    results = [reader.feed(line) for line in lines]
    assert results[:4] == [None, None, None, None]
    committed = results[4]
    assert committed is not None and committed.xid == 900
    assert {file.relfilenode: counts.total for file, counts in committed.rows.items()} == {16500: 1}


def test_an_aborted_transaction_takes_its_subtransactions_with_it():
    lines = [
        "rmgr: Heap        len (rec/tot):     59/    59, tx:        911, lsn: 0/01000100, prev 0/01000000, "
        "desc: INSERT off 1 flags 0x00, blkref #0: rel 1663/5/16500 blk 0",
        "rmgr: Transaction len (rec/tot):     46/    46, tx:        910, lsn: 0/01000140, prev 0/01000100, "
        "desc: ABORT 2026-12-04 10:00:00 UTC; subxacts: 911",
    ]
    reader = TransactionReader()
    assert [reader.feed(line) for line in lines] == [None, None]
    assert reader.open == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("base/5/16394", RelationFile(1663, 5, 16394)),
    ("global/16400", RelationFile(1664, 0, 16400)),
    ("pg_tblspc/16500/PG_15_202209061/5/16501", RelationFile(16500, 5, 16501)),
    ("base/5/../16394", None),
    ("16394", None),
])
def test_relation_paths_as_pg_waldump_prints_them(text, expected):
    assert relation_path(text) == expected


def test_lines_that_are_not_records_are_ignored():
    reader = TransactionReader()
    assert reader.feed("pg_waldump: error: error in WAL record at 0/1000028: invalid record length") is None
    assert reader.feed("") is None and reader.records == 0
