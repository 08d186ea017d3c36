"""The tables' files as the catalog names them now, database by database: what `pgdr wal timeline` names the
relation files of the WAL by (pgdr.wal.names), and what a physical base backup records of the catalog it starts
from (a table dropped since is named from there)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from pgdr.artifact import RelationName
from pgdr.errors import PgdrError
from pgdr.postgres.connect import Endpoint, connect, translate_error

DATABASES_SQL = "SELECT oid::int, datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname"
# reltablespace 0 is the database's default tablespace; pg_relation_filenode resolves mapped catalogs too
RELATIONS_SQL = """
SELECT CASE WHEN c.reltablespace = 0 THEN d.dattablespace ELSE c.reltablespace END::int,
       pg_catalog.pg_relation_filenode(c.oid)::bigint, c.oid::int, n.nspname, c.relname, c.relkind::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database()
WHERE c.relkind IN ('r', 'm', 't') AND pg_catalog.pg_relation_filenode(c.oid) IS NOT NULL
"""


def read_relation_names(endpoint: Endpoint) -> list[RelationName]:
    """Every table, materialized view and TOAST table of every database that accepts connections."""
    with connect(endpoint) as connection:
        databases = [(int(row[0]), str(row[1])) for row in connection.execute(DATABASES_SQL)]
    found = []
    for oid, name in databases:
        with connect(endpoint.on(name)) as connection:
            for row in connection.execute(RELATIONS_SQL):
                found.append(RelationName(database_oid=oid, database=name, tablespace=row[0], relfilenode=row[1],
                                          table_oid=row[2], schema_name=row[3], name=row[4], kind=row[5]))
    return found


def relation_names(endpoint: Endpoint, warn: Callable[[str], None], without: str) -> list[RelationName]:
    """read_relation_names, or none when the catalog cannot be read: `warn` says why and what that means
    (`without`); the caller goes on."""
    try:
        return read_relation_names(endpoint)
    except (PgdrError, psycopg.Error) as error:
        message = (error if isinstance(error, PgdrError) else translate_error(error, endpoint)).message
        warn(f"the tables' names could not be read ({message}): {without}")
        return []
