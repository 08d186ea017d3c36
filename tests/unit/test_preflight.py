"""Pre-flight against the target, the pure pieces: the queries that read a cluster's and a server's requirements,
what is missing, and the one refusal that lists all of it with its fix."""

from __future__ import annotations

from pgdr.artifact import ExtensionNeed, Requirements, TablespaceNeed
from pgdr.postgres.cluster import upgrade_hint
from pgdr.postgres.requirements import (
    Offer,
    database_needs_query,
    databases_query,
    directory_query,
    icu_probe,
    may_stat_files_query,
    offer_query,
    tablespaces_query,
)
from pgdr.preflight import (
    Shortfall,
    for_database,
    major_of,
    package_for,
    refusal_hint,
    refusal_message,
    shortfall_of,
)

NEEDS = Requirements(
    extensions=[ExtensionNeed(database="app", name="pgcrypto", version="1.3"),
                ExtensionNeed(database="shop", name="pgcrypto", version="1.3"),
                ExtensionNeed(database="app", name="postgis", version="3.4.2"),
                ExtensionNeed(database="app", name="plpgsql", version="1.0")],
    icu=["database app", "collation shop.public.german"],
    tablespaces=[TablespaceNeed(name="fast", location="/srv/fast"), TablespaceNeed(name="cold", location="/srv/cold")],
)
WHEEL = Offer(extensions=frozenset({"plpgsql", "pg_trgm"}), icu=False,
              directories={"/srv/fast": "missing", "/srv/cold": ""})


def test_the_locale_provider_is_read_only_from_servers_that_have_it():
    assert "datlocprovider" in databases_query(15)
    assert "datlocprovider" not in databases_query(14)
    assert "datallowconn" in databases_query(14)


def test_the_cluster_queries_read_the_catalogs_schema_qualified():
    for query in (databases_query(18), tablespaces_query(), database_needs_query(), offer_query()):
        assert "FROM pg_catalog." in query
        assert "FROM pg_" not in query.replace("FROM pg_catalog.", "")


def test_user_tablespaces_and_user_icu_collations_only():
    assert "NOT IN ('pg_default', 'pg_global')" in tablespaces_query()
    assert "pg_tablespace_location" in tablespaces_query()
    assert "collprovider = 'i' AND n.nspname <> 'pg_catalog'" in database_needs_query()
    assert "pg_extension" in database_needs_query() and "extversion" in database_needs_query()


def test_icu_support_is_judged_by_imported_icu_collations_not_the_built_in_unicode_one():
    assert "LIKE '%-x-icu'" in offer_query()
    assert "pg_available_extensions" in offer_query()


def test_the_icu_probe_creates_only_a_temporary_collation():
    assert icu_probe().startswith("CREATE COLLATION pg_temp.")
    assert "provider = icu" in icu_probe()


def test_a_directory_location_from_the_backup_is_a_parameter_never_spliced_into_sql():
    assert directory_query() == "SELECT (pg_catalog.pg_stat_file(%s, true)).isdir"


def test_directories_are_looked_at_only_by_a_login_allowed_to_read_server_files():
    assert "pg_has_role('pg_read_server_files', 'USAGE')" in may_stat_files_query()
    assert "has_function_privilege('pg_catalog.pg_stat_file(text, boolean)', 'EXECUTE')" in may_stat_files_query()


def test_the_shortfall_is_what_the_target_lacks():
    shortfall = shortfall_of(NEEDS, WHEEL)
    assert [need.name for need in shortfall.extensions] == ["pgcrypto", "pgcrypto", "postgis"]
    assert shortfall.icu == ["database app", "collation shop.public.german"]
    assert shortfall.tablespaces == [(TablespaceNeed(name="fast", location="/srv/fast"), "missing")]


def test_a_server_with_everything_leaves_no_shortfall():
    offer = Offer(extensions=frozenset({"plpgsql", "pgcrypto", "postgis"}), icu=True,
                  directories={"/srv/fast": "", "/srv/cold": ""})
    assert not shortfall_of(NEEDS, offer)
    assert not shortfall_of(Requirements(), WHEEL)


def test_a_location_the_server_was_not_asked_about_counts_as_missing():
    needs = Requirements(tablespaces=[TablespaceNeed(name="x", location="/x")])
    assert shortfall_of(needs, Offer(frozenset(), True)).tablespaces == [(needs.tablespaces[0], "missing")]


def test_one_message_lists_every_missing_thing_with_versions_and_databases():
    message = refusal_message("20250101/postgres-all-20250101-000000.sql.gz", 18, shortfall_of(NEEDS, WHEEL))
    assert message.startswith("backup 20250101/postgres-all-20250101-000000.sql.gz needs what the target server "
                              "(PostgreSQL 18) lacks: ")
    assert "pgcrypto 1.3 (databases app, shop)" in message
    assert "postgis 3.4.2 (database app)" in message
    assert "plpgsql" not in message
    assert "ICU (this server is built without it), used by database app, collation shop.public.german" in message
    assert "/srv/fast (tablespace fast) missing" in message and "/srv/cold" not in message
    assert message.endswith("refused before anything was changed")


def test_names_from_the_backup_cannot_break_the_message_into_lines():
    shortfall = Shortfall(extensions=[ExtensionNeed(database="a\n❌ fake", name="x\r\ny", version="1\n")],
                          icu=["database b\nc"], tablespaces=[(TablespaceNeed(name="t\n", location="/d\n"), "missing")])
    message = refusal_message("k", 18, shortfall)
    hint = refusal_hint(shortfall, 18, local=True, os_user="postgres")
    assert "\n" not in message and "\r" not in message and "\n" not in hint


def test_the_hint_names_packages_and_binaries_for_a_managed_cluster():
    hint = refusal_hint(shortfall_of(NEEDS, WHEEL), 18, local=True, os_user="postgres")
    assert "apt install postgresql-18 postgresql-18-postgis-3" in hint
    assert "postgres.bin_dir" in hint
    assert "built with ICU" in hint
    assert "mkdir -p /srv/fast && chown postgres: /srv/fast && chmod 700 /srv/fast" in hint


def test_the_hint_for_an_external_server_points_at_the_server_not_bin_dir():
    shortfall = Shortfall(extensions=NEEDS.extensions[:1], icu=["database app"])
    hint = refusal_hint(shortfall, 17, local=False, os_user="pgdr_unused")
    assert "postgres.bin_dir" not in hint
    assert "apt install postgresql-17" in hint and "server built with ICU" in hint


def test_a_tablespace_directory_with_spaces_is_quoted_in_the_command():
    shortfall = Shortfall(tablespaces=[(TablespaceNeed(name="t", location="/srv/my space"), "missing")])
    assert "mkdir -p '/srv/my space'" in refusal_hint(shortfall, 18, local=True, os_user="postgres")


def test_packages_of_contrib_postgis_and_others():
    assert package_for("uuid-ossp", 18) == "postgresql-18"
    assert package_for("postgis_topology", 16) == "postgresql-16-postgis-3"
    assert package_for("vector", 17) == "postgresql-17-pgvector"
    assert package_for("pg_hint_plan", 18) == "postgresql-18-pg-hint-plan"


def test_one_database_needs_only_its_own_extensions_and_icu_but_every_tablespace():
    needs = for_database(NEEDS, "shop")
    assert [(need.database, need.name) for need in needs.extensions] == [("shop", "pgcrypto")]
    assert needs.icu == ["collation shop.public.german"]
    assert needs.tablespaces == NEEDS.tablespaces
    assert for_database(NEEDS, None) is NEEDS


def test_the_major_version_of_a_manifest_server_version():
    assert major_of("PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu") == 15
    assert major_of("18.1") == 18
    assert major_of("") == 0


def test_up_over_an_older_data_directory_names_the_upgrade_by_restore():
    hint = upgrade_hint(15, 18)
    assert "docs/UPGRADE.md" in hint and "PostgreSQL 15 binaries" in hint
    assert "`pgdr clean hard --yes`, `pgdr up`, `pgdr restore latest`, `pgdr init`, `pgdr verify`" in hint
