"""The `pgdr` console script and `python -m pgdr`: `pgdr --version` is answered here, before typer, pydantic or
any command is imported (scripts and monitoring probes ask it often); every other command line goes to pgdr.cli.

Nothing but the standard library and `pgdr` itself may be imported at the top of this module
(tests/unit/test_startup_imports.py).
"""

from __future__ import annotations

import gc
import sys

from pgdr import VERSION_LINE


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(VERSION_LINE)
        return
    from pgdr.cli import main as run_command_line

    # What start-up imported (typer, the command line) lives as long as the process: the collector need not walk it
    # again, in each full collection and in the last one at exit (6 ms of `pgdr list`, bench/README.md).
    gc.freeze()
    try:
        run_command_line()
    finally:
        # The command's work is done and its output written; what remains is the interpreter's exit, whose last full
        # collection walked everything the command built (35-40 ms after a 100 MB backup, 10 ms frozen). Frozen, it
        # is freed by reference counts alone; threads are still joined and atexit handlers still run, and the exit
        # code is still the SystemExit that run_command_line raised.
        gc.freeze()
