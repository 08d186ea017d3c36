"""pgdr clean soft / hard.

soft: drop every user database and every role except the bootstrap superuser, and empty the `postgres`
database; the server keeps running. hard: stop the managed cluster and delete its data directory (local mode),
or run down_command (external mode).
"""

from __future__ import annotations

from pgdr.context import Context
from pgdr.errors import Refused
from pgdr.locking import locked
from pgdr.postgres import inventory, sql
from pgdr.postgres.connect import session
from pgdr.state import clear_restore_record


@locked("clean soft")
def clean_soft(context: Context, confirmed: bool = False) -> list[str]:
    superuser = context.settings.postgres.superuser
    endpoint = context.superuser_endpoint("template1")
    databases = inventory.user_databases(endpoint)
    roles = inventory.user_roles(endpoint, superuser)
    if not confirmed:
        context.confirm_destructive(
            f"Drop databases {', '.join(databases) or '(none)'} and roles {', '.join(roles) or '(none)'}"
        )
    with session(endpoint) as connection:
        for database in [*databases, "postgres"]:
            connection.execute(sql.drop_database(database))  # type: ignore[call-overload]
        connection.execute("CREATE DATABASE postgres")
    for role in roles:
        for database in ("postgres", "template1"):
            with session(endpoint.on(database)) as connection:
                for statement in sql.drop_role_statements(role, superuser):
                    connection.execute(statement)  # type: ignore[call-overload]
        with session(endpoint) as connection:
            connection.execute(f"DROP ROLE IF EXISTS {sql.identifier(role)}")  # type: ignore[call-overload]
    clear_restore_record(context.settings.state_dir)
    context.output.success(f"Cleaned: dropped {len(databases)} databases and {len(roles)} roles")
    return databases


def drop_database(context: Context, database: str) -> None:
    """Drop one database (restore --database --clean); roles stay, they may own objects elsewhere."""
    with session(context.superuser_endpoint("template1")) as connection:
        connection.execute(sql.drop_database(database))  # type: ignore[call-overload]
    context.output.success(f"Dropped database {database}")


@locked("clean hard")
def clean_hard(context: Context) -> None:
    postgres = context.settings.postgres
    if context.is_local:
        context.confirm_destructive(f"Stop the cluster and delete {postgres.data_dir}")
        context.cluster.remove()
        clear_restore_record(context.settings.state_dir)
        context.output.success(f"Cluster removed ({postgres.data_dir} deleted)")
        return
    if not postgres.down_command:
        raise Refused(
            "clean hard in external mode needs postgres.down_command (pgdr does not own that server's data)",
            "set down_command (e.g. \"docker compose down -v\") or use `pgdr clean soft`",
        )
    context.confirm_destructive(f"Run {postgres.down_command!r}")
    context.external.stop()
    clear_restore_record(context.settings.state_dir)
    context.output.success(f"Ran down_command: {postgres.down_command}")
