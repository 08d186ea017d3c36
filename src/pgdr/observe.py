"""The one place where an operation run from the CLI is watched: metrics written, people notified.

    with observed(context, "backup") as run:
        run.backup_done(take_backup(context))

On entry: healthchecks `/start` ping. On exit, success or failure: the operation's metrics in the textfile,
then notifications (webhook, apprise, healthchecks). The operation's exception is re-raised untouched; a
failure to write metrics or to notify is one warning line, never a different exit code. Actions know nothing
of this, so they stay orchestration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgdr import metrics
from pgdr.context import Context
from pgdr.errors import PgdrError
from pgdr.notify import Event, Notifier

if TYPE_CHECKING:
    from pgdr.actions.backup import BackupResult
    from pgdr.runbooks.recover import RecoveryReport


@dataclass
class Run:
    """What the caller learned about the run: details for the notification, gauges for the metrics, and a
    failure for operations that report one without raising (check)."""

    operation: str
    details: dict[str, Any] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    series: metrics.Samples = field(default_factory=dict)  # labelled gauges, e.g. per target
    failure: str = ""

    def failed(self, message: str) -> None:
        self.failure = message

    def backup_done(self, result: BackupResult) -> None:
        self.details.update(key=result.key.key, size_bytes=result.manifest.size, targets=result.targets)
        self.gauges["pgdr_backup_size_bytes"] = float(result.manifest.size)

    def wal_seen(self, windows: dict[str, dict[str, Any]]) -> None:
        """The recoverable windows of the targets with a WAL archive (as_json): their lag and newest WAL."""
        self.series = metrics.with_series(self.series, metrics.wal_series(windows))

    def recovery_done(self, report: RecoveryReport) -> None:
        self.details.update(key=report.key, source=report.source, rto_seconds=report.rto_seconds,
                            steps=report.steps)
        if report.kind == "drill":
            self.gauges["pgdr_drill_rto_seconds"] = report.rto_seconds


def wal_seen(context: Context, windows: dict[str, dict[str, Any]]) -> None:
    """Outside an operation's run (pgdr status): the WAL gauges written alone; a failure is one warning."""
    textfile = context.settings.metrics.textfile
    if textfile is None or not windows:
        return
    try:
        metrics.record_series(textfile, metrics.wal_series(windows))
    except Exception as error:  # noqa: BLE001 - bookkeeping must never change the outcome
        context.output.warn(f"metrics not written to {textfile}: {type(error).__name__}: {error}")


def describe_failure(error: BaseException) -> tuple[str, dict[str, Any]]:
    if isinstance(error, PgdrError):
        text = error.message + (f" (fix: {error.hint})" if error.hint else "")
        return text, {"exit_code": int(error.exit_code), "error": type(error).__name__}
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", {"error": "Interrupted"}
    return f"{type(error).__name__}: {error}", {"error": type(error).__name__}


def exit_code_of(error: BaseException) -> int | None:
    """typer.Exit / SystemExit carry a code; 0 is not a failure."""
    code = getattr(error, "exit_code", getattr(error, "code", None))
    return code if isinstance(code, int) else None


@contextmanager
def observed(context: Context, operation: str) -> Iterator[Run]:
    run = Run(operation)
    notifier = Notifier(context.settings.notify, context.output.warn)
    notifier.started(operation)
    started = time.monotonic()
    try:
        yield run
    except BaseException as error:
        if not isinstance(error, PgdrError) and exit_code_of(error) == 0:
            finish(context, notifier, run, time.monotonic() - started)
            raise
        message, details = describe_failure(error)
        run.details.update(details)
        finish(context, notifier, run, time.monotonic() - started, message)
        raise
    finish(context, notifier, run, time.monotonic() - started, run.failure)


def finish(context: Context, notifier: Notifier, run: Run, duration: float, failure: str = "") -> None:
    ok = not failure
    textfile = context.settings.metrics.textfile
    if textfile is not None:
        try:
            metrics.record(textfile, run.operation, ok, duration, run.gauges, series=run.series)
        except Exception as error:  # noqa: BLE001 - bookkeeping must never change the outcome
            context.output.warn(f"metrics not written to {textfile}: {type(error).__name__}: {error}")
    run.details["duration_seconds"] = round(duration, 3)
    message = failure or f"{run.operation} succeeded" + (f": {run.details['key']}" if run.details.get("key") else "")
    notifier.finished(Event(run.operation, "success" if ok else "failure", message, run.details))
