"""pgdr undo: one table (or one database) as it was just before a mistake, brought back beside the live one.

In order:
1. read the live server: the database exists, and the new name (`<table>_before_<xid>` by default, or --as) is
   free: undo never overwrites, drops or changes anything that exists;
2. recover a scratch cluster (temporary folder, free port, like `pgdr drill`) to just before the transaction
   (`recovery_target_xid`, not inclusive) or to the time, from a base backup and the WAL archive
   (pgdr.runbooks.point_in_time; a target before the oldest base backup is refused there, naming it);
3. in the scratch cluster, which is thrown away: rename the table, its indexes and their constraints to the new
   names, and drop what would reach into the live database once copied (foreign keys, triggers, defaults drawn
   from sequences, identity);
4. `pg_dump --format=custom --table` from the scratch cluster into a 0600 file in the scratch folder, then
   `pg_restore --single-transaction --exit-on-error --no-owner --no-privileges` into the live database: the copy
   appears whole or not at all;
5. count the rows of the copy and of the live table, and print an INSERT ... SELECT ... EXCEPT that puts the
   missing rows back (undo runs nothing of the kind itself).
The scratch cluster and its folder are removed at the end, also on failure and on Ctrl-C.

A whole database (--database without a table): pg_dump of it from the scratch cluster, restored into a new
database `<database>_before_<xid>` (objects owned by the superuser: --no-owner, as for a table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from pgdr.context import Context
from pgdr.errors import ExitCode, Refused, UsageError
from pgdr.postgres.connect import Endpoint, client_environment, connect
from pgdr.run import run
from pgdr.runbooks import point_in_time
from pgdr.runbooks.recover import remove_scratch, scratch_context, scratch_folder
from pgdr.wal.recovery import RecoveryTarget

NAME_LIMIT = 63  # NAMEDATALEN - 1


@dataclass
class UndoReport:
    database: str
    table: str | None  # schema.name; None for a whole database
    copy: str  # schema.new_name, or the new database's name
    target: str
    copy_rows: int | None = None
    live_rows: int | None = None
    suggestion: str = ""

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def split_table(text: str) -> tuple[str, str]:
    """SCHEMA.NAME, or NAME in public. Names are taken as typed (no case folding, no quotes)."""
    schema, dot, name = text.partition(".")
    if not dot:
        schema, name = "public", text
    if not schema or not name:
        raise UsageError(f"not a table: {text!r}", "e.g. public.orders")
    return schema, name


def copy_name(name: str, target: RecoveryTarget) -> str:
    """`orders_before_1234` (an xid) or `orders_before_20261201_104200` (a time), at most 63 bytes."""
    moment = target.value if target.kind == "xid" else (target.time.strftime("%Y%m%d_%H%M%S") if target.time
                                                        else target.value)
    suffix = f"_before_{moment}"
    head = name.encode()[:NAME_LIMIT - len(suffix.encode())].decode("utf-8", "ignore")
    return head + suffix


def undo(context: Context, table: str | None, database: str, target: RecoveryTarget, as_name: str | None,
         dry_run: bool, source: str) -> UndoReport:
    if target.kind not in ("xid", "time"):
        raise UsageError("undo needs --before XID or --to TIME", "find the xid with `pgdr wal timeline`")
    live = context.superuser_endpoint().on(database)
    if table is None:
        report = UndoReport(database, None, as_name or copy_name(database, target), target.describe())
        refuse_taken_database(context.superuser_endpoint(), report.copy)
    else:
        schema, name = split_table(table)
        report = UndoReport(database, f"{schema}.{name}", f"{schema}.{as_name or copy_name(name, target)}",
                            target.describe())
        refuse_taken_table(live, schema, report.copy.split(".", 1)[1])
    context.output.step(f"Undo: {report.table or 'database ' + database} as it was {target.describe()}, brought "
                        f"back as {report.copy} (nothing that exists is changed)")
    if dry_run:
        context.output.info("   dry run: nothing recovered, nothing created")
        return report
    folder = scratch_folder()
    scratch = scratch_context(context, folder, physical=True)
    context.output.info(f"   a scratch cluster on port {scratch.settings.postgres.port} in {folder}, removed at the "
                        "end")
    try:
        point_in_time.recover_to_point(scratch, source, target, clean=False)
        dump = folder / "undo.dump"
        if table is None:
            copy_database(context, scratch, database, report.copy, dump)
        else:
            schema, name = split_table(table)
            copy_table(context, scratch, database, schema, name, report.copy.split(".", 1)[1], dump)
            report.copy_rows, report.live_rows = row_counts(live, schema, name, report.copy.split(".", 1)[1])
            report.suggestion = insert_back(schema, name, report.copy.split(".", 1)[1])
    finally:
        remove_scratch(scratch, folder)
    return report


def refuse_taken_table(live: Endpoint, schema: str, new_name: str) -> None:
    with connect(live) as connection:
        found = connection.execute("SELECT to_regclass(%s)", (quoted(schema, new_name),)).fetchone()
    if found is not None and found[0] is not None:
        raise Refused(f"{schema}.{new_name} already exists in {live.database}: undo never overwrites",
                      "name the copy with --as NAME, or drop the old copy first")


def refuse_taken_database(server: Endpoint, new_name: str) -> None:
    with connect(server) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (new_name,)).fetchone()
    if found is not None:
        raise Refused(f"database {new_name} already exists: undo never overwrites",
                      "name the copy with --as NAME, or drop the old copy first")


def quoted(schema: str, name: str) -> str:
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def copy_table(context: Context, scratch: Context, database: str, schema: str, name: str, new_name: str,
               dump: Path) -> None:
    """Steps 3 and 4 for one table."""
    with connect(scratch.superuser_endpoint().on(database)) as connection:
        if connection.execute("SELECT to_regclass(%s)", (quoted(schema, name),)).fetchone()[0] is None:  # type: ignore[index]
            raise Refused(f"{schema}.{name} did not exist in {database} at that moment",
                          "check the name, or pick another moment (`pgdr wal timeline --table ...`)")
        for statement in detach_statements(connection, schema, name, new_name):
            connection.execute(statement)
    toolset = context.toolset(scratch.cluster.tools().major)
    context.output.step(f"Copying {schema}.{name} out of the scratch cluster as {new_name} (pg_dump)")
    with client_environment(scratch.superuser_endpoint().on(database)) as environment:
        run([toolset.path("pg_dump"), "--format=custom", f"--file={dump}", f"--table={quoted(schema, new_name)}",
             "--no-owner", "--no-privileges"], stage="pg_dump", environment=environment,
            hint="the scratch cluster could not dump the table", exit_code=ExitCode.RESTORE_FAILED)
    dump.chmod(0o600)
    restore_into_live(context, toolset.path("pg_restore"), context.superuser_endpoint().on(database), dump)


def detach_statements(connection: psycopg.Connection, schema: str, name: str, new_name: str) -> list[sql.Composed]:
    """In the scratch cluster: the table and its indexes renamed (an index-backed constraint follows its index),
    and what would reach beyond the copy dropped: foreign keys, triggers, sequence defaults and the sequences the
    table owns, identity."""
    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
    renamed = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(new_name))
    oid = connection.execute("SELECT %s::regclass::oid", (quoted(schema, name),)).fetchone()[0]  # type: ignore[index]
    suffix = new_name[len(name):] if new_name.startswith(name) else "_" + new_name
    statements = [sql.SQL("ALTER TABLE {} RENAME TO {}").format(table, sql.Identifier(new_name))]
    for (index,) in connection.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                       "WHERE i.indrelid = %s", (oid,)):
        new_index = index.encode()[:NAME_LIMIT - len(suffix.encode())].decode("utf-8", "ignore") + suffix
        statements.append(sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
            sql.Identifier(schema), sql.Identifier(index), sql.Identifier(new_index)))
    for (constraint,) in connection.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s AND contype = 'f'",
                                            (oid,)):
        statements.append(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(renamed, sql.Identifier(constraint)))
    for (trigger,) in connection.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal",
                                         (oid,)):
        statements.append(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger), renamed))
    for column, identity, has_sequence_default in connection.execute(
            "SELECT a.attname, a.attidentity <> '', coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%', false) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped", (oid,)):
        if identity:
            statements.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP IDENTITY").format(
                renamed, sql.Identifier(column)))
        elif has_sequence_default:
            statements.append(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(
                renamed, sql.Identifier(column)))
    for sequence_schema, sequence in connection.execute(  # a serial's sequence: pg_dump --table would bring it
            "SELECT n.nspname, s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
            "JOIN pg_namespace n ON n.oid = s.relnamespace WHERE d.refobjid = %s AND d.classid = 'pg_class'::regclass "
            "AND d.deptype = 'a' AND s.relkind = 'S'", (oid,)):
        statements.append(sql.SQL("DROP SEQUENCE {}.{}").format(sql.Identifier(sequence_schema),
                                                                sql.Identifier(sequence)))
    return statements


def copy_database(context: Context, scratch: Context, database: str, new_name: str, dump: Path) -> None:
    toolset = context.toolset(scratch.cluster.tools().major)
    context.output.step(f"Copying database {database} out of the scratch cluster (pg_dump)")
    with client_environment(scratch.superuser_endpoint().on(database)) as environment:
        run([toolset.path("pg_dump"), "--format=custom", f"--file={dump}", "--no-owner", "--no-privileges"],
            stage="pg_dump", environment=environment, hint="the scratch cluster could not dump the database",
            exit_code=ExitCode.RESTORE_FAILED)
    dump.chmod(0o600)
    with connect(context.superuser_endpoint()) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(new_name)))
    try:
        restore_into_live(context, toolset.path("pg_restore"), context.superuser_endpoint().on(new_name), dump)
    except BaseException:
        with connect(context.superuser_endpoint()) as connection:  # the database undo created, and only it
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(new_name)))
        raise


def restore_into_live(context: Context, pg_restore: str, endpoint: Endpoint, dump: Path) -> None:
    """One transaction: the copy appears whole, or nothing does."""
    context.output.step(f"Loading it into the live database {endpoint.database} (pg_restore, one transaction)")
    with client_environment(endpoint) as environment:
        run([pg_restore, "--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges",
             f"--dbname={endpoint.database}", str(dump)], stage="pg_restore", environment=environment,
            hint="nothing was created in the live database; see the message", exit_code=ExitCode.RESTORE_FAILED)


def row_counts(live: Endpoint, schema: str, name: str, new_name: str) -> tuple[int, int | None]:
    with connect(live) as connection:
        copied = connection.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(new_name))).fetchone()
        exists = connection.execute("SELECT to_regclass(%s)", (quoted(schema, name),)).fetchone()
        now = connection.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name))).fetchone() if exists and exists[0] else None
    return int(copied[0]) if copied else 0, int(now[0]) if now else None


def insert_back(schema: str, name: str, new_name: str) -> str:
    """The statement that puts back the rows the copy has and the live table lacks (for the person to run)."""
    live = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
    copy = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(new_name))
    return sql.SQL("INSERT INTO {} SELECT * FROM {} EXCEPT SELECT * FROM {};").format(live, copy, live).as_string()
