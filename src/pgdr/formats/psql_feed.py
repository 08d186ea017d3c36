"""SQL into psql, the way every restore of SQL does it: the session options that let a restore run whatever the
restored settings say, psql run as the cluster's OS user when pgdr is root, and the globals filter in front.

Both formats feed SQL this way: the plain format its whole script (or one section of it), the split format its
globals. `feed_psql` is that one pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pgdr.concurrency import Sessions
from pgdr.context import Context
from pgdr.errors import ExitCode, StageFailed
from pgdr.postgres.bulk_load import index_build_memory_mb, physical_memory
from pgdr.run import RunAs, stream
from pgdr.sqllexer import PsqlLexer, QuietListener, Statement

# Session settings for the restore's connections (psql passes PGOPTIONS to every \connect): a commit need not
# wait for the WAL flush (a crash mid-restore means restoring again anyway), and index builds get more memory.
# A database's or role's own settings must not stop its restore: a read-only default, or timeouts, restored with
# it (ALTER DATABASE ... SET default_transaction_read_only = on) apply to every later session; these override
# them for the restore's sessions only, and the settings themselves come back as they were.
LOAD_SESSION_OPTIONS = ("-c synchronous_commit=off -c maintenance_work_mem={memory}MB "
                        "-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 "
                        "-c idle_in_transaction_session_timeout=0")
INDEX_BUILD_MEMORY_MB = 256  # any server's restore sessions; the managed cluster's are sized to the machine
TRANSACTION_TIMEOUT_MAJOR = 17  # transaction_timeout exists from PostgreSQL 17; naming it before is a FATAL error
HINT_RETRY = "fix the cause above, then `pgdr restore latest --clean` (or `pgdr clean soft --yes` and restore again)"


def load_session_options(context: Context) -> str:
    """LOAD_SESSION_OPTIONS for this server: with transaction_timeout off too where the server has it; the managed
    cluster, on this machine, gets more memory for index builds (sessions: up to jobs databases, jobs each)."""
    major, _ = context.server_version()
    memory = (index_build_memory_mb(physical_memory(), jobs(context) ** 2) if context.is_local
              else INDEX_BUILD_MEMORY_MB)
    return (LOAD_SESSION_OPTIONS.format(memory=memory)
            + (" -c transaction_timeout=0" if major >= TRANSACTION_TIMEOUT_MAJOR else ""))


def jobs(context: Context) -> int:
    """How many restore (and split dump) sessions run at once: backup.jobs, else one per core."""
    return context.settings.backup.jobs or os.cpu_count() or 1


def feed_psql(psql: str, chunks: Iterable[bytes], stage: str, environment: dict[str, str],
              globals_filter: GlobalsFilter | None, owner: RunAs | None, sessions: Sessions | None = None,
              advance: Callable[[int], object] | None = None) -> None:
    """Stream SQL chunks into one psql (ON_ERROR_STOP), through the globals filter when given. With sessions, the
    psql is one of several running at once: it is stopped when another fails (checked before each chunk)."""
    with stream(psql_restore_argv(psql), stage=stage, direction="write", environment=environment, hint=HINT_RETRY,
                run_as=owner, exit_code=ExitCode.RESTORE_FAILED) as session:
        if sessions is not None:
            sessions.add(session)
        for chunk in chunks:
            if sessions is not None:
                sessions.check()
            session.write(globals_filter.feed(chunk) if globals_filter is not None else chunk)
            if advance is not None:
                advance(len(chunk))
        if globals_filter is not None:
            session.write(globals_filter.finish())


class GlobalsFilter(QuietListener):
    """Turns the dump's `CREATE ROLE <role>;` for the bootstrap superuser (and for roles the target already has)
    into a comment: they exist in a fresh cluster, so the one expected difference is handled instead of failing the
    restore. Statements are found by the psql-exact lexer, so text inside a string, a comment or a quoted name is
    never taken for one; only the globals (before the first \\connect) are read, the rest passes untouched.
    """

    def __init__(self, superuser: str, existing_roles: set[str] | frozenset[str] = frozenset()) -> None:
        self.skip = {superuser, *existing_roles}
        self.in_globals = True
        self._lexer = PsqlLexer(self, watch=lambda first, second: (first.text.lower(), second.text.lower()) ==
                                ("create", "role"))
        self._held = bytearray()
        self._held_start = 0
        self._skipped: list[tuple[int, int]] = []

    def feed(self, chunk: bytes) -> bytes:
        if not self.in_globals and not self._held:
            return chunk
        self._held += chunk
        if self.in_globals:
            self._lexer.feed(chunk)
        return self._release(self._lexer.settled if self.in_globals else self._held_start + len(self._held))

    def finish(self) -> bytes:
        if self.in_globals:
            self._lexer.finish()
        return self._release(self._held_start + len(self._held))

    def _release(self, until: int) -> bytes:
        """The held bytes before `until`, each skipped statement replaced by a one-line comment (line count kept,
        nothing of the statement's text can leave the comment)."""
        output, position = bytearray(), self._held_start
        for start, end in [item for item in self._skipped if item[1] <= until]:
            output += self._held[position - self._held_start : start - self._held_start]
            text = bytes(self._held[start - self._held_start : end - self._held_start])
            output += b"-- pgdr: skipped, exists already: " + text.replace(b"\n", b" ").replace(b"\r", b" ")
            output += b"\n" * text.count(b"\n")
            position = end
        self._skipped = [item for item in self._skipped if item[1] > until]
        output += self._held[position - self._held_start : until - self._held_start]
        del self._held[: until - self._held_start]
        self._held_start = until
        return bytes(output)

    def statement(self, statement: Statement) -> None:
        words = statement.words
        if (self.in_globals and len(words) == 4 and statement.keyword(0) == "create" and statement.keyword(1) == "role"
                and words[2].kind in ("ident", "quoted") and words[3].text == ";"):
            name = words[2].text if words[2].kind == "quoted" else words[2].text.lower()
            if name in self.skip:
                self._skipped.append((statement.offset, statement.end))

    def meta_command(self, offset: int, end: int, text: str) -> None:
        if text.startswith(("\\connect", "\\c ")):
            self.in_globals = False


def unprivileged_client(context: Context, psql: str) -> RunAs | None:
    """As root, the psql that feeds a backup to the server runs as the cluster's unprivileged OS user
    (postgres.os_user): defence in depth behind the lexer and pg_dump's \\restrict, so that nothing a backup holds
    could ever run with root's rights. None when not root, when that user does not exist, or when it cannot run
    this psql (said once)."""
    if os.geteuid() != 0:
        return None
    name = context.settings.postgres.os_user
    try:
        owner = RunAs.lookup(name)
    except KeyError:
        context.output.info(f"   psql runs as root: OS user {name} (postgres.os_user) does not exist")
        return None
    path = Path(psql).resolve()
    if not all(folder.stat().st_mode & 0o001 for folder in path.parents) or not path.stat().st_mode & 0o001:
        context.output.info(f"   psql runs as root: OS user {name} cannot run {psql}")
        return None
    context.output.info(f"   psql runs as OS user {name}, not root")
    return owner


def psql_restore_argv(psql: str) -> list[str]:
    return [psql, "--no-psqlrc", "--quiet", "--no-password", "--echo-errors", "--set", "ON_ERROR_STOP=1",
            "--dbname", "postgres", "--file", "-"]




def describe_psql_error(failure: StageFailed) -> str:
    """The first ERROR line and the failing statement, else the exit status. psql (--echo-errors) echoes the
    statement on the line after the error; pg_restore writes `Command was: ...` (the statement, over as many lines
    as it has) below the error's DETAIL and HINT lines, before its next message (`pg_restore: ...`, e.g. "a worker
    process died unexpectedly")."""
    lines = [line.strip() for line in failure.stderr_tail.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "ERROR:" in line:
            following = lines[index + 1:]
            block = following[:next((at for at, text in enumerate(following) if text.startswith("pg_restore:")),
                                    len(following))]
            start = next((at for at, text in enumerate(block) if text.startswith("Command was:")), None)
            command = " ".join(block[start:])[len("Command was:"):].strip() if start is not None else None
            if command is None and not line.startswith("pg_restore:"):
                command = following[0] if following else ""
            statement = command or ""
            return line.split("ERROR:", 1)[1].strip() + (f" (statement: {statement[:200]})" if statement else "")
    return failure.detail
