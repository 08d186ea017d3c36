"""The one place that starts processes.

Commands are argv lists (never a shell). Every stage's exit status is checked; a failing stage is reported with
the tail of its stderr (redacted). Children get an environment without pgdr's secrets unless they need one.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pwd
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from pgdr.errors import ExitCode, StageFailed
from pgdr.redact import redact

CHUNK_SIZE = 1024 * 1024
PIPE_SIZE = 1024 * 1024
STDERR_TAIL_BYTES = 4000
SECRET_ENVIRONMENT = {"PGPASSWORD", "PGPASSFILE", "DATABASE_URL"}


@dataclass(frozen=True)
class RunAs:
    """An unprivileged OS user for processes PostgreSQL refuses to run as root (initdb, postgres), and for the psql
    that feeds a backup to the server (what a backup holds must never run with root's rights)."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


_secret_names: set[str] = set()


def register_secret_name(name: str) -> None:
    """Environment variables with these names are removed from every child that does not ask for them."""
    _secret_names.add(name)


def child_environment(extra: Mapping[str, str] | None = None, keep_secrets: bool = False) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if keep_secrets or (name not in SECRET_ENVIRONMENT and name not in _secret_names)
    }
    environment.update(extra or {})
    return environment


def describe(argv: Sequence[str]) -> str:
    return redact(" ".join(argv))


def _tail(data: bytes) -> str:
    return redact(data[-STDERR_TAIL_BYTES:].decode("utf-8", "replace").strip())


def _user_options(run_as: RunAs | None) -> dict[str, object]:
    if run_as is None or os.geteuid() != 0:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def run(
    argv: Sequence[str],
    *,
    stage: str,
    environment: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    input_data: bytes | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
    check: bool = True,
    hint: str = "",
    exit_code: ExitCode = ExitCode.UNEXPECTED,
) -> subprocess.CompletedProcess[bytes]:
    """Run one command to completion, capturing its output; raise StageFailed (with exit_code) when it fails."""
    try:
        completed = subprocess.run(  # type: ignore[call-overload]  # noqa: S603 - argv list, no shell
            list(argv),
            input=input_data,
            capture_output=True,
            env=dict(environment) if environment is not None else child_environment(),
            timeout=timeout,
            cwd=cwd,
            check=False,
            **_user_options(run_as),  # type: ignore[arg-type]
        )
    except FileNotFoundError:
        hint = hint or "install PostgreSQL client tools"
        raise StageFailed(stage, f"program not found: {argv[0]}", hint=hint, exit_code=ExitCode.BINARIES) from None
    except subprocess.TimeoutExpired:
        raise StageFailed(stage, f"timed out after {timeout:.0f}s: {describe(argv)}", hint=hint,
                          exit_code=exit_code) from None
    if check and completed.returncode != 0:
        raise StageFailed(stage, _exit_message(completed.returncode, completed.stderr or completed.stdout), hint=hint,
                          exit_code=exit_code)
    return completed


def _exit_message(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        status = f"killed by signal {signal.Signals(-returncode).name}"
    else:
        status = f"exit status {returncode}"
    tail = _tail(stderr)
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    # psql ends an error with `LINE n: ...` and a lone caret: the ERROR/FATAL line is the one that says what failed
    errors = [line for line in lines if any(word in line for word in ("ERROR:", "FATAL:", "error:"))]
    return f"{status}: {(errors or lines)[-1]}" if lines else status


class Stream:
    """A running process whose stdout or stdin pgdr streams; stderr goes to an unnamed temp file."""

    def __init__(self, process: subprocess.Popen[bytes], stderr_file: IO[bytes], stage: str, hint: str,
                 exit_code: ExitCode = ExitCode.UNEXPECTED) -> None:
        self.process = process
        self.stage = stage
        self.hint = hint
        self.exit_code = exit_code
        self._stderr_file = stderr_file

    def stderr_text(self) -> str:
        """The start and the end of stderr: the first error (often the cause: pg_restore --jobs goes on to report
        the workers it lost) and the last lines, each at most STDERR_TAIL_BYTES."""
        self._stderr_file.seek(0, os.SEEK_END)
        size = self._stderr_file.tell()
        self._stderr_file.seek(0)
        head = self._stderr_file.read(STDERR_TAIL_BYTES) if size > 2 * STDERR_TAIL_BYTES else b""
        self._stderr_file.seek(max(0, size - STDERR_TAIL_BYTES))
        tail = self._stderr_file.read()
        if not head:
            return _tail(tail)
        return redact((head[: head.rfind(b"\n") + 1] + b"...\n" + tail).decode("utf-8", "replace").strip())

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        assert self.process.stdout is not None
        return self.process.stdout.read1(size)  # type: ignore[attr-defined]

    def read_into(self, view: memoryview) -> int:
        """One read of what the pipe holds, at most len(view) bytes, straight into view (no new buffer); 0 at the
        end."""
        assert self.process.stdout is not None
        return self.process.stdout.readinto1(view)  # type: ignore[attr-defined]

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except BrokenPipeError:
            self.wait_and_check()
            raise StageFailed(self.stage, "stopped reading its input", self.stderr_text(), self.hint,
                              self.exit_code) from None

    def offer(self, data: bytes) -> bool:
        """write(), unless the process has stopped reading its input because it read all it needed (`pg_restore
        --list` stops after the table of contents): False then. Its exit status is checked on exit as always."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except BrokenPipeError:
            return False
        return True

    def close_input(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass

    def wait_and_check(self) -> None:
        self.close_input()
        returncode = self.process.wait()
        if returncode != 0:
            stderr = self.stderr_text()
            raise StageFailed(self.stage, _exit_message(returncode, stderr.encode()), stderr, self.hint, self.exit_code)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.close_input()
        self.process.wait()


def interactive(argv: Sequence[str], environment: Mapping[str, str]) -> int:
    """Run a program attached to the terminal (pgdr psql). Ctrl-C belongs to it (psql cancels the query), so
    pgdr ignores SIGINT until it exits, instead of dying and leaving it orphaned."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = subprocess.Popen(list(argv), env=dict(environment),  # noqa: S603 - argv list, no shell
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        return process.wait()
    except FileNotFoundError:
        raise StageFailed(argv[0], "program not found", hint="install PostgreSQL client tools",
                          exit_code=ExitCode.BINARIES) from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer wake-ups between pgdr and pg_dumpall/psql (Linux only)."""
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size: keep the default


@contextmanager
def stream(
    argv: Sequence[str],
    *,
    stage: str,
    direction: str,
    environment: Mapping[str, str] | None = None,
    hint: str = "",
    run_as: RunAs | None = None,
    exit_code: ExitCode = ExitCode.UNEXPECTED,
) -> Iterator[Stream]:
    """Start argv with its stdout ('read') or stdin ('write') connected to pgdr; as run_as when pgdr is root.

    On normal exit the process must end with status 0, else StageFailed; on any exception it is killed.
    """
    with tempfile.TemporaryFile() as stderr_file:
        try:
            process = subprocess.Popen(  # type: ignore[call-overload]  # noqa: S603 - argv list, no shell
                list(argv),
                stdin=subprocess.PIPE if direction == "write" else subprocess.DEVNULL,
                stdout=subprocess.PIPE if direction == "read" else stderr_file,
                stderr=stderr_file,
                env=dict(environment) if environment is not None else child_environment(),
                **_user_options(run_as),
            )
        except FileNotFoundError:
            raise StageFailed(stage, f"program not found: {argv[0]}", hint=hint, exit_code=ExitCode.BINARIES) from None
        _widen_pipe(process.stdout if direction == "read" else process.stdin)
        running = Stream(process, stderr_file, stage, hint, exit_code)
        try:
            yield running
        except BaseException:
            running.kill()
            raise
        running.wait_and_check()


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int, prctl: Any) -> None:
    """In the child, before exec: SIGTERM when the pgdr thread that started it dies (even by kill -9), so a
    restarted pgdr never finds the old process still holding what it held (a replication slot)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # pgdr died before prctl took effect
        os._exit(1)


class Service:
    """A long-running process pgdr supervises (pg_receivewal): output to an unnamed temp file, its exit read
    without blocking, stopped by a signal (then killed if it does not end), and dying with pgdr on Linux."""

    def __init__(self, process: subprocess.Popen[bytes], output: IO[bytes], stage: str) -> None:
        self.process = process
        self.stage = stage
        self._output = output

    def poll(self) -> int | None:
        return self.process.poll()

    def output_text(self) -> str:
        """The redacted tail of what it wrote (stdout and stderr)."""
        self._output.seek(max(0, os.fstat(self._output.fileno()).st_size - STDERR_TAIL_BYTES))
        return _tail(self._output.read())

    def failure(self) -> str:
        """Its exit status and the line saying why, as StageFailed words it."""
        return _exit_message(self.process.returncode or 0, self.output_text().encode())

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal it, wait up to `timeout` seconds, then kill it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def close(self) -> None:
        self.stop()
        self._output.close()


def start_service(argv: Sequence[str], *, stage: str, environment: Mapping[str, str] | None = None,
                  hint: str = "") -> Service:
    """Start argv in the background; the caller polls it, and stops and closes it (Service.close)."""
    output = tempfile.TemporaryFile()  # noqa: SIM115 - Service.close closes it
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = getattr(libc, "prctl", None)
        parent = os.getpid()
        process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            list(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            env=dict(environment) if environment is not None else child_environment(),
            preexec_fn=(lambda: _die_with_parent(parent, prctl)) if prctl is not None else None)
    except FileNotFoundError:
        output.close()
        raise StageFailed(stage, f"program not found: {argv[0]}", hint=hint, exit_code=ExitCode.BINARIES) from None
    except BaseException:
        output.close()
        raise
    return Service(process, output, stage)
