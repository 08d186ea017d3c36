"""Passwords: in no backup and no output, pulled into a 0600 dotenv by name, reset by init (and only they
change when init runs again), and the runbook's fix when they drift: `pgdr secrets pull && pgdr init`.
"""

from __future__ import annotations

import os
import sys

from dotenv import dotenv_values

from end_to_end.e2e_helpers import (
    PASSWORDS,
    USERS,
    assert_no_password_in_dump,
    assert_users_log_in,
    dotenv_mode,
    fails,
    recorded,
    user_can_log_in,
)
from file_creation import creation_modes_of, traced
from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD, count_orders, load_sample_data, project_config

SECRET_NAMES = ("POSTGRES_PASSWORD", "POSTGRES_DEMO_USER_PASSWORD", "POSTGRES_DEMO_READONLY_PASSWORD")




def test_passwords_appear_in_no_backup_and_in_no_output_of_the_whole_runbook(live):
    load_sample_data(live, 200)
    dry_run = live.ok("init", "--dry-run")
    for args in [("status",), ("status", "--json"), ("backup",), ("list",), ("list", "--json"),
                 ("restore", "latest", "--clean", "--yes"), ("init",), ("verify",), ("secrets", "pull"),
                 ("psql", "-c", "select rolname from pg_roles"), ("clean", "soft", "--yes"),
                 ("restore", "latest"), ("init",), ("verify",)]:
        live.ok(*args)
    fails(live, "verify", code=10, env={"POSTGRES_DEMO_USER_PASSWORD": "a-wrong-password-value"})
    assert count_orders(live) == 200

    dumps = [path for path in live.backup_files() if not path.name.endswith(".json")]
    assert len(dumps) == 2  # the backup and the safety backup taken by restore --clean
    for dump in dumps:
        assert_no_password_in_dump(dump)
    for manifest in live.backups.rglob("*.manifest.json"):
        assert not any(password in manifest.read_text() for password in PASSWORDS)

    assert len(live.calls) == 16
    live.assert_no_password_in_output()
    for args, result in live.calls:
        assert "a-wrong-password-value" not in result.stdout + result.stderr, args
        assert "SCRAM-SHA-256$" not in result.stdout + result.stderr, args
    server_log = live.root / ".pgdr" / "postgres.log"
    assert server_log.exists()
    assert not any(password in server_log.read_text(errors="replace") for password in PASSWORDS)

    assert "Plan (dry run, nothing changed)" in dry_run.stdout
    assert "password of demo_user (re)set" in dry_run.stdout
    assert "password of demo_readonly_user (re)set" in dry_run.stdout
    assert "PASSWORD" not in dry_run.stdout.upper().replace("PASSWORD OF", "")
    assert "********" not in dry_run.stdout, "the plan tried to print a secret (the redactor caught it)"


def test_init_dry_run_changes_nothing(live):
    with live.connect() as connection:
        connection.execute("ALTER ROLE demo_user PASSWORD 'changed-behind-pgdr'")
        connection.execute("DROP DATABASE demo")
    live.ok("init", "--dry-run")
    assert not user_can_log_in(live, "demo_user", USER_PASSWORD, "postgres")
    with live.connect() as connection:
        assert connection.execute("SELECT count(*) FROM pg_database WHERE datname = 'demo'").fetchone()[0] == 0


def catalog_snapshot(project) -> dict[str, list[tuple]]:
    """Everything init manages, without the password verifiers."""
    snapshot: dict[str, list[tuple]] = {}
    with project.connect() as connection:
        snapshot["roles"] = connection.execute(
            "SELECT oid, rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
            "rolconnlimit, rolvaliduntil, rolbypassrls, rolconfig FROM pg_roles ORDER BY rolname").fetchall()
        snapshot["memberships"] = connection.execute(
            "SELECT roleid::regrole::text, member::regrole::text, admin_option FROM pg_auth_members "
            "ORDER BY 1, 2").fetchall()
        snapshot["databases"] = connection.execute(
            "SELECT oid, datname, datdba::regrole::text, datconnlimit, datacl::text FROM pg_database "
            "ORDER BY datname").fetchall()
    with project.connect("demo") as connection:
        snapshot["default_acl"] = connection.execute(
            "SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype, "
            "defaclacl::text FROM pg_default_acl ORDER BY 1, 2, 3").fetchall()
        snapshot["namespaces"] = connection.execute(
            "SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace ORDER BY 1").fetchall()
        snapshot["relations"] = connection.execute(
            "SELECT c.oid, c.relname, c.relkind, c.relowner::regrole::text, c.relacl::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 2").fetchall()
        snapshot["table_privileges"] = connection.execute(
            "SELECT grantee, table_name, privilege_type, is_grantable FROM information_schema.role_table_grants "
            "WHERE table_schema = 'public' ORDER BY 1, 2, 3").fetchall()
        snapshot["extensions"] = connection.execute(
            "SELECT extname, extversion, extnamespace::regnamespace::text FROM pg_extension ORDER BY 1").fetchall()
    return snapshot


def password_verifiers(project) -> dict[str, str]:
    with project.connect() as connection:
        return dict(connection.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin ORDER BY 1").fetchall())


def test_init_run_twice_changes_nothing_the_second_time_except_the_password_salts(live):
    load_sample_data(live, 20)  # a table the readwrite user owns
    live.ok("init")
    first, first_verifiers = catalog_snapshot(live), password_verifiers(live)
    assert first["table_privileges"], "the snapshot sees no table privileges"
    assert any(row[0] == "demo_readonly" and row[1] == "orders" for row in first["table_privileges"])

    live.ok("init")
    second, second_verifiers = catalog_snapshot(live), password_verifiers(live)

    for part in first:
        assert second[part] == first[part], f"the second init changed {part}"
    assert set(second_verifiers) == set(first_verifiers) == {"postgres", *USERS}
    for user in USERS:
        assert second_verifiers[user].startswith("SCRAM-SHA-256$")
        assert second_verifiers[user] != first_verifiers[user], f"{user}'s verifier was not reset (same salt)"
    assert second_verifiers["postgres"] == first_verifiers["postgres"], "init touched the superuser's password"
    assert_users_log_in(live)


def test_verify_after_a_password_changed_behind_pgdrs_back_says_secrets_pull_and_init(live):
    with live.connect() as connection:
        connection.execute("ALTER ROLE demo_user PASSWORD 'changed-behind-pgdr'")
    result = fails(live, "verify", code=10)
    assert "pgdr secrets pull && pgdr init" in result.stderr
    assert "demo_user" in result.stderr
    live.ok("secrets", "pull")
    live.ok("init")
    live.ok("verify")
    assert_users_log_in(live)


def test_secrets_pull_rewrites_the_dotenv_0600_keeps_other_lines_and_prints_names_only(project):
    project = recorded(project)
    dotenv = project.root / ".env"
    dotenv.write_text("# application settings\nAPP_DEBUG=1\nPOSTGRES_DEMO_USER_PASSWORD=\"stale\"\n"
                      "export OTHER_TOKEN=\"keep me\"\n")
    dotenv.chmod(0o644)
    environment = dict(zip(SECRET_NAMES, (SUPERUSER_PASSWORD, USER_PASSWORD, READONLY_PASSWORD), strict=True))

    result = project.ok("secrets", "pull", env=environment)

    assert dotenv_mode(dotenv) == 0o600
    values = dotenv_values(dotenv)
    assert values["POSTGRES_PASSWORD"] == SUPERUSER_PASSWORD
    assert values["POSTGRES_DEMO_USER_PASSWORD"] == USER_PASSWORD
    assert values["POSTGRES_DEMO_READONLY_PASSWORD"] == READONLY_PASSWORD
    assert values["APP_DEBUG"] == "1"
    assert values["OTHER_TOKEN"] == "keep me"
    text = dotenv.read_text()
    assert text.startswith("# application settings\n")
    assert text.count("POSTGRES_DEMO_USER_PASSWORD") == 1
    for name in SECRET_NAMES:
        assert name in result.stdout
    project.assert_no_password_in_output()
    assert "stale" not in result.stdout + result.stderr


def test_secrets_pull_creates_a_missing_dotenv_0600(project, workdir):
    """0600 from creation: under a umask of 0, strace shows the mode the file (or the temporary file renamed onto
    it) is created with, so "created 0666, then chmodded" fails here although its final mode is 0600."""
    dotenv = project.root / ".env"
    dotenv.unlink()
    environment = dict(zip(SECRET_NAMES, (SUPERUSER_PASSWORD, USER_PASSWORD, READONLY_PASSWORD), strict=True))
    log = workdir / "secrets-pull.strace"
    previous = os.umask(0)  # even with a permissive umask the file is never readable by others
    try:
        result = traced([sys.executable, "-m", "pgdr", "secrets", "pull"], log, project.root,
                        {**project.environment, **environment})
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stdout + result.stderr
    assert dotenv_mode(dotenv) == 0o600
    assert dotenv_values(dotenv)["POSTGRES_DEMO_READONLY_PASSWORD"] == READONLY_PASSWORD
    modes = creation_modes_of(dotenv, log, project.root)
    assert modes, f"the trace does not show {dotenv} being written"
    assert all(mode & 0o077 == 0 for mode in modes), f"created with {[oct(mode) for mode in modes]}"


def test_secrets_pull_with_a_missing_secret_exits_6_naming_it_and_every_place_looked(project):
    dotenv = project.root / ".env"
    dotenv.write_text(f'POSTGRES_PASSWORD="{SUPERUSER_PASSWORD}"\nAPP_DEBUG=1\n')
    dotenv.chmod(0o600)
    before = dotenv.read_bytes()

    result = fails(project, "secrets", "pull", code=6)

    message = result.stderr
    assert "POSTGRES_DEMO_USER_PASSWORD" in message
    assert "POSTGRES_DEMO_READONLY_PASSWORD" in message
    assert "environment variable POSTGRES_DEMO_USER_PASSWORD" in message
    assert str(dotenv) in message, "the dotenv file looked in is not named"
    assert dotenv.read_bytes() == before, "a failed pull changed the dotenv file"
    assert SUPERUSER_PASSWORD not in result.stdout + result.stderr


def test_a_password_put_in_the_config_by_mistake_is_not_echoed(project):
    config = project_config(project.port)
    (project.root / "pgdr.toml").write_text(
        config.replace('password = "POSTGRES_DEMO_USER_PASSWORD"', f'password = "{USER_PASSWORD}"'))
    result = fails(project, "status", code=2)
    assert "readwrite_user.password" in result.stderr
    assert USER_PASSWORD not in result.stdout + result.stderr
