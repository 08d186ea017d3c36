"""`pgdr init` runs numbered migrations after provisioning, in numeric order, every time; a failing one stops
init with its name; shell migrations get the secrets in their environment (and never print them).
"""

from __future__ import annotations

import pytest

from end_to_end.e2e_helpers import fails, recorded
from harness import USER_PASSWORD

ORDER_TABLE = "CREATE TABLE IF NOT EXISTS public.migration_log (step text, at timestamptz DEFAULT clock_timestamp());"


@pytest.fixture
def live(running_project):
    project = recorded(running_project)
    folder = project.root / "migrations"
    folder.mkdir()
    with open(project.config, "a") as config:
        config.write('\n[migrations]\ndir = "migrations"\n')
    yield project
    project.assert_no_password_in_output()


def write(path, text):
    path.write_text(text)
    path.chmod(0o755)


def test_migrations_run_in_numeric_order_on_every_init_with_secrets_for_shell_scripts(live):
    folder = live.root / "migrations"
    write(folder / "2-second.sh",
          '#!/bin/sh\nset -e\ntest -n "$POSTGRES_DEMO_USER_PASSWORD"\n'
          'PGPASSWORD="$POSTGRES_DEMO_USER_PASSWORD" psql -X -q -U demo_user -d demo -v ON_ERROR_STOP=1 '
          "-c \"INSERT INTO migration_log (step) SELECT '2-' || current_user\"\n")
    write(folder / "10-tenth.sql", "\\connect demo\nINSERT INTO migration_log (step) VALUES ('10');\n")
    write(folder / "1-first.sql", f"\\connect demo\n{ORDER_TABLE}\nGRANT INSERT, SELECT ON migration_log TO PUBLIC;\n"
                                  "INSERT INTO migration_log (step) VALUES ('1');\n")
    result = live.ok("init")
    for name in ("1-first.sql", "2-second.sh", "10-tenth.sql"):
        assert f"Migration {name} applied" in result.stdout
    live.ok("init")
    with live.connect("demo") as connection:
        steps = [row[0] for row in connection.execute("SELECT step FROM migration_log ORDER BY at")]
    assert steps == ["1", "2-demo_user", "10"] * 2
    assert USER_PASSWORD not in result.stdout + result.stderr


def test_a_failing_migration_stops_init_naming_the_file(live):
    folder = live.root / "migrations"
    write(folder / "001-ok.sql", "SELECT 1;\n")
    write(folder / "002-broken.sql", "SELECT * FROM no_such_table;\n")
    write(folder / "003-never.sql", "CREATE DATABASE never_created;\n")
    result = fails(live, "init", code=16)
    assert "002-broken.sql" in result.stderr
    assert "no_such_table" in result.stderr
    with live.connect() as connection:
        assert connection.execute("SELECT count(*) FROM pg_database WHERE datname = 'never_created'").fetchone()[0] == 0


def test_a_misnamed_migration_is_a_config_error(live):
    write(live.root / "migrations" / "create-tables.sql", "SELECT 1;\n")
    result = fails(live, "init", code=2)
    assert "create-tables.sql" in result.stderr
