"""Exception hierarchy. Every error carries a one-line hint (the fix) and an exit code.

The exit codes are documented in the README; scripts and cron depend on them, so never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    REFUSED = 3
    SERVER_UNREACHABLE = 4
    AUTHENTICATION = 5
    SECRET_MISSING = 6
    BACKUP_FAILED = 7
    RESTORE_FAILED = 8
    INTEGRITY = 9
    VERIFY_FAILED = 10
    STORAGE = 11
    BINARIES = 12
    CLUSTER = 13
    RTO_EXCEEDED = 14
    CHECK_FAILED = 15
    PROVISION_FAILED = 16
    INTERRUPTED = 130


class PgdrError(Exception):
    """Base class: a message, a hint telling the user what to do next, and an exit code."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, object] | None = None  # a machine-readable report of the failed operation

    def __str__(self) -> str:
        return self.message


class ConfigError(PgdrError):
    exit_code = ExitCode.CONFIG


class UsageError(PgdrError):
    exit_code = ExitCode.CONFIG


class Refused(PgdrError):
    """A destructive or unsafe operation was not confirmed, or the target is not in a safe state."""

    exit_code = ExitCode.REFUSED


class ServerUnreachable(PgdrError):
    exit_code = ExitCode.SERVER_UNREACHABLE


class AuthenticationFailed(PgdrError):
    exit_code = ExitCode.AUTHENTICATION


class SecretMissing(PgdrError):
    exit_code = ExitCode.SECRET_MISSING


class BackupFailed(PgdrError):
    exit_code = ExitCode.BACKUP_FAILED


class RestoreFailed(PgdrError):
    exit_code = ExitCode.RESTORE_FAILED


class CleanFailed(RestoreFailed):
    """A clean (clean soft, restore --clean) that stopped midway: the message says what was already dropped."""


class IntegrityError(PgdrError):
    """A backup is corrupt, truncated, or does not match its manifest."""

    exit_code = ExitCode.INTEGRITY


class VerifyFailed(PgdrError):
    exit_code = ExitCode.VERIFY_FAILED


class StorageError(PgdrError):
    exit_code = ExitCode.STORAGE


class BinariesError(PgdrError):
    exit_code = ExitCode.BINARIES


class ClusterError(PgdrError):
    exit_code = ExitCode.CLUSTER


class ProvisionFailed(PgdrError):
    """An init step or a migration failed (init is idempotent: fix and run it again)."""

    exit_code = ExitCode.PROVISION_FAILED


class RtoExceeded(PgdrError):
    """A drill recovered correctly but slower than recovery.rto_objective."""

    exit_code = ExitCode.RTO_EXCEEDED


class StageFailed(PgdrError):
    """One stage of a process pipeline failed; names the stage and the tail of its stderr. Its exit code is the
    class of work the stage belongs to (a dump: BACKUP_FAILED, reading a backup's archive: INTEGRITY, ...), given
    where the process is started, so a failure nobody translates still exits with a code that says what failed."""

    def __init__(self, stage: str, message: str, stderr_tail: str = "", hint: str = "",
                 exit_code: ExitCode = ExitCode.UNEXPECTED) -> None:
        super().__init__(f"{stage} failed: {message}", hint)
        self.exit_code = exit_code
        self.stage = stage
        self.detail = message
        self.stderr_tail = stderr_tail


class Interrupted(PgdrError):
    exit_code = ExitCode.INTERRUPTED
