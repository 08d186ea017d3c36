"""Text inside a string is data, whatever it looks like. A comment that holds a line of SQL pg_dumpall could have
written (a role's password, the start of a COPY block, the bootstrap superuser's CREATE ROLE) must not stop a
backup, skew its row counts, or be rewritten on its way back in.
"""

from __future__ import annotations

from harness import USER_PASSWORD, Project
from security.security_helpers import latest_key, manifest_counts, read_manifest, string_literal, table_counts

PASSWORD_LINE = "ALTER ROLE \"app\" WITH LOGIN PASSWORD 'x';"
COPY_LINE = "COPY public.t FROM stdin;"
BOOTSTRAP_LINE = 'CREATE ROLE "postgres";'


def table_comment(project: Project, table: str) -> str | None:
    with project.connect("demo") as connection:
        row = connection.execute("SELECT obj_description(%s::regclass, 'pg_class')", (table,)).fetchone()
    return None if row is None else row[0]


def role_comment(project: Project, role: str) -> str | None:
    with project.connect() as connection:
        row = connection.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
                                 (role,)).fetchone()
    assert row is not None, f"role {role} is missing"
    return row[0]


def test_comment_with_a_password_line_does_not_block_backups(running_project):
    comment = f"How the app role was set up:\n{PASSWORD_LINE}\n(the real password is elsewhere)"
    with running_project.connect("demo", "demo_user", USER_PASSWORD) as connection:
        connection.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text)")
        connection.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 10) g")
        connection.execute("COMMENT ON TABLE notes IS " + string_literal(comment))

    backup = running_project.pgdr("backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert read_manifest(running_project, latest_key(running_project))["contains_passwords"] is False
    restored = running_project.pgdr("restore", "latest", "--clean", "--yes")  # its safety backup reads it too
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert table_comment(running_project, "notes") == comment


def test_comment_with_a_copy_line_does_not_break_counts(running_project):
    with running_project.connect("demo", "demo_user", USER_PASSWORD) as connection:
        connection.execute("CREATE TABLE t (id integer PRIMARY KEY, note text)")
        connection.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 37) g")
        connection.execute("CREATE TABLE u (id integer PRIMARY KEY)")
        connection.execute("INSERT INTO u SELECT generate_series(1, 11)")
        # pg_dump writes a table's comment right after its CREATE TABLE, so this line comes before t's real data
        comment = string_literal(f"Loaded nightly with\n{COPY_LINE}\nfrom the ERP.")
        connection.execute(f"COMMENT ON TABLE t IS {comment}")
    counts = table_counts(running_project, "demo")
    assert counts == {("public", "t"): 37, ("public", "u"): 11}

    backup = running_project.pgdr("backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    recorded = manifest_counts(read_manifest(running_project, latest_key(running_project)), "demo")
    assert recorded == counts, f"the manifest says {recorded}, the database has {counts}"
    running_project.ok("restore", "latest", "--clean", "--yes")
    running_project.ok("init")
    running_project.ok("verify")  # compares the restored counts with the manifest's
    assert table_counts(running_project, "demo") == counts


def test_globals_filter_ignores_text_inside_strings(running_project):
    comment = f"Bootstrap notes:\n{BOOTSTRAP_LINE}\nis never needed on a fresh cluster."
    with running_project.connect() as connection:
        connection.execute("CREATE ROLE auditor NOLOGIN")
        connection.execute("COMMENT ON ROLE auditor IS " + string_literal(comment))

    running_project.ok("backup")
    for jobs in ("1", "2"):  # the globals in one stream with the databases, and on their own before them
        running_project.ok("restore", "latest", "--clean", "--yes", env={"PGDR_BACKUP__JOBS": jobs})
        assert role_comment(running_project, "auditor") == comment, f"restored with backup.jobs = {jobs}"
