"""pgdr up / down / status: the server's lifecycle and a look at its state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgdr.catalog import list_backups
from pgdr.context import Context
from pgdr.errors import AuthenticationFailed, PgdrError, SecretMissing, ServerUnreachable
from pgdr.postgres import inventory
from pgdr.postgres.bulk_load import fsync_is_off
from pgdr.postgres.cluster import wait_until_reachable
from pgdr.secrets import generate_password, write_dotenv
from pgdr.state import read_restore_record
from pgdr.storage import open_storage
from pgdr.wal.reading import windows


def superuser_password_for_new_cluster(context: Context) -> str:
    """The configured superuser password; for a brand-new managed cluster, generate one into the dotenv file."""
    name = context.settings.postgres.password
    found = context.secrets.lookup(name)
    if found is not None:
        return found[0]
    if "dotenv" not in context.settings.secrets.sources:
        context.secrets.get(name)  # raises SecretMissing naming every place looked
    password = generate_password()
    write_dotenv(context.settings.secrets.dotenv, {name: password})
    context.secrets.remember(name, password, "dotenv")
    context.output.info(f"Generated a superuser password, stored as {name} in {context.settings.secrets.dotenv} (0600)")
    return password


def up(context: Context) -> None:
    if not context.is_local:
        context.external.start()
        wait_until_reachable(context.superuser_endpoint(), timeout=120)
        context.output.success(f"Server reachable at {context.settings.postgres.host}:{context.settings.postgres.port}")
        return
    cluster = context.cluster
    if not cluster.exists():
        context.output.step(f"Creating a new cluster in {cluster.data_dir}")
        cluster.initialise(superuser_password_for_new_cluster(context))
    if cluster.bulk_load_settings_written():
        _leave_bulk_load(context)
    elif cluster.is_running():
        context.output.success(f"PostgreSQL already running on port {context.settings.postgres.port}")
        return
    cluster.start()
    wait_until_reachable(context.superuser_endpoint(), timeout=60)
    context.output.success(
        f"PostgreSQL {cluster.tools().major} running on "
        f"{context.settings.postgres.host}:{context.settings.postgres.port}"
    )


def _leave_bulk_load(context: Context) -> None:
    """The last start was a restore's bulk load that did not finish (pgdr was killed): what it wrote with fsync off
    is forced to disk before the server starts again with the normal settings."""
    cluster = context.cluster
    if cluster.is_running():
        context.output.warn("PostgreSQL runs with the bulk-load settings of a restore that did not finish (fsync off): "
                            "restarting it with the normal settings")
        cluster.stop()
    else:
        context.output.warn("PostgreSQL last ran with the bulk-load settings of a restore that did not finish: "
                            "syncing it to disk and starting it with the normal settings")
    if not fsync_is_off(context.settings.postgres.settings):
        cluster.sync_to_disk()


def down(context: Context) -> None:
    if not context.is_local:
        context.external.stop()
        context.output.success("down_command finished" if context.settings.postgres.down_command
                               else "external mode without down_command: nothing to stop")
        return
    if not context.cluster.is_running():
        context.output.success("PostgreSQL is not running")
        return
    context.cluster.stop()
    context.output.success("PostgreSQL stopped")


@dataclass
class Status:
    reachable: bool = False
    problem: str = ""
    version: str = ""
    databases: list[dict[str, Any]] = field(default_factory=list)
    newest_backup: dict[str, Any] | None = None
    mode: str = "local"
    data_dir: str = ""
    metrics: dict[str, Any] | None = None
    wal_windows: dict[str, dict[str, Any]] = field(default_factory=dict)  # targets with a WAL archive only
    warnings: list[str] = field(default_factory=list)  # an unfinished restore, a bulk load's settings still on

    def as_json(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items()
                if name not in ("wal_windows", "warnings") or value}


def status(context: Context) -> Status:
    report = Status(mode=context.settings.postgres.mode, data_dir=str(context.settings.postgres.data_dir))
    try:
        endpoint = context.superuser_endpoint()
        report.version = context.server_version()[1]
        report.reachable = True
        report.databases = [{"name": name, "size": size} for name, size in inventory.database_sizes(endpoint)]
    except (ServerUnreachable, AuthenticationFailed, SecretMissing) as error:
        report.problem = f"{error.message} ({error.hint})"
    report.warnings = restore_warnings(context)
    report.newest_backup = newest_backup(context)
    report.wal_windows = {target: found.as_json()
                          for target, found in windows(context, context.settings.backup.targets).items()}
    if context.settings.metrics.textfile is not None:
        from pgdr.metrics import summary

        report.metrics = summary(context.settings.metrics.textfile)
    return report


def restore_warnings(context: Context) -> list[str]:
    """What an unfinished restore left: the record saying incomplete, and a server still on a bulk load's settings."""
    warnings = []
    record = read_restore_record(context.settings.state_dir)
    if record is not None and not record.complete:
        warnings.append(f"the last restore ({record.key}) did not complete: the cluster holds a partial restore; "
                        "`pgdr restore latest --clean`, then `pgdr init`")
    if context.is_local and context.cluster.bulk_load_settings_written():
        warnings.append("the server was started with a restore's bulk-load settings (fsync off): `pgdr up` restarts it "
                        "with the normal ones")
    return warnings


def newest_backup(context: Context) -> dict[str, Any] | None:
    newest = None
    for target in context.settings.backup.targets:
        try:
            storage = open_storage(context.settings, target, context.output.warn)
            records = list_backups(storage, context.settings.backup.min_size)
        except PgdrError:
            continue
        if records and (newest is None or records[-1].key.created > newest.key.created):
            newest = records[-1]
    if newest is None:
        return None
    age = (datetime.now(UTC) - newest.key.created).total_seconds()
    return {**newest.as_json(), "age_seconds": round(age)}
