"""The split format (globals + one `pg_dump -Fc` per database, restored with `pg_restore --jobs 4`, four databases
at a time) restored object for object: into a fresh cluster, with --clean over a populated one, and five times in a
row with --clean (parallel restores race: each one must be clean). Each time the restored cluster dumps exactly like
the source (fixture.sql), template1 included, and the catalogs agree on what pg_dumpall does not print. The one
documented difference: the database that allows no connections is left out of the backup, and the backup says so.

One source cluster and one backup serve the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fidelity.fidelity_helpers import (
    SPLIT,
    Source,
    assert_clean_restore_over_populated_is_faithful,
    assert_fresh_restore_is_faithful,
    assert_left_out_and_properties_recorded,
    assert_same_cluster,
    backed_up_fixture,
    cluster,
    copy_backup,
)

RESTORES_IN_A_ROW = 5


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    with backed_up_fixture("pgdr-fidelity-split-", SPLIT) as backed_up:
        yield backed_up


def test_backup_names_the_unconnectable_database_as_left_out_and_keeps_postgres_and_template1_properties(
        source: Source) -> None:
    assert source.key.endswith(".split")
    assert_left_out_and_properties_recorded(source)


def test_restore_into_a_fresh_cluster_dumps_like_the_source(source: Source) -> None:
    assert_fresh_restore_is_faithful(source, "fresh")


def test_restore_clean_over_a_populated_cluster_dumps_like_the_source(source: Source) -> None:
    assert_clean_restore_over_populated_is_faithful(source, "populated")


def test_five_clean_restores_in_a_row_each_dump_like_the_source(source: Source) -> None:
    """The first restore finds a fresh cluster, every later one cleans the previous restore away first."""
    with cluster(source.parent, "repeated", *source.backup_options) as target:
        copy_backup(source.project, target, source.key)
        for attempt in range(1, RESTORES_IN_A_ROW + 1):
            target.ok("restore", "latest", "--clean", "--yes")
            assert_same_cluster(source.expected, target, f"restore {attempt} of {RESTORES_IN_A_ROW} in a row")
