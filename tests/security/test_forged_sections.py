"""A parallel restore cuts the dump where each database's part starts. Nothing a database user writes may choose
those cuts: not a table name with a newline followed by rows that look like pg_dumpall's section header, not a
function body holding the same lines.

The attack of issue 11, step by step: a table called "zz<newline>z" puts its `COPY ... FROM stdin;` over two lines,
so a line-by-line scanner never sees its data start and takes the rows `--` / `-- Database "evil" dump` / `--` for
a database boundary. The restore then starts a fresh psql (no `\\restrict` in force, as the superuser, as root) at
that row. There the next row, a lone quote, opens a string, which turns every later string literal of the dump
inside out: the text of the attacker's index comment is read as psql input, and its `\\!` lines run as root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import USER_PASSWORD, Project
from security.security_helpers import (
    assert_no_marker,
    assert_same_dump,
    copy_backup,
    extra_project,
    is_superuser,
    latest_key,
    manifest_counts,
    marker_folder,
    pg_dump,
    read_manifest,
    set_backup_options,
    string_literal,
    table_counts,
)

ATTACKER = "mallory"
ATTACKER_PASSWORD = "Mall0ry-not-a-superuser"
HOSTILE_TABLE = "zz\nz"


def payload(marker: Path) -> list[str]:
    """psql input that must never run: a shell command as root, a privilege escalation, and a quiet exit 0."""
    return ["\\r", f"\\! id > {marker}", f'ALTER ROLE "{ATTACKER}" SUPERUSER;', "\\q"]


def create_attacker(project: Project, database: str = "demo") -> None:
    """A login role that is no superuser, with CREATE on the database and its public schema: any app user."""
    with project.connect() as connection:
        connection.execute(f"CREATE ROLE {ATTACKER} LOGIN PASSWORD '{ATTACKER_PASSWORD}'")
        connection.execute(f"GRANT CONNECT, CREATE ON DATABASE {database} TO {ATTACKER}")
    with project.connect(database) as connection:
        connection.execute(f"GRANT CREATE ON SCHEMA public TO {ATTACKER}")


def create_victim_tables(project: Project) -> None:
    """The application's own tables (owned by demo_user): a primary key, a foreign key and an index to lose."""
    with project.connect("demo", "demo_user", USER_PASSWORD) as connection:
        connection.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL)")
        connection.execute("CREATE TABLE invoices (id serial PRIMARY KEY, "
                           "customer_id integer NOT NULL REFERENCES customers (id), amount numeric)")
        connection.execute("CREATE INDEX invoices_customer_idx ON invoices (customer_id)")
        connection.execute("INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 40) g")
        connection.execute("INSERT INTO invoices (customer_id, amount) SELECT 1 + g % 40, g * 2.5 "
                           "FROM generate_series(1, 300) g")


def attack(project: Project, marker: Path) -> None:
    """What the attacker does, connected as itself: one table, four rows, one index, two comments."""
    lines = payload(marker)
    with project.connect("demo", ATTACKER, ATTACKER_PASSWORD) as connection:
        connection.execute(f'CREATE TABLE public."{HOSTILE_TABLE}" (t text)')
        rows = ["--", '-- Database "evil" dump', "--", "'", f"\\! id > {marker}", "\\q"]
        for row in rows:
            connection.execute(f'INSERT INTO public."{HOSTILE_TABLE}" VALUES (%s)', (row,))
        connection.execute(f'CREATE INDEX zz_t ON public."{HOSTILE_TABLE}" (t)')
        comment = string_literal("\n".join(["x", *lines, ""]))
        connection.execute(f'COMMENT ON TABLE public."{HOSTILE_TABLE}" IS {comment}')  # read before the data
        connection.execute(f"COMMENT ON INDEX public.zz_t IS {comment}")  # read after it: the one that ran


def structure(project: Project) -> dict[str, list[str]]:
    """The victim's constraints and indexes, as the catalog has them."""
    with project.connect("demo") as connection:
        constraints = [f"{row[0]} {row[1]}" for row in connection.execute(
            "SELECT conname, contype FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1")]
        indexes = [row[0] for row in connection.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")]
    return {"constraints": constraints, "indexes": indexes}


EXPECTED_STRUCTURE = {
    "constraints": ["customers_pkey p", "invoices_customer_id_fkey f", "invoices_pkey p"],
    "indexes": ["customers_pkey", "invoices_customer_idx", "invoices_pkey", "zz_t"],
}


def assert_restored_unharmed(project: Project, markers: Path, original: bytes) -> None:
    assert_no_marker(markers)
    assert not is_superuser(project, ATTACKER), "the restore made the attacker a superuser"
    assert structure(project) == EXPECTED_STRUCTURE
    assert_same_dump(original, pg_dump(project, "demo"), "database demo after the restore")


@pytest.fixture
def attacked(running_project: Project, workdir: Path) -> tuple[Project, Path, bytes]:
    """A provisioned project restoring 2 databases at a time, the attack in place; its marker folder and demo's
    pg_dump taken before any backup."""
    set_backup_options(running_project, "jobs = 2")
    create_victim_tables(running_project)
    create_attacker(running_project)
    markers = marker_folder(workdir)
    attack(running_project, markers / "marker")
    assert structure(running_project) == EXPECTED_STRUCTURE
    return running_project, markers, pg_dump(running_project, "demo")


def test_newline_table_name_cannot_inject_a_section_boundary(attacked, workdir):
    project, markers, original = attacked
    counts = table_counts(project, "demo")
    assert counts[("public", HOSTILE_TABLE)] == 6 and counts[("public", "invoices")] == 300

    project.ok("backup")
    key = latest_key(project)
    restored = project.pgdr("restore", "latest", "--clean", "--yes")
    assert_no_marker(markers)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert_restored_unharmed(project, markers, original)
    assert table_counts(project, "demo") == counts
    recorded = manifest_counts(read_manifest(project, key), "demo")
    assert recorded == counts, f"the manifest says {recorded}, the database has {counts}"
    project.ok("init")
    project.ok("verify")

    with extra_project(workdir, "fresh", jobs=2) as fresh:
        copy_backup(project, fresh, key)
        restored = fresh.pgdr("restore", "latest")
        assert_no_marker(markers)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert_restored_unharmed(fresh, markers, original)
        fresh.ok("init")
        fresh.ok("verify")
    assert_no_marker(markers, project.root / "marker", fresh.root / "marker")


SECTION_HEADER_BODY = """
BEGIN
--
-- Database "x" dump
--
  RETURN 'still one function';
END
"""


def test_function_body_with_a_section_header_restores_in_parallel(running_project):
    set_backup_options(running_project, "jobs = 2")
    with running_project.connect("demo", "demo_user", USER_PASSWORD) as connection:
        connection.execute("CREATE FUNCTION public.report() RETURNS text LANGUAGE plpgsql AS "
                            + string_literal(SECTION_HEADER_BODY))
        connection.execute("CREATE TABLE after_the_function (a integer PRIMARY KEY)")
        connection.execute("INSERT INTO after_the_function SELECT generate_series(1, 25)")
    original = pg_dump(running_project, "demo")

    running_project.ok("backup")
    restored = running_project.pgdr("restore", "latest", "--clean", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "2 at a time" in restored.stdout + restored.stderr  # the parallel path, not the one-stream fallback

    with running_project.connect("demo") as connection:
        body = connection.execute("SELECT prosrc FROM pg_proc WHERE proname = 'report'").fetchone()
        result = connection.execute("SELECT public.report()").fetchone()
    assert body is not None and body[0] == SECTION_HEADER_BODY
    assert result is not None and result[0] == "still one function"
    assert_same_dump(original, pg_dump(running_project, "demo"), "database demo after the restore")
