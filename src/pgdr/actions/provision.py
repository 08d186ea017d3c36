"""pgdr init: idempotent provisioning, then numbered migrations.

Creates missing databases, roles and users, grants the conventional privileges, always (re)sets every
configured user's password (backups hold none), then runs NNN-name.sql / NNN-name.sh from migrations.dir in order.
Running it twice changes nothing the second time except the password verifiers' salts.
"""

from __future__ import annotations

import re
from pathlib import Path

from pgdr.config import Settings
from pgdr.context import Context
from pgdr.errors import ConfigError, PgdrError, ProvisionFailed, StageFailed
from pgdr.locking import locked
from pgdr.postgres import inventory, sql
from pgdr.postgres.connect import client_environment, session
from pgdr.postgres.sql import Statement
from pgdr.run import run

MIGRATION_PATTERN = re.compile(r"^(\d+)-[\w.-]+\.(sql|sh)$")


def build_plan(settings: Settings, existing_databases: set[str], passwords: dict[str, str]) -> list[Statement]:
    """Every statement init runs, in order. Pure: existing state and passwords come in as arguments."""
    superuser = settings.postgres.superuser
    plan: list[Statement] = []
    for database in settings.databases:
        if database.name not in existing_databases:
            plan.append(Statement(f"create database {database.name}", sql.create_database(database.name, superuser)))
        plan += sql.role_statements(database)
        for user in database.users():
            plan.append(sql.password_statement(user, passwords[user.password]))
        plan += sql.grant_statements(database, superuser)
    return plan


def migration_files(folder: Path | None) -> list[Path]:
    if folder is None or not folder.exists():
        return []
    files = [path for path in folder.iterdir() if MIGRATION_PATTERN.match(path.name)]
    strays = [path.name for path in folder.iterdir() if path.is_file() and path.suffix in (".sql", ".sh")
              and not MIGRATION_PATTERN.match(path.name)]
    if strays:
        raise ConfigError(f"migration files not named NNN-name.sql/.sh: {', '.join(sorted(strays))}",
                          "rename them, e.g. 001-create-tables.sql")
    return sorted(files, key=lambda path: (int(MIGRATION_PATTERN.match(path.name)[1]), path.name))  # type: ignore[index]


def execute(context: Context, statement: Statement) -> None:
    endpoint = context.superuser_endpoint(statement.database)
    if statement.secret:
        with session(endpoint, autocommit=False) as connection:
            connection.execute(sql.session_without_logging())  # type: ignore[call-overload]
            connection.execute(statement.sql)  # type: ignore[call-overload]
            connection.commit()
        return
    with session(endpoint) as connection:
        connection.execute(statement.sql)  # type: ignore[call-overload]


@locked("init")
def init(context: Context, dry_run: bool = False) -> list[Statement]:
    settings = context.settings
    passwords = {user.password: context.secrets.get(user.password)
                 for database in settings.databases for user in database.users()}
    existing = set(inventory.user_databases(context.superuser_endpoint()))
    plan = build_plan(settings, existing, passwords)
    migrations = migration_files(settings.migrations.dir)
    if dry_run:
        _print_plan(context, plan, migrations)
        return plan
    for statement in plan:
        try:
            execute(context, statement)
        except PgdrError:
            raise
        except Exception as error:  # psycopg errors: say which step, never the SQL of a secret step
            raise ProvisionFailed(f"init step '{statement.description}' failed: {str(error).strip().splitlines()[0]}",
                            "fix the cause above and run `pgdr init` again (it is idempotent)") from None
    context.output.success(f"Databases, roles and users in place ({len(settings.databases)} databases)")
    context.output.success("User passwords reset")
    run_migrations(context, migrations)
    return plan


def _print_plan(context: Context, plan: list[Statement], migrations: list[Path]) -> None:
    context.output.info("Plan (dry run, nothing changed):")
    for number, statement in enumerate(plan, 1):
        context.output.info(f"{number:3d}. [{statement.database}] {statement.description}")
        if not statement.secret:
            for line in statement.sql.split(";\n"):
                context.output.info(f"       {line}")
    for path in migrations:
        context.output.info(f"  migration {path.name}")


def run_migrations(context: Context, migrations: list[Path]) -> None:
    if not migrations:
        return
    toolset, _ = context.client_tools(("psql",))
    secrets = {name: context.secrets.get(name) for name in context.settings.secret_names()}
    with client_environment(context.superuser_endpoint()) as environment:
        for path in migrations:
            if path.suffix == ".sql":
                argv = [toolset.path("psql"), "--no-psqlrc", "--quiet", "--no-password", "--set", "ON_ERROR_STOP=1",
                        "--file", str(path)]
                child = environment
            else:
                argv = ["bash", str(path)]
                child = {**environment, **secrets}
            try:
                run(argv, stage=f"migration {path.name}", environment=child, cwd=str(path.parent), timeout=3600,
                    hint=f"fix {path} and run `pgdr init` again")
            except StageFailed as failure:
                raise ProvisionFailed(f"migration {path.name} failed: {failure.detail}", failure.hint) from None
            context.output.success(f"Migration {path.name} applied")
