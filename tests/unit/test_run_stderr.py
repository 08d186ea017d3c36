"""A failed stage's stderr keeps its first error and its last lines: pg_restore --jobs reports the cause first and
then pages of lost workers, and psql's last line is the one after the error."""

from __future__ import annotations

import sys

import pytest

from pgdr.errors import StageFailed
from pgdr.run import STDERR_TAIL_BYTES, stream


def failing_stage(stderr: str) -> StageFailed:
    script = f"import sys; sys.stderr.write({stderr!r}); sys.exit(3)"
    with pytest.raises(StageFailed) as caught, stream([sys.executable, "-c", script], stage="fake",
                                                      direction="read") as process:
        process.read()
    return caught.value


def test_the_first_error_survives_pages_of_later_stderr():
    noise = "pg_restore: error: a worker process died unexpectedly\n" * (3 * STDERR_TAIL_BYTES // 50)
    failure = failing_stage("pg_restore: error: could not execute query: ERROR:  deadlock detected\n" + noise +
                            "pg_restore: warning: errors ignored on restore: 1\n")
    assert "ERROR:  deadlock detected" in failure.stderr_tail
    assert failure.stderr_tail.endswith("errors ignored on restore: 1")
    assert len(failure.stderr_tail) <= 2 * STDERR_TAIL_BYTES + 10


def test_a_short_stderr_is_kept_whole():
    failure = failing_stage("ERROR:  one\nLINE 1: two\n")
    assert failure.stderr_tail == "ERROR:  one\nLINE 1: two"
