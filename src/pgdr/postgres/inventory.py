"""What a server holds: user databases, roles, sizes, row counts. Read-only queries."""

from __future__ import annotations

import psycopg

from pgdr.postgres import sql
from pgdr.postgres.connect import Endpoint, session


def user_databases(endpoint: Endpoint) -> list[str]:
    with session(endpoint) as connection:
        return [row[0] for row in connection.execute(sql.user_databases_query())]  # type: ignore[call-overload]


def user_roles(endpoint: Endpoint, superuser: str) -> list[str]:
    with session(endpoint) as connection:
        return [row[0] for row in connection.execute(sql.user_roles_query(superuser))]  # type: ignore[call-overload]


def user_tables(endpoint: Endpoint) -> list[tuple[str, str]]:
    with session(endpoint) as connection:
        return [(row[0], row[1]) for row in connection.execute(sql.table_counts_query())]  # type: ignore[call-overload]


def database_sizes(endpoint: Endpoint) -> list[tuple[str, int]]:
    query = (
        "SELECT datname, pg_catalog.pg_database_size(datname) FROM pg_catalog.pg_database "
        "WHERE datallowconn ORDER BY datname"
    )
    with session(endpoint) as connection:
        return [(row[0], int(row[1])) for row in connection.execute(query)]  # type: ignore[call-overload]


def row_counts(endpoint: Endpoint) -> dict[tuple[str, str], int]:
    """Exact row counts of every user table in endpoint's database."""
    with session(endpoint) as connection:
        return counts_in(connection)


def counts_in(connection: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Exact row counts of every user table, read on an open connection (and so in its snapshot)."""
    tables = [(row[0], row[1]) for row in connection.execute(sql.table_counts_query())]  # type: ignore[call-overload]
    counts = {}
    for schema, table in tables:
        row = connection.execute(sql.count_rows(schema, table)).fetchone()  # type: ignore[call-overload]
        counts[(schema, table)] = int(row[0]) if row else 0
    return counts


def extension_configuration_tables(endpoint: Endpoint) -> list[tuple[str, str]]:
    """Tables an extension marked with pg_extension_config_dump: the dump holds only rows users added."""
    with session(endpoint) as connection:
        return [(row[0], row[1]) for row in connection.execute(  # type: ignore[call-overload]
            sql.extension_configuration_tables_query())]
