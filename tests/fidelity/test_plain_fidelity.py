"""The plain format (one pg_dumpall script) restored object for object: a backup of the fixture cluster
(fixture.sql) restored into a fresh cluster, and with --clean over a populated one, dumps exactly like the source,
and the catalogs agree on what pg_dumpall does not print. The one documented difference: the database that allows no
connections is left out of the backup, and the backup says so.

One source cluster and one backup serve the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fidelity.fidelity_helpers import (
    PLAIN,
    Source,
    assert_clean_restore_over_populated_is_faithful,
    assert_fresh_restore_is_faithful,
    assert_left_out_and_properties_recorded,
    backed_up_fixture,
)


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    with backed_up_fixture("pgdr-fidelity-plain-", PLAIN) as backed_up:
        yield backed_up


def test_backup_names_the_unconnectable_database_as_left_out_and_keeps_postgres_and_template1_properties(
        source: Source) -> None:
    assert source.key.endswith(".sql.gz")
    assert_left_out_and_properties_recorded(source)


def test_restore_into_a_fresh_cluster_dumps_like_the_source(source: Source) -> None:
    assert_fresh_restore_is_faithful(source, "fresh")


def test_restore_clean_over_a_populated_cluster_dumps_like_the_source(source: Source) -> None:
    assert_clean_restore_over_populated_is_faithful(source, "populated")
