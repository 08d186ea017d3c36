"""PostGIS restored object for object: a database with postgis, postgis_topology and postgis_raster (when built),
a topology with a few edges and a TopoGeometry column, a raster under PostGIS's own constraints, and rows users added
to spatial_ref_sys (pg_dump dumps only those rows of that extension table). Backed up in the plain and in the split
format, each backup restored into a fresh cluster must dump exactly like the source, pass `pgdr verify` after
`pgdr init`, and pass `pgdr drill`.

PostGIS is a system package (.ci/run installs postgresql-<major>-postgis-3 for the PostgreSQL it finds); without
it these tests are skipped with the reason, and CI's skip check fails the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fidelity.fidelity_helpers import (
    PLAIN,
    Snapshot,
    assert_same_cluster,
    cluster,
    copy_backup,
    newest_key,
    psql_file,
    snapshot,
)
from harness import Project
from security.security_helpers import module_workdir, set_backup_options

POSTGIS = Path(__file__).with_name("postgis.sql")
FACTS = {
    "rows users added to spatial_ref_sys": "SELECT count(*) FROM public.spatial_ref_sys WHERE auth_name = 'pgdr'",
    "places": "SELECT count(*) FROM public.places",
    "topology edges": "SELECT count(*) FROM city_topo.edge_data",
    "topology faces": "SELECT count(*) FROM city_topo.face WHERE face_id > 0",
    "topology layers": "SELECT count(*) FROM topology.layer",
    "roads with a TopoGeometry": "SELECT count(*) FROM public.roads WHERE topo IS NOT NULL",
}
RASTER = "raster columns under PostGIS's constraints"
RASTER_QUERY = "SELECT count(*) FROM public.raster_columns WHERE r_table_name = 'elevation' AND srid = 4326"


@dataclass
class GisSource:
    project: Project
    keys: dict[str, str]  # format -> backup key
    expected: Snapshot
    facts: dict[str, int]
    parent: Path


def available_extensions(project: Project) -> set[str]:
    with project.connect() as connection:
        return {row[0] for row in connection.execute("SELECT name FROM pg_catalog.pg_available_extensions")}


def server_major(project: Project) -> int:
    with project.connect() as connection:
        return int(connection.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0])


def gis_facts(project: Project, raster: bool) -> dict[str, int]:
    queries = {**FACTS, RASTER: RASTER_QUERY} if raster else FACTS
    with project.connect("gis") as connection:
        return {what: int(connection.execute(query).fetchone()[0]) for what, query in queries.items()}


@pytest.fixture(scope="module")
def gis() -> Iterator[GisSource]:
    with module_workdir("pgdr-fidelity-postgis-") as parent, cluster(parent, "source", *PLAIN, init=True) as project:
        available = available_extensions(project)
        if not {"postgis", "postgis_topology"} <= available:
            major = server_major(project)
            pytest.skip(f"PostGIS is not installed for PostgreSQL {major} (apt-get install "
                        f"postgresql-{major}-postgis-3; .ci/run does)")
        raster = "postgis_raster" in available
        psql_file(project, POSTGIS, variables={"have_raster": str(raster).lower()})
        facts = gis_facts(project, raster)
        assert facts["rows users added to spatial_ref_sys"] == 2 and facts["topology edges"] >= 6, facts
        assert facts["roads with a TopoGeometry"] == 2 and facts.get(RASTER, 1) == 1, facts  # what postgis.sql made
        keys = {}
        project.ok("backup")
        keys["plain"] = newest_key(project)
        set_backup_options(project, 'format = "split"')
        project.ok("backup")
        keys["split"] = newest_key(project)
        yield GisSource(project, keys, snapshot(project), facts, parent)


@pytest.mark.parametrize("backup_format", ["plain", "split"])
def test_postgis_restores_into_a_fresh_cluster_like_the_source_and_verifies(gis: GisSource,
                                                                            backup_format: str) -> None:
    key = gis.keys[backup_format]
    with cluster(gis.parent, f"fresh-{backup_format}", *PLAIN) as target:
        copy_backup(gis.project, target, key)
        target.ok("restore", "latest")
        assert_same_cluster(gis.expected, target, f"a fresh cluster restored from {key}")
        assert gis_facts(target, RASTER in gis.facts) == gis.facts
        target.ok("init")
        result = target.ok("verify")
        assert "row counts match backup" in result.stdout + result.stderr


@pytest.mark.parametrize("backup_format", ["plain", "split"])
def test_postgis_backup_passes_a_drill(gis: GisSource, backup_format: str) -> None:
    key = gis.keys[backup_format]
    report = json.loads(gis.project.ok("drill", "--file", key, "--json").stdout)
    assert (report["outcome"], report["key"]) == ("ok", key)
    assert list(report["steps"]) == ["up", "restore", "secrets", "init", "verify"]
