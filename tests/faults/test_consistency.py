"""A backup taken while pgbench writes to two databases restores, and each database is consistent in itself:
pg_dumpall dumps every database in one snapshot, so pgbench's invariant holds in each (the balances of accounts,
tellers and branches each add up to the sum of the history's deltas). Two databases are not dumped at the same
instant: cross-database consistency is not given by logical dumps (docs/OPERATIONS.md, "Consistency of logical
backups").

No clock decides an outcome: pgbench runs until the test stops it, after the backup ended and after it wrote more
rows, so "written while the backup ran" holds however slow the machine is.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest

from faults.fault_helpers import cluster_project, real_bin_dir
from harness import SUPERUSER_PASSWORD, clean_environment
from sync_helpers import poll_until

DATABASES = ("bench_a", "bench_b")
INVARIANT = """
    SELECT (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
           (SELECT sum(abalance) FROM pgbench_accounts),
           (SELECT sum(tbalance) FROM pgbench_tellers),
           (SELECT sum(bbalance) FROM pgbench_branches),
           (SELECT count(*) FROM pgbench_history)
"""


@pytest.fixture(scope="module")
def live() -> Iterator:
    with cluster_project() as project:
        yield project


def pgbench(project, *args: str) -> list[str]:
    binary = real_bin_dir() / "pgbench"
    if not binary.exists():
        pytest.skip(f"pgbench is not installed beside the PostgreSQL binaries ({binary.parent}): the consistency "
                    "of a backup taken under concurrent writes is untested")
    return [str(binary), "-h", "127.0.0.1", "-p", str(project.port), "-U", "postgres", *args]


def pgbench_environment() -> dict[str, str]:
    return {**clean_environment(), "PGPASSWORD": SUPERUSER_PASSWORD}


def invariant(project, database: str) -> tuple[int, ...]:
    with project.connect(database) as connection:
        return tuple(int(value) for value in connection.execute(INVARIANT).fetchone())


def test_a_backup_taken_while_pgbench_writes_restores_with_each_database_consistent(live):
    with live.connect() as connection:
        for database in DATABASES:
            connection.execute(f"CREATE DATABASE {database}")
    for database in DATABASES:
        subprocess.run(pgbench(live, "-i", "-s", "1", "-q", database), env=pgbench_environment(),
                       capture_output=True, check=True, timeout=120)
    # -T: far longer than any test; the writers run until the test interrupts them (SIGINT, as Ctrl-C would)
    writers = [subprocess.Popen(pgbench(live, "-n", "-T", "86400", "-c", "2", "-j", "1", database),
                                env=pgbench_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for database in DATABASES]
    try:
        poll_until(lambda: min(invariant(live, database)[4] for database in DATABASES) >= 50
                   or any(writer.poll() is not None for writer in writers))  # both databases are being written to
        live.ok("backup")
        assert all(writer.poll() is None for writer in writers), "pgbench stopped before the backup ended"
        after_backup = {database: invariant(live, database)[4] for database in DATABASES}
        poll_until(lambda: all(invariant(live, database)[4] > after_backup[database] for database in DATABASES)
                   or any(writer.poll() is not None for writer in writers))  # and went on after it
        assert all(writer.poll() is None for writer in writers), "pgbench stopped while the test watched it"
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.send_signal(signal.SIGINT)
        outcomes = [writer.communicate(timeout=60) + (writer.returncode,) for writer in writers]
    assert all(code == -signal.SIGINT for _, _, code in outcomes), outcomes  # none failed before it was stopped
    final = {database: invariant(live, database) for database in DATABASES}

    live.ok("clean", "soft", "--yes")
    live.ok("restore", "latest")
    for database in DATABASES:
        history, accounts, tellers, branches, rows = invariant(live, database)
        assert accounts == tellers == branches == history, f"{database} is not consistent in itself"
        assert 0 < rows < final[database][4], f"the backup of {database} was not taken while pgbench wrote"
