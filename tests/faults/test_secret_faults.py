"""Secrets gone or wrong: a missing secret is exit 6 naming it and every place looked, a wrong superuser password
is exit 5 with the runbook's fix (`pgdr secrets pull && pgdr init`); neither writes a backup nor changes the server.

Covered elsewhere, not repeated: the server down (exit 4 with `pgdr up`) for backup, init, verify, clean, restore
and psql
(tests/end_to_end/test_status_list_psql.py::test_commands_against_a_stopped_server_exit_4_say_pgdr_up_and_write_nothing,
test_backup_failures.py::test_backup_of_a_stopped_server_fails_with_a_hint_and_leaves_no_file_at_all); a missing
secret in `secrets pull`
(test_secrets_local.py::test_secrets_pull_with_a_missing_secret_exits_6_naming_it_and_every_place_looked);
a user's password changed behind pgdr's back (exit 10 from verify, test_secrets_local.py); a missing age identity
(test_split_and_encryption.py::test_encrypted_backup_restores_with_the_identity_and_is_refused_without_it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from faults.fault_helpers import assert_clean_failure, cluster_project, server_state, tree_snapshot
from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD

COMMANDS = [("backup",), ("restore", "latest", "--clean", "--yes"), ("init",), ("verify",), ("clean", "soft", "--yes"),
            ("psql", "-c", "select 1")]
WRONG = "not-the-superuser-password"


@pytest.fixture(scope="module")
def live() -> Iterator:
    with cluster_project(backed_up_rows=100) as project:
        yield project


def dotenv_with(project, name: str, values: dict[str, str]) -> str:
    path = project.root / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.writelines(f'{key}="{value}"\n' for key, value in values.items())
    return str(path)


def unchanged_after(project, *args: str, env: dict[str, str], code: int) -> str:
    state, tree = server_state(project), tree_snapshot(project.backups)
    result = project.pgdr(*args, env=env)
    assert_clean_failure(result, code)
    assert server_state(project) == state
    assert tree_snapshot(project.backups) == tree
    assert WRONG not in result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_superuser_secret_is_exit_6_naming_it_and_where_it_was_looked_for(live, command):
    dotenv = dotenv_with(live, "users-only.env", {"POSTGRES_DEMO_USER_PASSWORD": USER_PASSWORD,
                                                  "POSTGRES_DEMO_READONLY_PASSWORD": READONLY_PASSWORD})
    stderr = unchanged_after(live, *command, env={"PGDR_SECRETS__DOTENV": dotenv}, code=6)
    assert "secret POSTGRES_PASSWORD not found" in stderr
    assert "environment variable POSTGRES_PASSWORD" in stderr and dotenv in stderr


@pytest.mark.parametrize("command", [("init",), ("verify",)], ids=" ".join)
def test_a_missing_user_secret_is_exit_6_naming_it(live, command):
    dotenv = dotenv_with(live, "superuser-only.env", {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD})
    stderr = unchanged_after(live, *command, env={"PGDR_SECRETS__DOTENV": dotenv}, code=6)
    assert "secret POSTGRES_DEMO_USER_PASSWORD not found" in stderr


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_wrong_superuser_password_is_exit_5_with_secrets_pull_and_init(live, command):
    stderr = unchanged_after(live, *command, env={"POSTGRES_PASSWORD": WRONG}, code=5)
    assert "password authentication failed for postgres@127.0.0.1" in stderr
    assert "pgdr secrets pull && pgdr init" in stderr
