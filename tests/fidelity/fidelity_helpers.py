"""Helpers for the fidelity tier: a restore is judged the way pg_upgrade's own test judges an upgrade. The source
cluster and the restored one are dumped with the same pg_dumpall and the two scripts must be equal; what pg_dumpall
does not print (the flags, comments and ACLs of pg_database, the settings in pg_db_role_setting, the comment and
settings of `postgres` and `template1`, extension versions) is read from the catalogs of both and compared too.

The normalisation is the least that two dumps of the same cluster need: the random keys of pg_dump's `\\restrict`
and `\\unrestrict` lines, and the order of the lines of one run of `ALTER DEFAULT PRIVILEGES` statements. The
server keeps a default ACL sorted by role OID (SetDefaultACL sorts it before storing it), pg_dump prints it in that
order, and a restore cannot keep the source's role OIDs (pg_upgrade can: it sets them in binary-upgrade mode).
Nothing else is rewritten: any other difference is a difference.

Imported as fidelity.fidelity_helpers; named fidelity_helpers so it cannot clash with another tier's helpers.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from end_to_end.e2e_helpers import real_bin_dir
from harness import Project, project_config
from security.security_helpers import (
    module_workdir,
    new_project,
    set_backup_options,
    stop_cluster,
    superuser_environment,
)

FIXTURE = Path(__file__).with_name("fixture.sql")
LEFT_OUT_DATABASE = "closed_db"  # fixture.sql makes it datallowconn = false: pg_dumpall cannot connect to dump it
SPLIT = ('format = "split"', "jobs = 4")
PLAIN = ("jobs = 4",)  # jobs > 1: the plain format restores database by database where the dump proves the parts

RESTRICT_LINE = re.compile(r"^\\(restrict|unrestrict) [A-Za-z0-9]+$")
DEFAULT_ACL = "ALTER DEFAULT PRIVILEGES "

# What a source-like cluster holds that the backup does not: a restore --clean over it must leave none of it.
# template1 gets a second table (kept by a template1 that is not recreated, and copied into every database created
# from it, postgres included); postgres gets a subscription (DROP DATABASE refuses while one is in it), and both
# get another comment and more settings.
STALE_OBJECTS = r"""
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE ROLE stale_role LOGIN;
CREATE DATABASE stale_database TEMPLATE template0;
COMMENT ON DATABASE postgres IS 'stale comment on postgres';
ALTER DATABASE postgres SET maintenance_work_mem = '99MB';
ALTER ROLE stale_role IN DATABASE postgres SET work_mem = '99MB';
CREATE TABLE public.stale_in_postgres (id int);
CREATE SUBSCRIPTION stale_subscription CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' PUBLICATION stale
    WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE);
\connect template1
SET client_min_messages = warning;
CREATE TABLE tpl.stale_in_template1 (id int);
COMMENT ON DATABASE template1 IS 'stale comment on template1';
ALTER DATABASE template1 SET maintenance_work_mem = '98MB';
"""

# Catalog facts pg_dumpall does not print, compared between source and restore. The ACL of a database is compared
# as the privileges it grants: NULL stands for the default ACL, and the order of an ACL's entries means nothing.
# (initdb's template1 grants PUBLIC only CONNECT; a template1 created again from template0 has a NULL ACL, which
# grants PUBLIC TEMPORARY too, unless its ACL is put back.)
DATABASES_QUERY = """
SELECT d.datname, pg_catalog.pg_get_userbyid(d.datdba), pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate,
       d.datctype, d.datlocprovider, d.daticulocale, d.datallowconn, d.datistemplate, d.datconnlimit,
       ARRAY(SELECT a::text FROM unnest(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) AS a ORDER BY 1),
       pg_catalog.shobj_description(d.oid, 'pg_database')
FROM pg_catalog.pg_database AS d WHERE d.datname <> ALL(%(excluded)s) ORDER BY d.datname
"""
ROLE_SETTINGS_QUERY = """
SELECT coalesce(d.datname, '(all databases)'), coalesce(r.rolname, '(all roles)'),
       ARRAY(SELECT c FROM unnest(s.setconfig) AS c ORDER BY 1)
FROM pg_catalog.pg_db_role_setting AS s
LEFT JOIN pg_catalog.pg_database AS d ON d.oid = s.setdatabase
LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = s.setrole
WHERE d.datname IS NULL OR d.datname <> ALL(%(excluded)s) ORDER BY 1, 2
"""
EXTENSIONS_QUERY = "SELECT extname, extversion FROM pg_catalog.pg_extension ORDER BY 1"


# The normaliser ---------------------------------------------------------------------------------------------------

def normalised(dump: str) -> str:
    """The dump with the key of every `\\restrict KEY` / `\\unrestrict KEY` line replaced by KEY, and each run of
    adjacent `ALTER DEFAULT PRIVILEGES` lines sorted. Everything else is kept byte for byte and in order: a row or a
    statement added, lost, changed or moved still shows, and so does a default privilege added, lost or changed."""
    output: list[str] = []
    run: list[str] = []
    for line in [*dump.split("\n"), None]:
        if line is not None and line.startswith(DEFAULT_ACL):
            run.append(line)
            continue
        output += sorted(run)
        run = []
        if line is not None:
            match = RESTRICT_LINE.match(line)
            output.append(f"\\{match.group(1)} KEY" if match else line)
    return "\n".join(output)


def difference(expected: str, actual: str, limit: int = 80) -> str:
    """A unified diff (source -> restored) cut to `limit` lines, saying how many more there are."""
    lines = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), "source", "restored",
                                      lineterm="", n=2))
    more = f"\n... and {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def assert_no_difference(expected: str, actual: str, what: str) -> None:
    assert actual == expected, f"{what} differs (first differing lines):\n{difference(expected, actual)}"


# Clusters -----------------------------------------------------------------------------------------------------------

def psql_file(project: Project, path: Path | None = None, script: str | None = None,
              variables: dict[str, str] | None = None) -> None:
    """Run a SQL file (or script text) with psql as the superuser, stopping at the first error."""
    argv = [str(real_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for name, value in (variables or {}).items():
        argv += ["-v", f"{name}={value}"]
    result = subprocess.run([*argv, "-f", str(path) if path else "-"], input=(script or "").encode(),
                            capture_output=True, check=False, timeout=300,
                            env={**superuser_environment(project), "LC_ALL": "C.UTF-8"})
    assert result.returncode == 0, f"psql {path or 'script'} failed:\n{result.stderr.decode(errors='replace')}"


@contextmanager
def cluster(parent: Path, name: str, *backup_options: str, init: bool = False,
            fixture: bool = False) -> Iterator[Project]:
    """A project with its own cluster up (`pgdr up`; `pgdr init` with init; fixture.sql loaded with fixture),
    backup_options added to its [backup] table; the cluster is stopped after."""
    project = new_project(parent, name, project_config)
    if backup_options:
        set_backup_options(project, *backup_options)
    try:
        project.ok("up")
        if init:
            project.ok("init")
        if fixture:
            psql_file(project, FIXTURE)
        yield project
    finally:
        stop_cluster(project)


def copy_backup(source: Project, target: Project, key: str) -> None:
    """A backup (a plain file, or a split backup's folder) and then its manifest into target's backup dir."""
    origin, destination = source.backups / key, target.backups / key
    destination.parent.mkdir(parents=True, exist_ok=True)
    if origin.is_dir():
        shutil.copytree(origin, destination)
    else:
        shutil.copyfile(origin, destination)
    shutil.copyfile(source.backups / (key + ".manifest.json"), target.backups / (key + ".manifest.json"))


def newest_key(project: Project) -> str:
    return str(json.loads(project.ok("list", "--json").stdout)[-1]["key"])


def manifest_of(project: Project, key: str) -> dict[str, Any]:
    return json.loads((project.backups / (key + ".manifest.json")).read_text())


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# What a cluster is, for the comparison ----------------------------------------------------------------------------

def pg_dumpall(project: Project) -> str:
    """pg_dumpall --no-role-passwords of the whole cluster (the same binaries for every cluster), normalised."""
    result = subprocess.run([str(real_bin_dir() / "pg_dumpall"), "--no-password", "--no-role-passwords"],
                            capture_output=True, check=False, timeout=300, env=superuser_environment(project))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return normalised(result.stdout.decode())


def catalog_facts(project: Project, excluded: tuple[str, ...] = (LEFT_OUT_DATABASE,),
                  databases_query: str = DATABASES_QUERY) -> str:
    """What pg_dumpall does not print, one fact a line, so that two clusters can be diffed like two dumps."""
    lines: list[str] = []
    parameters = {"excluded": list(excluded)}
    with project.connect() as connection:
        lines += ["database " + " | ".join(map(repr, row)) for row in connection.execute(databases_query, parameters)]
        lines += ["setting " + " | ".join(map(repr, row)) for row in connection.execute(ROLE_SETTINGS_QUERY,
                                                                                         parameters)]
        databases = [row[0] for row in connection.execute(
            "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY 1")]
    for database in databases:
        with project.connect(database) as connection:
            lines += [f"extension {database!r} " + " | ".join(map(repr, row))
                      for row in connection.execute(EXTENSIONS_QUERY)]
    return "\n".join(lines)


Snapshot = tuple[str, str]  # (normalised pg_dumpall, catalog facts)


def snapshot(project: Project) -> Snapshot:
    return pg_dumpall(project), catalog_facts(project)


def assert_same_cluster(expected: Snapshot, restored: Project, what: str) -> None:
    dump, facts = snapshot(restored)
    assert_no_difference(expected[0], dump, f"pg_dumpall of {what}")
    assert_no_difference(expected[1], facts, f"the catalogs (what pg_dumpall does not print) of {what}")


# The source of a module, and the checks both formats share ----------------------------------------------------------

@dataclass
class Source:
    """One backed-up fixture cluster for a whole module: its project, backup key, the backup's output, and what a
    restore of it must give."""

    project: Project
    key: str
    backup_output: str
    expected: Snapshot
    parent: Path
    backup_options: tuple[str, ...]


@contextmanager
def backed_up_fixture(prefix: str, backup_options: tuple[str, ...]) -> Iterator[Source]:
    """The fixture cluster (`pgdr up`, `pgdr init`, fixture.sql), backed up once with `pgdr backup`."""
    with module_workdir(prefix) as parent, cluster(parent, "source", *backup_options, init=True,
                                                   fixture=True) as project:
        result = project.ok("backup")
        key = newest_key(project)
        yield Source(project, key, output_of(result), snapshot(project), parent, backup_options)


def assert_left_out_and_properties_recorded(source: Source) -> None:
    """The unconnectable database is named in the manifest's left_out (with a reason) and in the backup's output;
    the comment and settings of postgres and template1 are in database_properties."""
    manifest = manifest_of(source.project, source.key)
    left_out = manifest["left_out"]
    assert [item["name"] for item in left_out] == [LEFT_OUT_DATABASE], left_out
    assert str(left_out[0]["reason"]).strip(), left_out
    assert LEFT_OUT_DATABASE in source.backup_output, f"the backup does not say it left {LEFT_OUT_DATABASE} out:\n" \
                                                      f"{source.backup_output}"
    properties = {item["name"]: item for item in manifest["database_properties"]}
    assert properties["postgres"]["comment"] == "postgres, commented:\nwith 'quotes'"
    assert properties["postgres"]["settings"] == ["work_mem=8MB"]
    assert properties["postgres"]["role_settings"] == [{"role": "app", "setting": "search_path=a, b"}]
    assert properties["template1"]["comment"] == "template1, ours:\nwith 'quotes'"
    assert properties["template1"]["settings"] == ["work_mem=6MB"]
    assert properties["template1"]["role_settings"] == [{"role": "reader", "setting": "statement_timeout=7s"}]


def assert_fresh_restore_is_faithful(source: Source, name: str) -> None:
    """`pgdr restore latest` into a fresh cluster (a second project, only `pgdr up`) gives the source back."""
    with cluster(source.parent, name, *source.backup_options) as target:
        copy_backup(source.project, target, source.key)
        target.ok("restore", "latest")
        assert_same_cluster(source.expected, target, f"a fresh cluster restored from {source.key}")


def assert_clean_restore_over_populated_is_faithful(source: Source, name: str) -> None:
    """`pgdr restore latest --clean --yes` over a cluster like the source (the fixture, with a template1 schema and a
    subscription) plus stale objects of its own gives exactly the source back: template1 and postgres recreated from
    template0, the subscriptions dropped before their databases, nothing stale left."""
    with cluster(source.parent, name, *source.backup_options, init=True, fixture=True) as target:
        psql_file(target, script=STALE_OBJECTS)
        with target.connect() as connection:
            subscriptions = sorted(row[0] for row in connection.execute("SELECT subname FROM pg_subscription"))
        assert subscriptions == ["stale_subscription", "sub ünï"], "the populated cluster is not what it should be"
        copy_backup(source.project, target, source.key)
        target.ok("restore", "latest", "--clean", "--yes")
        assert_same_cluster(source.expected, target, f"a populated cluster restored with --clean from {source.key}")
