"""Output for people at 3 a.m.: one summary line per step, progress bars on a terminal, nothing secret.

Every line goes through the redactor. With --json, human lines go to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from pgdr.redact import redact


def make_console(stderr: bool) -> Console:
    """Wide when not on a terminal, so backup keys are never cut in logs and pipes."""
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


@dataclass
class Output:
    quiet: bool = False
    json_mode: bool = False
    console: Console = field(default_factory=lambda: make_console(stderr=False))
    error_console: Console = field(default_factory=lambda: make_console(stderr=True))

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
