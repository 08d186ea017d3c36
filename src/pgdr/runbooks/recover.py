"""pgdr recover and pgdr drill: the whole runbook as one command, and its unattended rehearsal.

recover: up -> restore -> resolve secrets -> init -> verify on the configured server, each step timed. Safe to
re-run after a failure: a restore that already completed for the chosen backup is not repeated, and live data is
never restored over without --clean.

drill: the same recovery into a scratch cluster (temporary folder, free port) that is removed afterwards; the
live cluster, its data and its port are never touched. Each drill is recorded in a history file beside the
backups (and in S3 when that is a target).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgdr import drill_lock
from pgdr.actions import provision, server, verify
from pgdr.actions.restore import existing_data, select_backup
from pgdr.context import Context
from pgdr.drill_history import record_drill
from pgdr.errors import PgdrError, RtoExceeded
from pgdr.locking import locked
from pgdr.runbooks import point_in_time, restore
from pgdr.secrets import SecretResolver, generate_password
from pgdr.state import read_restore_record
from pgdr.storage import open_storage
from pgdr.wal.reading import rpo_now
from pgdr.wal.recovery import RecoveryTarget

DRILL_SUPERUSER_SECRET = "PGDR_DRILL_SUPERUSER_PASSWORD"


@dataclass
class RecoveryReport:
    kind: str
    source: str
    key: str = ""
    steps: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    outcome: str = "failed"
    error: str = ""
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    rpo_seconds: float | None = None  # a drill: the RPO the source's WAL archive gave (None: no archive)

    @property
    def rto_seconds(self) -> float:
        return round(sum(self.steps.values()), 3)

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "rto_seconds": self.rto_seconds}


@contextmanager
def timed(report: RecoveryReport, step: str, context: Context) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        report.steps[step] = round(time.monotonic() - started, 3)
    context.output.info(f"   {step} done in {report.steps[step]:.1f}s")


def chosen_key(context: Context, source: str, key: str | None, allow_suspicious: bool = False) -> str:
    return key or select_backup(context, source, None, allow_suspicious)[1].key.key


def already_restored(context: Context, key: str) -> bool:
    """The record says key was restored completely, and the server still holds data (not a new, empty cluster)."""
    record = read_restore_record(context.settings.state_dir)
    if not (record and record.key == key and record.complete):
        return False
    databases, roles = existing_data(context)
    return bool(databases or roles)


def run_recovery(context: Context, report: RecoveryReport, key: str | None, clean: bool,
                 allow_suspicious: bool = False, target: RecoveryTarget | None = None) -> None:
    """The runbook in order; each step is timed into report.steps. With a target, the restore is a point-in-time
    recovery from a base backup and the WAL archive (it starts the server itself)."""
    if target is not None:
        with timed(report, "restore", context):
            report.key = point_in_time.recover_to_point(context, report.source, target, clean)
    else:
        restore_logical(context, report, key, clean, allow_suspicious)
    with timed(report, "secrets", context):
        for name in context.settings.secret_names():
            context.secrets.get(name)
    with timed(report, "init", context):
        provision.init(context)
    with timed(report, "verify", context):
        verify.verify(context)


def restore_logical(context: Context, report: RecoveryReport, key: str | None, clean: bool,
                    allow_suspicious: bool) -> None:
    with timed(report, "up", context):
        server.up(context)
    report.key = chosen_key(context, report.source, key, allow_suspicious)
    if already_restored(context, report.key) and not clean:
        context.output.success(f"{report.key} was already restored here: not restoring it twice")
        report.skipped.append("restore")
    else:
        with timed(report, "restore", context):
            restore.restore(context, source=report.source, key=report.key, clean=clean,
                            command=f"pgdr {report.kind} --yes")


@locked("recover")
def recover(context: Context, source: str = "local", key: str | None = None, clean: bool = False,
            allow_suspicious: bool = False, target: RecoveryTarget | None = None) -> RecoveryReport:
    report = RecoveryReport("recover", source)
    try:
        run_recovery(context, report, key, clean, allow_suspicious, target)
    except PgdrError as error:
        report.error = error.message
        summarize(context, report)
        error.details = report.as_json()
        raise
    report.outcome = "ok"
    summarize(context, report)
    return report


def summarize(context: Context, report: RecoveryReport) -> None:
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in report.steps.items())
    if report.outcome == "ok":
        context.output.success(f"Recovered {report.key or '(no backup)'}: RTO {report.rto_seconds:.1f}s ({steps})")
    else:
        context.output.warn(f"{report.kind} failed after {report.rto_seconds:.1f}s ({steps}): {report.error}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def scratch_context(context: Context, folder: Path, physical: bool = False) -> Context:
    """A context for a throw-away local cluster in folder: own port, data dir, state; same backups and secrets.
    A logical restore gets a generated superuser password; a physical one brings the cluster's own roles, so the
    configured superuser secret is kept."""
    settings = context.settings.model_copy(deep=True)
    settings.postgres.mode = "local"
    settings.postgres.host = "127.0.0.1"
    settings.postgres.port = free_port()
    settings.postgres.data_dir = folder / "pgdata"
    settings.config_path = context.settings.config_path
    resolver = SecretResolver(context.secrets.sources)
    if not physical:
        settings.postgres.password = DRILL_SUPERUSER_SECRET
        resolver.remember(DRILL_SUPERUSER_SECRET, generate_password(), "generated for the drill")
    return Context(settings, context.output, assume_yes=True, resolver=resolver, scratch=True)


def scratch_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pgdr-drill-"))
    folder.chmod(0o755)  # the unprivileged server user must reach the data dir inside
    return folder


def drill(context: Context, source: str = "local", key: str | None = None,
          target: RecoveryTarget | None = None) -> RecoveryReport:
    report = RecoveryReport("drill", source)
    folder = scratch_folder()
    scratch = scratch_context(context, folder, physical=target is not None)
    context.output.step(f"Drill: recovering into a scratch cluster on port {scratch.settings.postgres.port} ({folder})")
    try:
        # A drill of a suspicious newest backup goes ahead (it touches no live data, and is how to find out), and
        # says so; marked as read, so that prune keeps it (see drill_lock.py).
        if target is not None:
            run_recovery(scratch, report, None, clean=False, target=target)
        else:
            key = chosen_key(context, source, key, allow_suspicious=True)
            with drill_lock.reading(open_storage(context.settings, source, context.output.warn), key,
                                    context.output.warn):
                run_recovery(scratch, report, key, clean=False)
        report.outcome = "ok"
        check_objective(context, report)
    except PgdrError as error:
        report.outcome = "rto_exceeded" if isinstance(error, RtoExceeded) else "failed"
        report.error = error.message
        error.details = report.as_json()
        raise
    finally:
        remove_scratch(scratch, folder)
        report.rpo_seconds = rpo_now(context, source)
        record_drill(context, report)
        summarize(context, report)
    return report


def check_objective(context: Context, report: RecoveryReport) -> None:
    objective = context.settings.recovery.rto_objective
    if objective is not None and report.rto_seconds > objective:
        raise RtoExceeded(
            f"recovery worked but took {report.rto_seconds:.1f}s, over the RTO objective of {objective:.0f}s",
            "speed up recovery (split format, faster disk) or revise recovery.rto_objective",
        )


def remove_scratch(scratch: Context, folder: Path) -> None:
    try:
        scratch.cluster.remove()
    except PgdrError as error:
        scratch.output.warn(f"could not stop the scratch cluster: {error.message}")
    shutil.rmtree(folder, ignore_errors=True)
