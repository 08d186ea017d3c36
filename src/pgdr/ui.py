"""Output for people at 3 a.m.: one summary line per step, progress bars on a terminal, nothing secret.

Every line goes through the redactor. With --json, human lines go to stderr so stdout stays machine-readable.
rich is imported when the first line is printed (its console), the first table is made or a progress bar is shown,
not when this module is: `pgdr --version` and `--help` never pay for it (tests/unit/test_startup_imports.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgdr.redact import redact

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table


def make_console(stderr: bool) -> Console:
    """Wide when not on a terminal, so backup keys are never cut in logs and pipes."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200)


class ProgressHandle:
    """Advance by bytes; a no-op when progress is not shown."""

    def __init__(self, progress: Progress | None = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)


def make_table(*headers: str) -> Table:
    from rich.table import Table

    return Table(*headers)


@dataclass
class Output:
    quiet: bool = False
    json_mode: bool = False
    given_console: Console | None = None
    given_error_console: Console | None = None

    @property
    def console(self) -> Console:
        if self.given_console is None:
            self.given_console = make_console(stderr=False)
        return self.given_console

    @property
    def error_console(self) -> Console:
        if self.given_error_console is None:
            self.given_error_console = make_console(stderr=True)
        return self.given_error_console

    @property
    def _human(self) -> Console:
        return self.error_console if self.json_mode else self.console

    def info(self, message: str) -> None:
        if not self.quiet:
            self._human.print(redact(message), markup=False)

    def step(self, message: str) -> None:
        self.info(f"→ {message}")

    def success(self, message: str) -> None:
        if not self.quiet:
            self._human.print("✅ " + redact(message), markup=False)

    def warn(self, message: str) -> None:
        self.error_console.print("⚠️  " + redact(message), markup=False)

    def error(self, message: str, hint: str = "") -> None:
        self.error_console.print("❌ " + redact(message), markup=False)
        if hint:
            self.error_console.print("   fix: " + redact(hint), markup=False)

    def table(self, table: Table) -> None:
        self._human.print(table)

    def emit_json(self, text: str) -> None:
        sys.stdout.write(redact(text) + "\n")
        sys.stdout.flush()

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and self.console.is_terminal

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[ProgressHandle]:
        if self.quiet or self.json_mode or not self.error_console.is_terminal:
            yield ProgressHandle()
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeElapsedColumn()]
        with Progress(*columns, console=self.error_console, transient=True) as progress:
            yield ProgressHandle(progress, progress.add_task(description, total=total))

    def confirm(self, question: str) -> bool:
        if not self.interactive:
            return False
        answer = self.console.input(f"{redact(question)} [y/N] ", markup=False)  # "[y/N]" is not markup
        return answer.strip().lower() in ("y", "yes")

    def prompt(self, question: str, password: bool = False) -> str:
        return self.console.input(redact(question), password=password, markup=False)


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
