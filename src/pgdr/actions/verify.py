"""pgdr verify: prove the recovery worked, the way the application will use it.

Every configured user logs in over TCP with its password; the readwrite user can create and write a table, the
readonly user can read it but not write; every configured database exists; every database of the backup restored
last is back, with its manifest's row counts; then verify.command runs with DATABASE_URL of the readwrite user.
Nothing to check at all is a failure (`--allow-empty` accepts it): an empty report is not a proof.
"""

from __future__ import annotations

import secrets as random
import shlex
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg

from pgdr.artifact import Manifest
from pgdr.config import DatabaseSettings
from pgdr.context import Context
from pgdr.errors import PgdrError, StageFailed, VerifyFailed
from pgdr.postgres import inventory
from pgdr.postgres.connect import Endpoint, session
from pgdr.postgres.sql import identifier
from pgdr.run import child_environment, run
from pgdr.state import read_restore_record


@dataclass
class VerifyReport:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append((name, passed, detail))

    @property
    def failures(self) -> list[tuple[str, bool, str]]:
        return [check for check in self.checks if not check[1]]


def user_endpoint(context: Context, database: DatabaseSettings, readonly: bool) -> Endpoint:
    user = database.readonly_user if readonly else database.readwrite_user
    assert user is not None
    return context.superuser_endpoint(database.name).as_user(user.name, context.secrets.get(user.password))


def check_privileges(context: Context, database: DatabaseSettings, report: VerifyReport) -> None:
    """readwrite creates, writes and drops a scratch table; readonly reads it and is refused a write."""
    table = identifier(f"pgdr_verify_{random.token_hex(4)}")
    writer = user_endpoint(context, database, readonly=False)
    try:
        with session(writer) as connection:
            connection.execute(f"CREATE TABLE public.{table} (id integer)")  # type: ignore[call-overload]
            connection.execute(f"INSERT INTO public.{table} VALUES (1)")  # type: ignore[call-overload]
    except psycopg.Error as error:
        report.add(f"{database.name}: {writer.user} can write", False, str(error).strip().splitlines()[0])
        return
    report.add(f"{database.name}: {writer.user} can write", True)
    try:
        if database.readonly_user is not None:
            _check_readonly(context, database, table, report)
    finally:
        with session(writer) as connection:
            connection.execute(f"DROP TABLE IF EXISTS public.{table}")  # type: ignore[call-overload]


def _check_readonly(context: Context, database: DatabaseSettings, table: str, report: VerifyReport) -> None:
    reader = user_endpoint(context, database, readonly=True)
    with session(reader) as connection:
        try:
            connection.execute(f"SELECT count(*) FROM public.{table}")  # type: ignore[call-overload]
            report.add(f"{database.name}: {reader.user} can read tables the readwrite user creates", True)
        except psycopg.errors.InsufficientPrivilege:
            report.add(f"{database.name}: {reader.user} can read", False, "SELECT refused (default privileges missing)")
        try:
            connection.execute(f"INSERT INTO public.{table} VALUES (2)")  # type: ignore[call-overload]
            report.add(f"{database.name}: {reader.user} cannot write", False, "INSERT was allowed")
        except psycopg.errors.InsufficientPrivilege:
            report.add(f"{database.name}: {reader.user} cannot write", True)


def check_logins(context: Context, database: DatabaseSettings, report: VerifyReport) -> None:
    for readonly in (False, True):
        if readonly and database.readonly_user is None:
            continue
        endpoint = user_endpoint(context, database, readonly)
        try:
            with session(endpoint) as connection:
                connection.execute("SELECT 1")
            report.add(f"{database.name}: {endpoint.user} logs in over TCP", True)
        except PgdrError as error:
            report.add(f"{database.name}: {endpoint.user} logs in over TCP", False, f"{error.message} ({error.hint})")


def check_backup_contents(context: Context, manifest: Manifest, report: VerifyReport, row_counts: bool) -> None:
    """Every database of the manifest is back, with the rows the backup holds. An extension's configuration
    tables (PostGIS's spatial_ref_sys) are left out and said so: CREATE EXTENSION fills them and the dump holds
    only the rows users added, so their counts cannot match."""
    present = set(inventory.user_databases(context.superuser_endpoint())) | {"postgres", "template1"}
    for contents in manifest.databases:
        if contents.name not in present:
            report.add(f"database {contents.name} of backup {manifest.key} is restored", False,
                       "it is missing: restore again (`pgdr restore latest --clean`)")
            continue
        if not contents.tables or not row_counts:
            continue
        endpoint = context.superuser_endpoint(contents.name)
        actual, configuration = inventory.row_counts(endpoint), set(inventory.extension_configuration_tables(endpoint))
        wrong = [
            f"{schema}.{table}: {actual.get((schema, table), 'missing')} (backup: {rows})"
            for (schema, table), rows in contents.counts().items()
            if actual.get((schema, table)) != rows and (schema, table) not in configuration
        ]
        skipped = sorted(f"{schema}.{table}" for schema, table in configuration if (schema, table) in contents.counts())
        name = f"{contents.name}: row counts match backup {manifest.key}"
        if skipped:
            name += f" (not compared, extension configuration tables: {', '.join(skipped)})"
        report.add(name, not wrong, "; ".join(wrong[:5]))


def database_url(endpoint: Endpoint) -> str:
    return (f"postgresql://{quote(endpoint.user, safe='')}:{quote(endpoint.password, safe='')}@"
            f"{endpoint.host}:{endpoint.port}/{quote(endpoint.database, safe='')}")


def run_app_check(context: Context, report: VerifyReport) -> None:
    command = context.settings.verify.command
    if not command or not context.settings.databases:
        return
    endpoint = user_endpoint(context, context.settings.databases[0], readonly=False)
    environment = child_environment({"DATABASE_URL": database_url(endpoint)})
    try:
        run(shlex.split(command), stage="verify.command", environment=environment, cwd=str(context.settings.base_dir),
            timeout=1800)
        report.add(f"verify.command ({command})", True)
    except StageFailed as failure:
        report.add(f"verify.command ({command})", False, failure.detail)


def verify(context: Context, row_counts: bool = True, allow_empty: bool = False) -> VerifyReport:
    """allow_empty: with no database configured, no restore recorded and no verify.command, succeed anyway."""
    report = VerifyReport()
    record = read_restore_record(context.settings.state_dir)
    if record and not record.complete:  # first: it is the cause of whatever fails below
        report.add(f"last restore ({record.key}) completed", False,
                   "it was interrupted or failed: `pgdr restore latest --clean`, then `pgdr init`")
    present = set(inventory.user_databases(context.superuser_endpoint()))
    for database in context.settings.databases:
        if database.name not in present:
            report.add(f"database {database.name} exists", False,
                       "the restore did not complete: `pgdr list` and restore again, then `pgdr init`")
            continue
        report.add(f"database {database.name} exists", True)
        check_logins(context, database, report)
        if not any(name.endswith("logs in over TCP") and not ok for name, ok, _ in report.checks):
            check_privileges(context, database, report)
    if record and record.manifest is not None:
        check_backup_contents(context, record.manifest, report,
                              row_counts and context.settings.verify.row_counts)
    run_app_check(context, report)
    _report(context, report, allow_empty)
    return report


def _report(context: Context, report: VerifyReport, allow_empty: bool = False) -> None:
    if not report.checks:
        if allow_empty:
            context.output.warn("Nothing verified: no databases configured, no restore recorded, no verify.command")
            return
        raise VerifyFailed("nothing verified: no databases in pgdr.toml, no restore recorded with a manifest, and no "
                           "verify.command",
                           "add [[databases]] (and verify.command) to pgdr.toml, or pass --allow-empty")
    for name, passed, detail in report.checks:
        if passed:
            context.output.info(f"  ok   {name}")
        else:
            context.output.warn(f"FAIL {name}: {detail}")
    if report.failures:
        first = report.failures[0]
        hint = ("run `pgdr secrets pull && pgdr init`" if "logs in" in first[0]
                else first[2] if first[0].startswith("last restore") else "see the failed checks above")
        raise VerifyFailed(f"{len(report.failures)} of {len(report.checks)} checks failed: {first[0]}", hint)
    context.output.success("Application can connect")
