"""A backup taken while pgbench writes to two databases restores, and each database is consistent in itself:
pg_dumpall dumps every database in one snapshot, so pgbench's invariant holds in each (the balances of accounts,
tellers and branches each add up to the sum of the history's deltas). Two databases are not dumped at the same
instant: cross-database consistency is not given by logical dumps (README, "Consistency of logical backups").
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from fault_helpers import cluster_project, real_bin_dir

from conftest import SUPERUSER_PASSWORD, clean_environment

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
        pytest.skip(f"pgbench is not installed beside the PostgreSQL binaries ({binary.parent})")
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
    writers = [subprocess.Popen(pgbench(live, "-n", "-T", "8", "-c", "2", "-j", "1", database),
                                env=pgbench_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for database in DATABASES]
    try:
        deadline = time.monotonic() + 30
        while min(invariant(live, database)[4] for database in DATABASES) < 50 and time.monotonic() < deadline:
            time.sleep(0.1)  # both databases are being written to
        live.ok("backup")
        assert all(writer.poll() is None for writer in writers), "pgbench stopped before the backup ended"
    finally:
        outcomes = [writer.communicate(timeout=60) + (writer.returncode,) for writer in writers]
    assert all(code == 0 for _, _, code in outcomes), outcomes
    final = {database: invariant(live, database) for database in DATABASES}

    live.ok("clean", "soft", "--yes")
    live.ok("restore", "latest")
    for database in DATABASES:
        history, accounts, tellers, branches, rows = invariant(live, database)
        assert accounts == tellers == branches == history, f"{database} is not consistent in itself"
        assert 0 < rows < final[database][4], f"the backup of {database} was not taken while pgbench wrote"
