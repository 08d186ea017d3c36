"""Run a real PostgreSQL client slowly, for fault injection: `throttle.py out REAL ARGS...` copies REAL's stdout
(pg_dumpall) to ours, `throttle.py in REAL ARGS...` copies our stdin to REAL's stdin (psql), at FAULT_RATE
bytes per second. After FAULT_MARK_AFTER bytes it creates the file FAULT_MARK, so a test knows the stream is
under way; with FAULT_HOLD it then copies nothing more until that file exists, so the stream stays under way for
exactly as long as the test needs, however fast or slow the machine. The exit status is REAL's (128 + N when a
signal killed it), so pgdr sees the real stage's outcome.

Not a test module: the fake binaries in a fake bin dir `exec` it. Settings come from the environment, which
pgdr passes to its children (minus secrets), so nothing is added to anybody's argv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO


def settings() -> tuple[float, int, Path | None, Path | None]:
    rate = float(os.environ.get("FAULT_RATE", "262144"))
    mark_after = int(os.environ.get("FAULT_MARK_AFTER", "0"))
    mark = Path(os.environ["FAULT_MARK"]) if os.environ.get("FAULT_MARK") else None
    hold = Path(os.environ["FAULT_HOLD"]) if os.environ.get("FAULT_HOLD") else None
    return rate, mark_after, mark, hold


def copy_slowly(source: BinaryIO, sink: BinaryIO) -> None:
    rate, mark_after, mark, hold = settings()
    chunk_size = max(1024, min(65536, int(rate / 10)))
    copied = 0
    while chunk := source.read1(chunk_size):  # type: ignore[attr-defined]
        sink.write(chunk)
        sink.flush()
        copied += len(chunk)
        if mark is not None and copied >= mark_after and not mark.exists():
            mark.write_text(str(copied))
            while hold is not None and not hold.exists():  # released by the test, not by a clock
                time.sleep(0.02)
        time.sleep(len(chunk) / rate)


def status_of(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def main() -> int:
    direction, real = sys.argv[1], sys.argv[2:]
    if direction == "out":
        child = subprocess.Popen(real, stdout=subprocess.PIPE)
        assert child.stdout is not None
        try:
            copy_slowly(child.stdout, sys.stdout.buffer)
        except BrokenPipeError:  # pgdr stopped reading: stop the real dump too
            child.kill()
        return status_of(child.wait())
    child = subprocess.Popen(real, stdin=subprocess.PIPE)
    assert child.stdin is not None
    try:
        copy_slowly(sys.stdin.buffer, child.stdin)
        child.stdin.close()
    except BrokenPipeError:  # the real psql stopped (an error): its exit status tells pgdr why
        pass
    return status_of(child.wait())


if __name__ == "__main__":
    sys.exit(main())
