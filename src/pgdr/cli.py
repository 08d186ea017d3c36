"""The pgdr command line: parse, call one action, map errors to exit codes. No logic lives here.

No `from __future__ import annotations` here: typer reads every command's parameters when it builds the command
tree, at every start, and would compile and evaluate each annotation written as a string (twice). Evaluated once at
import, this module and its command tree cost half as much (about 15 ms less for every command; bench/README.md,
tests/unit/test_startup_imports.py). Names imported for type checking only are quoted.
"""

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pgdr import VERSION_LINE
from pgdr.errors import ExitCode, Interrupted, PgdrError, UsageError

if TYPE_CHECKING:
    from pgdr.context import Context
    from pgdr.ui import Output
    from pgdr.wal.recovery import RecoveryTarget

app = typer.Typer(
    help="PostgreSQL disaster recovery: backups, restore, passwords, verification.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
restore_app = typer.Typer(help="Restore a backup (checked before the server is touched).", no_args_is_help=True)
clean_app = typer.Typer(help="Remove data: soft (drop databases and roles) or hard (delete the cluster).",
                        no_args_is_help=True)
secrets_app = typer.Typer(help="Secrets: pull them into the dotenv file, push one to SSM.", no_args_is_help=True)
app.add_typer(restore_app, name="restore")
app.add_typer(clean_app, name="clean")
app.add_typer(secrets_app, name="secrets")
schedule_app = typer.Typer(help="Run pgdr on a schedule: systemd timers or cron.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
wal_app = typer.Typer(help="The continuous WAL archive behind point-in-time recovery: stream it, mark a moment, "
                           "read who changed what.",
                      no_args_is_help=True)
app.add_typer(wal_app, name="wal")

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Confirm destructive actions without a prompt.")]
ProductionOption = Annotated[bool, typer.Option(
    "--i-mean-production", help="With --yes: confirm a destructive action on a production cluster (automation).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
DatabaseOption = Annotated[str | None, typer.Option(
    "--database", help="Restore only this database (split backups); other databases are left alone.")]
SourceOption = Annotated[str, typer.Option("--from", help="Where the backups are: local or s3.")]
ToTimeOption = Annotated[str | None, typer.Option(
    "--to", help="Point-in-time recovery to this moment, e.g. \"2026-12-01 10:42:00+00\" (base backup + WAL).")]
ToLsnOption = Annotated[str | None, typer.Option(
    "--to-lsn", help="Point-in-time recovery to this LSN, e.g. 0/3000028.")]
ToXidOption = Annotated[str | None, typer.Option(
    "--to-xid", help="Point-in-time recovery to just before this transaction (the mistake) ends.")]
ToNameOption = Annotated[str | None, typer.Option(
    "--to-name", help="Point-in-time recovery to a restore point made by `pgdr wal mark NAME`.")]
TimelineOption = Annotated[str | None, typer.Option(
    "--timeline", help="With --to...: the timeline to follow (a number, or latest, the default).")]
SuspiciousOption = Annotated[bool, typer.Option(
    "--allow-suspicious", help="Restore the newest backup even when `pgdr list` flags it (too small, or under half "
    "the one before); refused by default.")]




@dataclass
class GlobalOptions:
    config: Path | None
    quiet: bool
    wait: float = 0.0


def _version(value: bool) -> None:
    if value:
        print(VERSION_LINE)
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="PGDR_CONFIG",
                                                help="Config file (default ./pgdr.toml).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and warnings.")] = False,
    wait: Annotated[float, typer.Option("--wait", metavar="SECONDS",
                                        help="Wait this long for another pgdr on the same cluster to finish.")] = 0.0,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version.")] = False,
) -> None:
    ctx.obj = GlobalOptions(config, quiet, wait)


def make_context(ctx: typer.Context, yes: bool = False, json_mode: bool = False, production: bool = False
                 ) -> "Context":
    from pgdr.config import load_settings
    from pgdr.context import Context
    from pgdr.memory import return_large_buffers_to_the_os
    from pgdr.ui import Output

    return_large_buffers_to_the_os()
    options: GlobalOptions = ctx.find_root().obj
    output = Output(quiet=options.quiet, json_mode=json_mode)
    return Context(load_settings(options.config), output, assume_yes=yes, lock_wait=options.wait,
                   i_mean_production=production)


def print_json(data: object) -> None:
    from pgdr.redact import redact

    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")


@app.command()
def up(ctx: typer.Context) -> None:
    """Start PostgreSQL (local: create the managed cluster on first use; external: run up_command)."""
    from pgdr.actions.server import up as start

    start(make_context(ctx))


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop PostgreSQL (local: the managed cluster; external: run down_command if set)."""
    from pgdr.actions.server import down as stop

    stop(make_context(ctx))


@app.command()
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Is the server reachable? Version, databases with sizes, newest backup and its age."""
    from pgdr.actions.server import status as read_status
    from pgdr.observe import wal_seen

    context = make_context(ctx, json_mode=as_json)
    report = read_status(context)
    wal_seen(context, report.wal_windows)
    if as_json:
        print_json(report.as_json())
    else:
        _print_status(context.output, report)
    if not report.reachable:
        raise typer.Exit(ExitCode.SERVER_UNREACHABLE)


def _print_status(output: "Output", report: object) -> None:
    from pgdr.ui import human_age, human_size

    data = report.as_json()  # type: ignore[attr-defined]
    if data["reachable"]:
        output.info(f"Server: reachable, {data['version']}")
        for database in data["databases"]:
            output.info(f"  {database['name']:<30} {human_size(database['size']):>10}")
    else:
        output.warn(f"Server: not reachable: {data['problem']}")
    for warning in data.get("warnings", []):
        output.warn(warning)
    newest = data["newest_backup"]
    if newest:
        output.info(f"Newest backup: {newest['key']} ({newest['target']}, {human_size(newest['size'])}, "
                    f"{human_age(newest['age_seconds'])} old, {'verified' if newest['verified'] else 'unverified'})")
    else:
        output.info("Newest backup: none")
    for target, found in data.get("wal_windows", {}).items():
        output.info(f"WAL archive ({target}): {found['summary']}")
    from pgdr.metrics import describe

    for line in describe(data.get("metrics") or {}):
        output.info(line)


@app.command()
def backup(ctx: typer.Context) -> None:
    """A backup in backup.format, compressed (and encrypted) while streaming, to every target in backup.targets.

    plain: one pg_dumpall --no-role-passwords script, read as psql reads it (row counts, end marker, passwords).

    split: the globals, then one pg_dump -Fc archive per database, several at a time.

    Passwords in user mappings or subscriptions: a warning, or a refusal with backup.embedded_secrets = "refuse".
    """
    from pgdr.observe import observed
    from pgdr.runbooks.backup import backup as take_backup

    context = make_context(ctx)
    with observed(context, "backup") as run:
        run.backup_done(take_backup(context))


def _targets(context: "Context", source: str) -> list[str]:
    if source == "all":
        return ["local", "s3"] if context.settings.s3.bucket else ["local"]
    if source not in ("local", "s3"):
        raise UsageError(f"--from {source!r} is not a storage", "use --from local, --from s3 or --from all")
    return [source]


@app.command("list")
def list_command(ctx: typer.Context, source: SourceOption = "local", as_json: JsonOption = False,
                 safety: Annotated[bool, typer.Option("--safety", help="Include safety backups.")] = False) -> None:
    """Backups: key, size, created (UTC), verified/unverified, suspicious ones flagged."""
    from pgdr.actions.listing import backups, recoverable_windows

    context = make_context(ctx, json_mode=as_json)
    records = backups(context, _targets(context, source), safety)
    windows = {target: found.as_json() for target, found in recoverable_windows(context, _targets(context, source))
               .items()}
    if as_json:  # a target with a WAL archive: each of its backups says the window the archive gives
        print_json([record.as_json() | ({"recoverable_window": windows[record.target]} if record.target in windows
                                        else {}) for record in records])
        return
    from pgdr.ui import human_size, make_table

    table = make_table("key", "target", "size", "created (UTC)", "state", "flags")
    for record in records:
        table.add_row(record.key.key, record.target, human_size(record.size),
                      record.key.created.strftime("%Y-%m-%d %H:%M:%S"),
                      "verified" if record.verified else "unverified", "; ".join(record.flags) or "")
    context.output.table(table)
    if not records:
        context.output.info(f"No backups in {source}. Take one with `pgdr backup`.")
    for target, found in windows.items():
        context.output.info(f"WAL archive ({target}): {found['summary']}")


@restore_app.command("latest")
def restore_latest(ctx: typer.Context, source: SourceOption = "local", clean: Annotated[bool, typer.Option(
        "--clean", help="Take a safety backup, drop current databases and roles, then restore.")] = False,
        yes: YesOption = False, production: ProductionOption = False, database: DatabaseOption = None,
        allow_suspicious: SuspiciousOption = False) -> None:
    """Restore the newest backup (refused when flagged suspicious, unless --allow-suspicious)."""
    from pgdr.observe import observed
    from pgdr.runbooks.restore import restore

    context = make_context(ctx, yes, production=production)
    with observed(context, "restore"):
        restore(context, source=source, clean=clean, database=database, allow_suspicious=allow_suspicious)


@restore_app.command("file")
def restore_file(ctx: typer.Context, key: Annotated[str | None, typer.Argument(
        help="Backup key, e.g. 20251116/postgres-all-20251116-095831.sql.gz")] = None,
        source: SourceOption = "local", clean: Annotated[bool, typer.Option(
        "--clean", help="Take a safety backup, drop current databases and roles, then restore.")] = False,
        yes: YesOption = False, production: ProductionOption = False, database: DatabaseOption = None) -> None:
    """Restore a named backup; without KEY, list the backups and ask (on a terminal)."""
    from pgdr.observe import observed
    from pgdr.runbooks.restore import restore

    context = make_context(ctx, yes, production=production)
    chosen = key or _choose_key(context, source)
    with observed(context, "restore"):
        restore(context, source=source, key=chosen, clean=clean, database=database)


def _choose_key(context: "Context", source: str) -> str:
    from pgdr.actions.listing import backups
    from pgdr.ui import human_size

    records = backups(context, [source])
    if not context.output.interactive:
        raise UsageError("restore file needs a KEY when not on a terminal", "see `pgdr list` for the keys")
    if not records:
        raise UsageError(f"no backups in {source}", "run `pgdr backup` first")
    for number, record in enumerate(records, 1):
        context.output.info(f"{number:3d}. {record.key.key}  {human_size(record.size)}  "
                            f"{'verified' if record.verified else 'unverified'}")
    answer = context.output.prompt(f"Backup to restore [1-{len(records)}]: ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(records):
        raise UsageError(f"no backup number {answer!r}", "run the command again and type a number from the list")
    return records[int(answer) - 1].key.key


@secrets_app.command("pull")
def secrets_pull(ctx: typer.Context) -> None:
    """Write every secret the config names into the dotenv file (0600); prints names, never values."""
    from pgdr.actions.secret_store import pull

    pull(make_context(ctx))


@secrets_app.command("push")
def secrets_push(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Secret name, e.g. POSTGRES_PASSWORD")]
                 ) -> None:
    """Store one secret in SSM as SecureString; the value is read from a prompt or stdin, never argv."""
    from pgdr.actions.secret_store import push

    context = make_context(ctx)
    if sys.stdin.isatty():
        value = context.output.prompt(f"Value for {name}: ", password=True)
    else:
        value = sys.stdin.readline().rstrip("\n")
    push(context, name, value)


@app.command()
def init(ctx: typer.Context, dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False
         ) -> None:
    """Create missing databases, roles and users; (re)set every user's password; run migrations."""
    from pgdr.actions.provision import init as provision

    provision(make_context(ctx), dry_run=dry_run)


@app.command()
def verify(ctx: typer.Context, skip_row_counts: Annotated[bool, typer.Option(
        "--skip-row-counts", help="Do not compare row counts with the last restored backup.")] = False,
        allow_empty: Annotated[bool, typer.Option(
            "--allow-empty", help="Succeed when there is nothing to check (no databases configured, no restore "
            "recorded, no verify.command); by default that fails.")] = False) -> None:
    """Prove recovery: logins over TCP, privileges, databases, row counts, then verify.command."""
    from pgdr.actions.verify import verify as check

    check(make_context(ctx), row_counts=not skip_row_counts, allow_empty=allow_empty)


@clean_app.command("soft")
def clean_soft(ctx: typer.Context, yes: YesOption = False, production: ProductionOption = False) -> None:
    """Drop user databases, roles, tablespaces (and what blocks a drop); recreate template1 and postgres empty."""
    from pgdr.actions.clean import clean_soft as soft

    soft(make_context(ctx, yes, production=production))


@clean_app.command("hard")
def clean_hard(ctx: typer.Context, yes: YesOption = False, production: ProductionOption = False) -> None:
    """Local: stop the server and delete its data directory. External: run down_command or refuse."""
    from pgdr.actions.clean import clean_hard as hard

    hard(make_context(ctx, yes, production=production))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def psql(ctx: typer.Context) -> None:
    """Open psql as the superuser (arguments are passed through)."""
    from pgdr.postgres.connect import client_environment
    from pgdr.run import interactive

    context = make_context(ctx)
    toolset, _ = context.client_tools(("psql",))
    with client_environment(context.superuser_endpoint()) as environment:
        returncode = interactive([toolset.path("psql"), *ctx.args], environment)
    raise typer.Exit(returncode)


@app.command()
def recover(ctx: typer.Context, source: SourceOption = "local",
            key: Annotated[str | None, typer.Option("--file", help="Backup key; default: the newest.")] = None,
            clean: Annotated[bool, typer.Option("--clean", help="Restore over existing data (safety backup first).")]
            = False, yes: YesOption = False, production: ProductionOption = False, as_json: JsonOption = False,
            allow_suspicious: SuspiciousOption = False, to: ToTimeOption = None, to_lsn: ToLsnOption = None,
            to_xid: ToXidOption = None, to_name: ToNameOption = None, timeline: TimelineOption = None) -> None:
    """One-command recovery: up -> restore -> secrets -> init -> verify, timed (RTO). Safe to re-run.

    With --to (or --to-lsn, --to-xid, --to-name), or backup.format = "physical": point-in-time recovery from the
    newest base backup before the target and the WAL archive of `pgdr wal stream`, e.g.
    `pgdr recover --to "2026-12-01 10:42:00+00" --clean`."""
    from pgdr.observe import observed
    from pgdr.runbooks.recover import recover as run_recover

    context = make_context(ctx, yes, json_mode=as_json, production=production)
    target = _recovery_target(context, key, to, to_lsn, to_xid, to_name, timeline)
    with _json_report_on_failure(as_json), observed(context, "recover") as run:
        report = run_recover(context, source=source, key=key, clean=clean, allow_suspicious=allow_suspicious,
                             target=target)
        run.recovery_done(report)
    if as_json:
        print_json(report.as_json())


@app.command()
def drill(ctx: typer.Context, source: SourceOption = "local",
          key: Annotated[str | None, typer.Option("--file", help="Backup key; default: the newest.")] = None,
          history: Annotated[bool, typer.Option("--history", help="Show past drills instead of running one.")]
          = False, as_json: JsonOption = False, to: ToTimeOption = None, to_lsn: ToLsnOption = None,
          to_xid: ToXidOption = None, to_name: ToNameOption = None, timeline: TimelineOption = None) -> None:
    """Rehearse recovery in a scratch cluster (live data untouched), measure the RTO, record it. With --to...
    (or backup.format = "physical"): a point-in-time recovery, e.g. `pgdr drill --to "2026-12-01 10:42:00+00"`."""
    from pgdr.drill_history import drill_history
    from pgdr.runbooks import recover as recovery

    context = make_context(ctx, json_mode=as_json)
    if history:
        entries = drill_history(context, source)
        if as_json:
            print_json(entries)
        else:
            _print_drills(context.output, entries)
        return
    from pgdr.observe import observed

    with _json_report_on_failure(as_json), observed(context, "drill") as run:
        report = recovery.drill(context, source=source, key=key,
                                target=_recovery_target(context, key, to, to_lsn, to_xid, to_name, timeline))
        run.recovery_done(report)
    if as_json:
        print_json(report.as_json())


@app.command()
def undo(ctx: typer.Context,
         table: Annotated[str | None, typer.Argument(help="SCHEMA.NAME (or NAME in public); none: the whole "
                                                     "--database.")] = None,
         before: Annotated[str | None, typer.Option("--before", help="The transaction (xid) to undo: the copy is "
                                                    "as it was just before it (see `pgdr wal timeline`).")] = None,
         to: Annotated[str | None, typer.Option("--to", help="Or the moment the copy is as of, "
                                                "e.g. \"2026-12-01 10:42:00+00\".")] = None,
         database: Annotated[str | None, typer.Option("--database", help="The table's database (default: the "
                                                      "only one in pgdr.toml).")] = None,
         as_name: Annotated[str | None, typer.Option("--as", help="The copy's name (default: "
                                                     "<name>_before_<xid or time>).")] = None,
         dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be done; do nothing.")] = False,
         source: SourceOption = "local", as_json: JsonOption = False) -> None:
    """Bring one table (or one database) back as it was just before a mistake, beside the live one, never
    touching it: a scratch cluster recovered from the base backup and the WAL, the table copied over as a new
    table, the scratch cluster removed.

    `pgdr undo public.orders --before 48213` creates public.orders_before_48213 and prints the row counts and an
    INSERT ... SELECT ... EXCEPT that puts the missing rows back."""
    from pgdr.runbooks.undo import undo as bring_back
    from pgdr.wal.recovery import parse_point

    context = make_context(ctx, json_mode=as_json)
    if (before is None) == (to is None):
        raise UsageError("give one of --before XID or --to TIME", "find the xid with `pgdr wal timeline --table ...`")
    target = parse_point(to, None, before, None)
    names = [item.name for item in context.settings.databases]
    if database is None and len(names) != 1:
        raise UsageError("which database? --database NAME", f"the databases in pgdr.toml: {', '.join(names) or '-'}")
    report = bring_back(context, table, database or names[0], target, as_name, dry_run, source)
    if as_json:
        print_json(report.as_json())
        return
    if report.copy_rows is not None:
        now = f"{report.live_rows} rows" if report.live_rows is not None else "gone"
        context.output.success(f"{report.copy}: {report.copy_rows} rows, as {report.target}; {report.table} now: "
                               f"{now}")
        context.output.info(f"   to put the missing rows back: {report.suggestion}")
    elif not dry_run:
        context.output.success(f"database {report.copy}: {report.database} as {report.target}")


def _recovery_target(context: "Context", key: str | None, to: str | None, to_lsn: str | None, to_xid: str | None,
                     to_name: str | None, timeline: str | None) -> "RecoveryTarget | None":
    """A point-in-time target when one is given, or the end of the archive when backups are physical; None: a
    logical restore."""
    from pgdr.wal.recovery import parse_target

    given = any(value is not None for value in (to, to_lsn, to_xid, to_name))
    if given and key is not None:
        raise UsageError("--file picks a logical backup; a point-in-time recovery picks its base backup itself",
                         "drop --file, or the --to option")
    if given or (key is None and context.settings.backup.format == "physical"):
        return parse_target(to, to_lsn, to_xid, to_name, timeline)
    if timeline is not None:
        raise UsageError("--timeline goes with a point-in-time recovery", "add --to (or --to-lsn, --to-xid, "
                         "--to-name)")
    return None


@contextmanager
def _json_report_on_failure(as_json: bool) -> Iterator[None]:
    """With --json, a failed recover/drill still prints its report (steps done, error) for machines."""
    try:
        yield
    except PgdrError as error:
        if as_json and error.details is not None:
            print_json(error.details)
        raise


def _print_drills(output: "Output", entries: list[dict[str, object]]) -> None:
    from pgdr.ui import make_table

    table = make_table("started (UTC)", "backup", "from", "RTO", "RPO", "steps", "outcome")
    for entry in entries:
        steps = entry.get("steps") or {}
        table.add_row(str(entry.get("started_at", ""))[:19], str(entry.get("key", "")), str(entry.get("source", "")),
                      f"{float(entry.get('rto_seconds', 0) or 0):.1f}s",  # type: ignore[arg-type]
                      "" if entry.get("rpo_seconds") is None else f"{entry['rpo_seconds']}s",
                      ", ".join(f"{name} {seconds:.1f}s" for name, seconds in steps.items()),  # type: ignore[attr-defined]
                      str(entry.get("outcome", "")) + (f": {entry['error']}" if entry.get("error") else ""))
    output.table(table)
    if not entries:
        output.info("No drills recorded yet. Run `pgdr drill`.")


@app.command()
def demo(ctx: typer.Context) -> None:
    """Run the whole runbook on the config's local cluster: up, init, sample data, backup, destroy, recover."""
    from pgdr.runbooks.demo import run_demo

    run_demo(make_context(ctx, yes=True))


@app.command()
def prune(ctx: typer.Context, source: Annotated[str | None, typer.Option(
        "--from", help="local, s3 or all; default: every target in backup.targets.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go and why; delete nothing.")]
        = False, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Delete backups outside the retention rules (GFS: last N, daily, weekly, monthly), showing why."""
    from pgdr.actions.prune import prune as run_prune
    from pgdr.observe import observed

    context = make_context(ctx, yes, json_mode=as_json)
    targets = _targets(context, source) if source else None
    with observed(context, "prune"):
        plans = run_prune(context, targets, dry_run=dry_run)
    if as_json:
        print_json([prune_plan.as_json(dry_run) for prune_plan in plans])


@app.command()
def check(ctx: typer.Context,
          max_age: Annotated[str, typer.Option("--max-age", help="Newest backup must be younger, e.g. 26h.")]
          = "26h", max_drill_age: Annotated[str | None, typer.Option(
              "--max-drill-age", help="Last drill must be younger, e.g. 35d; default: not checked.")] = None,
          source: Annotated[str | None, typer.Option(
              "--from", help="local, s3 or all; default: every target in backup.targets.")] = None,
          as_json: JsonOption = False, nagios: Annotated[bool, typer.Option(
              "--nagios", help="Exit 2 (CRITICAL) instead of 15 when the check fails.")] = False) -> None:
    """Are backups fresh and sound? First line OK:/CRITICAL: with the reason; exit 0, or 15 (see README)."""
    from pgdr.actions.check import check as run_check
    from pgdr.observe import observed
    from pgdr.periods import parse_period

    context = make_context(ctx, json_mode=as_json)
    try:
        limits = parse_period(max_age), parse_period(max_drill_age) if max_drill_age else None
    except ValueError as error:
        raise UsageError(str(error), "e.g. --max-age 26h --max-drill-age 35d") from None
    targets = _targets(context, source) if source else context.settings.backup.targets
    with observed(context, "check") as run:
        report = run_check(context, list(targets), limits[0], limits[1])
        run.wal_seen(report.as_json().get("wal_windows", {}))
        if as_json:
            print_json(report.as_json())
        elif not (report.ok and context.output.quiet):
            print(report.first_line())
            for problem in report.problems[1:]:
                print(f"CRITICAL: {problem.message}")
        if not report.ok:
            run.failed(report.first_line())
    if not report.ok:
        raise typer.Exit(2 if nagios else ExitCode.CHECK_FAILED)


@schedule_app.command("print")
def schedule_print(ctx: typer.Context,
                   systemd: Annotated[bool, typer.Option("--systemd", help="systemd .service and .timer units.")]
                   = False, cron: Annotated[bool, typer.Option("--cron", help="crontab lines.")] = False,
                   folder: Annotated[Path | None, typer.Option(
                       "--dir", help="With --systemd: write the unit files into this folder instead.")] = None
                   ) -> None:
    """Print ready-to-install jobs (backup daily, prune, drill monthly, check hourly) with this install's paths."""
    from pgdr.actions import schedule

    if systemd == cron:
        raise UsageError("choose one of --systemd or --cron", "e.g. pgdr schedule print --systemd")
    context = make_context(ctx)
    config = context.settings.config_path or Path("pgdr.toml").resolve()
    base = schedule.invocation()
    if cron:
        sys.stdout.write(schedule.crontab_text(context.settings, base, config))
    elif folder is not None:
        for path in schedule.write_units(schedule.systemd_units(context.settings, base, config), folder):
            context.output.success(f"wrote {path}")
    else:
        sys.stdout.write(schedule.systemd_text(context.settings, base, config))


@wal_app.command("stream")
def wal_stream(ctx: typer.Context) -> None:
    """Stream the WAL (pg_receivewal on a slot) to every target; a service: SIGTERM or Ctrl-C stores what it has,
    then exits 0."""
    from pgdr.actions.wal import stream

    stream(make_context(ctx))


@wal_app.command("mark")
def wal_mark(ctx: typer.Context, name: Annotated[str, typer.Argument(
        help="Restore point name (letters, digits, . _ -), e.g. before-migration.")]) -> None:
    """Make a named restore point; `pgdr recover --to-name NAME` recovers to it."""
    from pgdr.actions.wal import mark

    context = make_context(ctx)
    made = mark(context, name)
    context.output.success(f"Restore point {made.name} at LSN {made.lsn} (timeline {made.timeline}), "
                           f"{made.time.isoformat(sep=' ')}")


@wal_app.command("timeline")
def wal_timeline(
        ctx: typer.Context,
        since: Annotated[str, typer.Option("--since", help="From this long ago (2h, 30m, 1d) or this moment "
                                           "(\"2026-12-01 10:00:00+00\").")] = "24h",
        until: Annotated[str | None, typer.Option("--until", help="Up to this long ago or this moment.")] = None,
        table: Annotated[str | None, typer.Option("--table", help="Only transactions that changed this table "
                                                  "(SCHEMA.NAME, or NAME in any schema).")] = None,
        database: Annotated[str | None, typer.Option("--database", help="Only this database's.")] = None,
        biggest: Annotated[int | None, typer.Option("--biggest", min=1, help="The N transactions that changed "
                                                    "the most rows, biggest first (default: all, in time order).")]
        = None,
        source: SourceOption = "local", as_json: JsonOption = False) -> None:
    """Committed transactions of the archived WAL that changed data, one line each: time, xid, database, and per
    table the rows inserted, updated, deleted, TRUNCATE, DROP. Aborted transactions are left out.

    Find the mistake, then undo it: `pgdr wal timeline --since 2h --table public.orders`, then
    `pgdr undo public.orders --before XID` (or `pgdr recover --to-xid XID --clean` for the whole cluster)."""
    from pgdr.actions.timeline import Filters, timeline
    from pgdr.preflight import printable  # names from the catalog: control characters escaped, on one line
    from pgdr.redact import redact
    from pgdr.wal.names import Transaction

    context = make_context(ctx, json_mode=as_json)
    filters = Filters(since=_moment(since, "--since"), until=_moment(until, "--until") if until else None,
                      table=table, database=database)
    printed = [0]

    def show(transaction: Transaction) -> None:
        printed[0] += 1
        if as_json:  # written as it comes: memory stays flat over any number of transactions
            sys.stdout.write(("[\n" if printed[0] == 1 else ",\n") + redact(json.dumps(transaction.as_json())))
            return
        changes = "; ".join(printable(change.describe()) for change in transaction.changes)
        context.output.info(f"{transaction.time:%Y-%m-%d %H:%M:%S} UTC  xid {transaction.xid}  "
                            f"{printable(transaction.database)}  {changes}")

    shown = timeline(context, source, filters, biggest, show)
    if as_json:
        sys.stdout.write("\n]\n" if shown else "[]\n")
    elif shown:
        context.output.info("   to undo one: `pgdr undo SCHEMA.TABLE --before XID` (the table as it was, beside the "
                            "live one), or `pgdr recover --to-xid XID --clean` (the whole cluster)")
    else:
        context.output.info("no committed transaction changed data in that window")


def _moment(text: str, option: str) -> datetime:
    """A duration ago (2h, 30m, 1d) or an ISO 8601 moment with its offset."""
    from pgdr.periods import parse_period
    from pgdr.wal.recovery import parse_target_time

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_period(text))
    except (ValueError, TypeError):
        pass
    try:
        return parse_target_time(text)
    except UsageError as error:
        raise UsageError(f"{option}: {error.message}", "e.g. 2h, 30m, 1d, or \"2026-12-01 10:00:00+00\"") from None


def _terminate(signal_number: int, frame: object) -> None:
    """SIGTERM (systemd, docker stop, timeout) unwinds like Ctrl-C: temporary files and uploads are cleaned up."""
    raise KeyboardInterrupt


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # answered before typer builds the command tree (scripts and probes ask often)
        print(VERSION_LINE)
        return
    started = datetime.now(UTC)
    signal.signal(signal.SIGTERM, _terminate)
    command = typer.main.get_command(app)
    try:
        result = command.main(standalone_mode=False, prog_name="pgdr")
        if result == ExitCode.INTERRUPTED:  # typer turns KeyboardInterrupt into a silent exit 130: say so
            raise KeyboardInterrupt
        sys.exit(result if isinstance(result, int) else 0)
    except typer.Exit as exit_request:
        sys.exit(exit_request.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        from pgdr.ui import Output

        Output().error(Interrupted("interrupted").message, "nothing half-written is kept; run the command again")
        sys.exit(ExitCode.INTERRUPTED)
    except PgdrError as error:
        from pgdr.ui import Output

        Output().error(error.message, error.hint)
        sys.exit(error.exit_code)
    except typer.TyperException as error:  # bad usage: unknown option, missing argument
        error.show()  # type: ignore[attr-defined]
        sys.exit(ExitCode.CONFIG)
    except Exception as error:  # noqa: BLE001 - last resort: one redacted line, traceback only on request
        if os.environ.get("PGDR_DEBUG"):
            raise
        from pgdr.ui import Output

        Output().error(f"unexpected error after {(datetime.now(UTC) - started).total_seconds():.0f}s: "
                       f"{type(error).__name__}: {error}", "re-run with PGDR_DEBUG=1 for the traceback and report it")
        sys.exit(ExitCode.UNEXPECTED)
