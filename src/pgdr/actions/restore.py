"""pgdr restore: check the backup, refuse to overwrite data without --clean, then stream it into psql.

Order matters: the checksum and a full decompression pass run before the server is touched; a target with user
databases or roles is refused unless --clean, which first takes a safety backup of the current state.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pgdr.actions.preflight import preflight
from pgdr.catalog import BackupRecord, find, latest, list_backups
from pgdr.compression import DECOMPRESSION_ERRORS, make_decompressor
from pgdr.context import Context
from pgdr.dumpscan import DumpScanner
from pgdr.encryption import DecryptingReader
from pgdr.errors import IntegrityError, Interrupted, Refused, RestoreFailed, SecretMissing, StageFailed, UsageError
from pgdr.locking import locked
from pgdr.postgres import inventory
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import client_environment, session
from pgdr.run import CHUNK_SIZE, RunAs, stream
from pgdr.sqllexer import PsqlLexer, QuietListener, Statement
from pgdr.state import pending_safety_backup, read_restore_record, write_restore_record
from pgdr.storage import Storage, Upload, open_storage
from pgdr.storage.local import LocalStorage

# Session settings for the restore's connections (psql passes PGOPTIONS to every \connect): a commit need not
# wait for the WAL flush (a crash mid-restore means restoring again anyway), and index builds get more memory.
# A database's or role's own settings must not stop its restore: a read-only default, or timeouts, restored with
# it (ALTER DATABASE ... SET default_transaction_read_only = on) apply to every later session; these override
# them for the restore's sessions only, and the settings themselves come back as they were.
LOAD_SESSION_OPTIONS = ("-c synchronous_commit=off -c maintenance_work_mem=256MB -c default_transaction_read_only=off "
                        "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0")
TRANSACTION_TIMEOUT_MAJOR = 17  # transaction_timeout exists from PostgreSQL 17; naming it before is a FATAL error
HINT_RETRY = "fix the cause above, then `pgdr restore latest --clean` (or `pgdr clean soft --yes` and restore again)"


def load_session_options(context: Context) -> str:
    """LOAD_SESSION_OPTIONS for this server: with transaction_timeout off too where the server has it."""
    major, _ = context.server_version()
    return LOAD_SESSION_OPTIONS + (" -c transaction_timeout=0" if major >= TRANSACTION_TIMEOUT_MAJOR else "")


@dataclass
class RestoreResult:
    record: BackupRecord
    safety_backup: str | None


def select_backup(context: Context, source: str, key: str | None, allow_suspicious: bool = False
                  ) -> tuple[Storage, BackupRecord]:
    """The named backup, or the newest one; a newest backup flagged suspicious (smaller than backup.min_size,
    under half the one before) is refused unless allow_suspicious: `latest` must not quietly mean "the empty dump
    of a broken night". A backup named by key is the user's explicit choice."""
    storage = open_storage(context.settings, source)
    records = list_backups(storage, context.settings.backup.min_size, include_safety=key is not None)
    if key is not None:
        return storage, find(records, key, storage.describe())
    record = latest(records, storage.describe())
    if record.flags and not allow_suspicious:
        raise Refused(f"the newest backup {record.key} is flagged suspicious: {'; '.join(record.flags)}",
                      "look at it with `pgdr list`; restore it anyway with --allow-suspicious, or an older one "
                      "with `pgdr restore file KEY`")
    if record.flags:
        context.output.warn(f"the newest backup {record.key} is flagged suspicious: {'; '.join(record.flags)} "
                            "(--allow-suspicious)")
    return storage, record


def check_backup(context: Context, storage: Storage, record: BackupRecord, copy_to: Upload | None = None) -> None:
    """Read the whole backup once: size and sha256 against the manifest; without a manifest (the old pipeline's
    files), or when encrypted (the identity must work), also full decompression and the end-of-dump marker.

    A matching sha256 proves the file is, bit for bit, the one pgdr wrote after checking the dump's end marker, so
    decompressing it again would prove nothing more and would cost a second of RTO per GB.
    With copy_to, every chunk read is also written there (the download of a remote backup), so the copy is
    checked by the same single pass; the caller commits it only when this returns.
    """
    manifest = record.manifest
    if manifest is not None and manifest.size != record.size:
        raise IntegrityError(
            f"backup {record.key} is {record.size} bytes but its manifest says {manifest.size}",
            "the backup is truncated or was replaced: restore another one (see `pgdr list`)",
        )
    decompress = manifest is None or record.key.encrypted
    checks = ["checksum"] * (manifest is not None) + ["decompression"] * decompress
    context.output.step(f"Checking {record.key} ({', '.join(checks)})")
    digest = hashlib.sha256()
    label = "Downloading" if copy_to is not None else "Checking"
    with storage.open_download(record.key.key) as handle, context.output.progress(label, record.size) as bar:

        def on_chunk(chunk: bytes) -> None:
            bar.advance(len(chunk))
            if copy_to is not None:
                copy_to.write(chunk)
            digest.update(chunk)

        reader = TeeReader(handle, on_chunk)
        scanner = _decompress_all(context, reader, record) if decompress else _read_all(reader)
    _check_scan(record, digest.hexdigest(), scanner)


def _discard(data: bytes) -> None:
    """Decompressed bytes nobody needs to look at."""


def _read_all(reader: TeeReader) -> DumpScanner | None:
    """Only the checksum is wanted: read through, nothing to scan."""
    for _ in iter(lambda: reader.read(CHUNK_SIZE), b""):
        pass
    return None


def _decompress_all(context: Context, reader: TeeReader, record: BackupRecord) -> DumpScanner | None:
    """Decompress (and decrypt) the whole backup. Without a manifest (the old pipeline's files) the SQL also goes
    through the psql-exact lexer: its end marker counts only where psql would read the dump's own closing comment,
    never inside a row or a string. With one (an encrypted backup, decrypted to prove the identity works), the
    sha256 already ties the file to the lexer's check at backup time."""
    decompressor = make_decompressor(record.key.compression)
    scanner = DumpScanner() if record.manifest is None else None
    feed = scanner.feed if scanner is not None else _discard
    try:
        with plaintext(context, reader, record) as plain:
            for chunk in iter(lambda: plain.read(CHUNK_SIZE), b""):
                feed(decompressor.decompress(chunk))
            feed(decompressor.finish())
        if scanner is not None:
            scanner.finish()
    except DECOMPRESSION_ERRORS as error:
        raise IntegrityError(
            f"backup {record.key} does not decompress as {record.key.compression}: {error}",
            "the backup is corrupt: restore another one (see `pgdr list`)",
        ) from None
    return scanner


class TeeReader:
    """Hands every chunk read to a callback (hash, progress, local copy) on its way to the reader."""

    def __init__(self, source: BinaryIO, on_chunk: Callable[[bytes], None]) -> None:
        self._source = source
        self._on_chunk = on_chunk

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        if chunk:
            self._on_chunk(chunk)
        return chunk

    def close(self) -> None:
        """The source belongs to the caller: nothing to release here (DecryptingReader has a thread and a pipe)."""

    def __enter__(self) -> TeeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plaintext(context: Context, source: TeeReader, record: BackupRecord) -> TeeReader | DecryptingReader:
    """The backup's bytes as compressed SQL: decrypted with the age identity secret when the backup is encrypted."""
    if not record.key.encrypted:
        return source
    from pgdr.encryption import parse_identity

    name = context.settings.backup.age_identity
    if context.secrets.lookup(name) is None:
        raise SecretMissing(f"backup {record.key} is encrypted with age, and secret {name} (the identity) is missing",
                            f"set {name} to the private key (AGE-SECRET-KEY-...) in env, .env or SSM")
    return DecryptingReader(source, parse_identity(context.secrets.get(name), name))  # type: ignore[arg-type]


def _check_scan(record: BackupRecord, sha256: str, scanner: DumpScanner | None) -> None:
    if record.manifest is not None and record.manifest.sha256 != sha256:
        raise IntegrityError(
            f"backup {record.key} does not match its manifest's sha256",
            "the backup is corrupt: restore another one (see `pgdr list`)",
        )
    if scanner is not None and not scanner.complete:
        raise IntegrityError(
            f"backup {record.key} is incomplete: the dump's end marker is missing",
            "the backup was cut short: restore another one (see `pgdr list`)",
        )


def fetch_to_local(context: Context, storage: Storage, record: BackupRecord) -> LocalStorage:
    """Download a remote backup into the backup dir, checked on the way; its manifest follows it, last.

    The copy is written to a hidden temporary name and renamed into place only when the checks passed, so a
    corrupt or interrupted download leaves nothing that `pgdr list` or `restore latest` would pick up.
    """
    local = LocalStorage(context.settings.backup.dir)
    context.output.step(f"Downloading {record.key} from {storage.describe()} to {local.describe()}")
    manifest = storage.get_bytes(record.key.manifest_key) if record.manifest is not None else None
    upload = local.open_upload(record.key.key)
    try:
        check_backup(context, storage, record, copy_to=upload)
        upload.commit()
    except BaseException:
        upload.abort()
        raise
    if manifest is not None:
        local.put_bytes(record.key.manifest_key, manifest)
    return local


def check_versions(record: BackupRecord, server_major: int) -> None:
    manifest = record.manifest
    if manifest is None:
        return
    backup_major = int(manifest.server_version.split(".")[0].split()[-1]) if manifest.server_version else 0
    if backup_major > server_major:
        raise Refused(
            f"backup {record.key} comes from PostgreSQL {backup_major}, newer than this server ({server_major})",
            f"restore into a PostgreSQL {backup_major} server or newer",
        )


def existing_data(context: Context) -> tuple[list[str], list[str]]:
    endpoint = context.superuser_endpoint()
    return (inventory.user_databases(endpoint),
            inventory.user_roles(endpoint, context.settings.postgres.superuser))


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


def stream_into_psql(context: Context, psql: str, handle: BinaryIO, record: BackupRecord) -> None:
    decompressor = make_decompressor(record.key.compression)
    globals_filter = GlobalsFilter(context.settings.postgres.superuser)
    owner = unprivileged_client(context, psql)
    with client_environment(context.superuser_endpoint(), owner) as environment, stream(
        psql_restore_argv(psql), stage="psql", direction="write",
        environment={**environment, "PGOPTIONS": load_session_options(context)}, hint=HINT_RETRY, run_as=owner,
    ) as restore, context.output.progress("Restoring", record.size) as bar:
        with plaintext(context, TeeReader(handle, lambda chunk: bar.advance(len(chunk))), record) as plain:
            for chunk in iter(lambda: plain.read(CHUNK_SIZE), b""):
                restore.write(globals_filter.feed(decompressor.decompress(chunk)))
        restore.write(globals_filter.feed(decompressor.finish()) + globals_filter.finish())


def refuse_existing(databases: list[str], roles: list[str], command: str) -> None:
    parts = []
    if databases:
        parts.append(f"databases {', '.join(databases)}")
    if roles:
        parts.append(f"roles {', '.join(roles)}")
    raise Refused(
        f"the server already has {' and '.join(parts)}; refusing to restore over live data",
        f"re-run as `{command} --clean` (takes a safety backup, cleans, then restores)",
    )


@locked("restore")
def restore(context: Context, source: str = "local", key: str | None = None, clean: bool = False,
            command: str = "", database: str | None = None, allow_suspicious: bool = False) -> RestoreResult:
    """command: how the user would re-run this with --clean (named in the refusal).
    database: restore only this database (split backups)."""
    storage, record = select_backup(context, source, key, allow_suspicious)
    split = record.key.format == "split"
    if database is not None and not split:
        raise UsageError(f"--database needs a split backup; {record.key} is one pg_dumpall script",
                         "restore the whole backup, or set backup.format = \"split\" for future backups")
    toolset, server_major = context.client_tools(("psql", "pg_dumpall", "pg_restore") if split else ("psql",))
    check_versions(record, server_major)
    storage = _checked_local_copy(context, storage, record, toolset)
    preflight(context, storage, record, server_major, database)  # the target offers what the backup needs
    databases, roles = existing_data(context)
    conflicts = [name for name in databases if database is None or name == database]
    safety_key = pending_safety_backup(context.settings.state_dir)
    if conflicts or (roles and database is None):
        command = command or f"pgdr restore {'file ' + record.key.key if key else 'latest'}"
        command += f" --database {database}" if database else ""
        if not clean:
            refuse_existing(conflicts, roles if database is None else [], command)
        context.confirm_destructive(f"Replace databases {', '.join(conflicts) or '(none)'} with {record.key}")
        safety_key = _safety_backup(context)
        _clean_target(context, database, safety_key)
        databases, roles = existing_data(context)
    _apply(context, toolset, storage, record, database, set(roles), safety_key)
    return RestoreResult(record, safety_key)


def _checked_local_copy(context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> Storage:
    """Check the backup completely before the server is touched; a remote one is downloaded on the way."""
    if record.manifest_error:  # a damaged manifest must not turn a checked backup into an unchecked one
        raise IntegrityError(f"backup {record.key}: {record.manifest_error}",
                             "restore another backup (see `pgdr list`), or remove the damaged manifest knowingly")
    if record.key.format == "split":
        if record.manifest is None:
            raise IntegrityError(f"split backup {record.key} has no readable manifest", "restore another backup")
        from pgdr.actions.split import check_split

        return check_split(context, storage, record, toolset)
    if storage.local_path(record.key.key) is None:
        return fetch_to_local(context, storage, record)  # checked while downloading, restored from the copy
    check_backup(context, storage, record)
    return storage


def _clean_target(context: Context, database: str | None, safety_key: str | None) -> None:
    from pgdr.actions.clean import clean_soft, drop_database

    if database is None:
        clean_soft(context, confirmed=True, safety_backup=safety_key)
    else:
        drop_database(context, database)


def _safety_backup(context: Context) -> str | None:
    """A backup of what the clean is about to drop, unless the cluster holds only the remains of a restore that
    did not complete: backing those up again would rotate the real old state out of retention (keep_safety), so
    the first attempt's safety backup stays the one named."""
    from pgdr.actions.backup import backup

    record = read_restore_record(context.settings.state_dir)
    if record is not None and record.get("status") != "complete":
        earlier = record.get("safety_backup")
        context.output.info(f"   no safety backup: the cluster holds an incomplete restore of {record.get('key')}"
                            + (f"; the state from before it is in safety backup {earlier}" if earlier else ""))
        return str(earlier) if earlier else None
    context.output.step("Taking a safety backup of the current state first")
    result = backup(context, targets=["local"], safety=True)
    return result.key.key


def _apply(context: Context, toolset: Toolset, storage: Storage, record: BackupRecord, database: str | None,
           existing_roles: set[str], safety_key: str | None) -> None:
    state_dir = context.settings.state_dir
    context.output.step(f"Restoring {record.key}{f' (database {database})' if database else ''} from "
                        f"{storage.describe()}")
    manifest = record.manifest
    if manifest is not None and database is not None:
        manifest = manifest.model_copy(update={"databases": [item for item in manifest.databases
                                                             if item.name == database]})
    _say_left_out(context, record)
    write_restore_record(state_dir, record.key.key, storage.name, "incomplete", manifest, safety_key)
    hint = HINT_RETRY + (f"; the state from before is in safety backup {safety_key}" if safety_key else "")
    try:
        if record.key.format == "split":
            from pgdr.actions.split import restore_parts

            restore_parts(context, toolset, storage, record, database, existing_roles)  # type: ignore[arg-type]
        else:
            _restore_plain(context, toolset, storage, record)
        _finish(context, record, database)
    except StageFailed as failure:
        where = f" in {failure.stage}" if failure.stage != "psql" else ""
        raise RestoreFailed(
            f"restore of {record.key} stopped{where}: {describe_psql_error(failure)}; the cluster holds a partial "
            "restore",
            hint,
        ) from None
    except RestoreFailed as failure:
        if safety_key and safety_key not in failure.hint:
            failure.hint += f"; the state from before is in safety backup {safety_key}"
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"restore of {record.key} interrupted: the cluster holds a partial restore",
                          "restore again over it: `pgdr restore latest --clean` (or `pgdr clean soft --yes` and "
                          "restore again)" + (f"; the state from before is in safety backup {safety_key}"
                                              if safety_key else "")) from None
    write_restore_record(state_dir, record.key.key, storage.name, "complete", manifest, safety_key)
    context.output.success("Database restored successfully")
    context.output.info("Passwords are not in backups: run `pgdr init` to set every user's password.")


def _say_left_out(context: Context, record: BackupRecord) -> None:
    for item in record.manifest.left_out if record.manifest is not None else []:
        context.output.warn(f"backup {record.key} does not hold database {item.name} ({item.reason})")


def _finish(context: Context, record: BackupRecord, database: str | None) -> None:
    """Put back what pg_dumpall leaves out (owner, privileges, comment and settings of postgres and template1),
    then make the restore durable: its sessions commit without waiting for the WAL flush (LOAD_SESSION_OPTIONS),
    so a checkpoint comes before the restore is recorded complete."""
    from pgdr.postgres.properties import apply_properties

    endpoint = context.superuser_endpoint()
    for warning in apply_properties(endpoint, record.manifest, only=database):
        context.output.warn(warning)
    with session(endpoint) as connection:
        connection.execute("CHECKPOINT")


def _restore_plain(context: Context, toolset: Toolset, storage: Storage, record: BackupRecord) -> None:
    """Database by database, several at a time, when the manifest says where each starts; else in one stream."""
    from pgdr.actions.restore_sections import restore_sections, section_ranges
    from pgdr.actions.split import jobs

    ranges = section_ranges(record.manifest)
    if ranges and jobs(context) > 1:
        restore_sections(context, toolset.path("psql"), storage, record, ranges, jobs(context))
        return
    if jobs(context) > 1:
        context.output.info("   restoring in one stream: the backup's database boundaries are not proven by "
                            "pg_dump's \\restrict keys (older pg_dumpall, older pgdr, or the old pipeline)")
    with storage.open_download(record.key.key) as handle:
        stream_into_psql(context, toolset.path("psql"), handle, record)


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
