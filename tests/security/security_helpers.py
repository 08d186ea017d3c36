"""Helpers for the security tier: projects on real clusters, the dumps and counts a restore is judged by, and the
marker folder a psql meta-command smuggled into a backup would write to.

Every test here plays a database user who owns some tables and wants the restore (psql, run as the superuser, by
root) to do something pg_dump did not write. A restore is judged by what the server holds afterwards (pg_dump before
and after, or against psql's own one-stream restore of the same file), never by what pgdr says about it.

Imported as security.security_helpers, by this tier and by the fidelity tier. Named security_helpers (not helpers)
so it cannot clash with a helpers module of another tier.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg import sql

from end_to_end.e2e_helpers import real_bin_dir
from harness import (
    SUPERUSER_PASSWORD,
    Project,
    clean_environment,
    free_port,
    project_config,
    run_as_postgres_kwargs,
    server_bin_dir,
    write_dotenv,
)

RESTRICT_KEY = re.compile(rb"^\\(restrict|unrestrict) [A-Za-z0-9]+$", re.MULTILINE)
ACL_STATEMENTS = (b"GRANT ", b"REVOKE ", b"ALTER DEFAULT PRIVILEGES ")
WARNING_PREFIX = "⚠"


def string_literal(text: str) -> str:
    """A standard-conforming SQL string literal (the servers here all run with standard_conforming_strings on)."""
    return "'" + text.replace("'", "''") + "'"


def with_backup_options(config: str, *lines: str) -> str:
    """pgdr.toml text with `lines` (e.g. 'jobs = 2') added at the top of its [backup] table."""
    assert "\n[backup]\n" in config
    return config.replace("\n[backup]\n", "\n[backup]\n" + "".join(line + "\n" for line in lines), 1)


def set_backup_options(project: Project, *lines: str) -> None:
    project.config.write_text(with_backup_options(project.config.read_text(), *lines))


def new_project(parent: Path, name: str, config: Callable[[int], str] = project_config) -> Project:
    """A local-mode project in parent/name (cluster not created yet); config: pgdr.toml text for a port."""
    root = parent / name
    root.mkdir(parents=True)
    root.chmod(0o755)
    port = free_port()
    (root / "pgdr.toml").write_text(config(port))
    write_dotenv(root / ".env")
    return Project(root, port, clean_environment())


def data_dir(project: Project) -> Path:
    return project.root / ".pgdr" / "pgdata"


def stop_cluster(project: Project, mode: str = "immediate") -> None:
    if (data_dir(project) / "PG_VERSION").exists():
        subprocess.run([str(server_bin_dir() / "pg_ctl"), "-D", str(data_dir(project)), "stop", "-m", mode, "-w"],
                       capture_output=True, check=False, **run_as_postgres_kwargs())  # type: ignore[arg-type]


def keep_pristine(project: Project) -> Path:
    """A copy of the project's freshly initialised data directory (cleanly stopped), to start over from cheaply."""
    stop_cluster(project, "fast")
    pristine = project.root / ".pgdr" / "pgdata.pristine"
    subprocess.run(["cp", "-a", str(data_dir(project)), str(pristine)], check=True)  # as root, owners are kept
    project.ok("up")
    return pristine


def start_over(project: Project, pristine: Path) -> None:
    """The project's cluster as it was right after initdb: what `pgdr clean hard` + `pgdr up` give, without initdb."""
    stop_cluster(project)
    shutil.rmtree(data_dir(project))
    subprocess.run(["cp", "-a", str(pristine), str(data_dir(project))], check=True)
    project.ok("up")


@contextmanager
def extra_project(parent: Path, name: str, *, jobs: int | None = None, init: bool = False,
                  config: Callable[[int], str] = project_config) -> Iterator[Project]:
    """A second project with its own cluster up (`pgdr up`, and `pgdr init` with init); stopped after."""
    project = new_project(parent, name, config)
    if jobs is not None:
        set_backup_options(project, f"jobs = {jobs}")
    try:
        project.ok("up")
        if init:
            project.ok("init")
        yield project
    finally:
        stop_cluster(project)


@contextmanager
def module_workdir(prefix: str) -> Iterator[Path]:
    """A folder for a module-wide fixture, traversable by the postgres OS user (like the `workdir` fixture)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def marker_folder(parent: Path) -> Path:
    """Where the attacker's `\\!` commands write. World-writable, so that a marker is written (and the test fails)
    whichever OS user the restoring psql runs as."""
    folder = parent / "markers"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def assert_no_marker(folder: Path, *also: Path) -> None:
    written = sorted(path.name for path in folder.iterdir()) if folder.exists() else []
    written += [str(path) for path in also if path.exists()]
    assert not written, f"a shell command hidden in the backup ran during the restore: it wrote {written}"


def superuser_environment(project: Project, database: str = "postgres") -> dict[str, str]:
    return {**clean_environment(), "PGHOST": "127.0.0.1", "PGPORT": str(project.port), "PGUSER": "postgres",
            "PGPASSWORD": SUPERUSER_PASSWORD, "PGDATABASE": database}


def normalised(dump: bytes) -> bytes:
    """A pg_dump/pg_dumpall script without what legitimately changes from one dump/restore to the next: the random
    `\\restrict` keys, and the order of the entries of one ACL. An ACL is a set, but pg_dump prints its grants in the
    order of the catalog's array, which a restore rebuilds in dump order; so each run of adjacent GRANT, REVOKE and
    ALTER DEFAULT PRIVILEGES lines is sorted. A grant added or lost still shows."""
    lines = RESTRICT_KEY.sub(rb"\\\1 KEY", dump).split(b"\n")
    output: list[bytes] = []
    run: list[bytes] = []
    for line in [*lines, None]:
        if line is not None and line.startswith(ACL_STATEMENTS):
            run.append(line)
            continue
        output += sorted(run)
        run = []
        if line is not None:
            output.append(line)
    return b"\n".join(output)


def pg_dump(project: Project, database: str) -> bytes:
    """Schema and data of one database, as the superuser, keys normalised."""
    result = subprocess.run([str(real_bin_dir() / "pg_dump"), "--no-password", "--quote-all-identifiers",
                             "--dbname", database], capture_output=True, check=False, timeout=120,
                            env=superuser_environment(project))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return normalised(result.stdout)


def pg_dumpall(project: Project) -> bytes:
    result = subprocess.run([str(real_bin_dir() / "pg_dumpall"), "--no-password", "--no-role-passwords",
                             "--quote-all-identifiers"], capture_output=True, check=False, timeout=120,
                            env=superuser_environment(project))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return normalised(result.stdout)


def dump_difference(expected: bytes, actual: bytes, limit: int = 60) -> str:
    lines = difflib.unified_diff(expected.decode(errors="replace").splitlines(),
                                 actual.decode(errors="replace").splitlines(), "expected", "actual", lineterm="")
    return "\n".join(list(lines)[:limit])


def assert_same_dump(expected: bytes, actual: bytes, what: str) -> None:
    assert actual == expected, f"{what} differs:\n{dump_difference(expected, actual)}"


def latest_key(project: Project) -> str:
    return str(json.loads(project.ok("list", "--json").stdout)[-1]["key"])


def read_manifest(project: Project, key: str) -> dict[str, object]:
    return json.loads((project.backups / (key + ".manifest.json")).read_text())


def manifest_counts(manifest: dict[str, object], database: str) -> dict[tuple[str, str], int]:
    entries = [entry for entry in manifest["databases"] if entry["name"] == database]  # type: ignore[union-attr]
    assert len(entries) == 1, f"manifest lists database {database!r} {len(entries)} times"
    return {(table["schema"], table["table"]): table["rows"] for table in entries[0]["tables"]}


def all_manifest_counts(manifest: dict[str, object]) -> dict[str, dict[tuple[str, str], int]]:
    return {entry["name"]: manifest_counts(manifest, entry["name"])  # type: ignore[index]
            for entry in manifest["databases"]}  # type: ignore[union-attr]


def table_counts(project: Project, database: str) -> dict[tuple[str, str], int]:
    """SELECT count(*) of every ordinary table (what pg_dump writes a COPY block for)."""
    query = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
             "AND n.nspname !~ '^pg_toast'")
    with project.connect(database) as connection:
        tables = [(row[0], row[1]) for row in connection.execute(query)]
        return {(schema, table): int(connection.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                ).fetchone()[0]) for schema, table in tables}


def databases_of(project: Project) -> list[str]:
    with project.connect() as connection:
        return [row[0] for row in connection.execute(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]


def all_table_counts(project: Project) -> dict[str, dict[tuple[str, str], int]]:
    return {database: table_counts(project, database) for database in databases_of(project)}


def copy_backup(source: Project, target: Project, key: str) -> None:
    """The backup and its manifest into target's backup dir (manifest last, as pgdr writes it)."""
    for name in (key, key + ".manifest.json"):
        destination = target.backups / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.backups / name, destination)


def warnings_in(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in output_of(result).splitlines() if line.lstrip().startswith(WARNING_PREFIX)]


def warning_text(result: subprocess.CompletedProcess[str]) -> str:
    """The output from the first warning on (a warning may go on over several lines); '' without a warning."""
    lines = output_of(result).splitlines()
    first = next((index for index, line in enumerate(lines) if line.lstrip().startswith(WARNING_PREFIX)), len(lines))
    return "\n".join(lines[first:])


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def is_superuser(project: Project, role: str) -> bool:
    with project.connect() as connection:
        row = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    assert row is not None, f"role {role!r} is missing"
    return bool(row[0])


def psql_restore(project: Project, backup: Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The reference: `gunzip -c FILE | psql -X -v ON_ERROR_STOP=1 -f -`, the whole script in one psql stream."""
    environment = {**superuser_environment(project), "LC_ALL": "C"}
    with subprocess.Popen(["gunzip", "-c", str(backup)], stdout=subprocess.PIPE, cwd=cwd) as gunzip:
        result = subprocess.run([str(real_bin_dir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                                stdin=gunzip.stdout, capture_output=True, check=False, cwd=cwd, env=environment,
                                timeout=300)
        assert gunzip.stdout is not None
        gunzip.stdout.close()
    assert gunzip.returncode == 0, f"gunzip -c {backup} exited {gunzip.returncode}"
    return result

