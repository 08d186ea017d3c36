"""External mode: pgdr drives a server it does not manage (the `pg_server` fixture, started by initdb + pg_ctl).
Backup, restore --clean, init and verify work; `clean hard` only ever runs the configured down_command.
"""

from __future__ import annotations

import pytest

from end_to_end.e2e_helpers import assert_users_log_in, fails, keys, list_json, recorded, server_state
from harness import Project, clean_environment, count_orders, load_sample_data, project_config, write_dotenv


def external_project(root, server, extra: str = "") -> Project:
    root.mkdir()
    config = project_config(server.port).replace('mode = "local"', 'mode = "external"')
    config = "\n".join(line for line in config.splitlines() if not line.startswith("settings = "))
    config = config.replace('superuser = "postgres"\n', 'superuser = "postgres"\n' + extra)
    (root / "pgdr.toml").write_text(config + "\n")
    write_dotenv(root / ".env")
    return recorded(Project(root, server.port, clean_environment()))


@pytest.fixture
def external(workdir, pg_server):
    project = external_project(workdir / "external", pg_server)
    yield project
    project.assert_no_password_in_output()


def test_external_backup_restore_clean_init_verify(external):
    external.ok("up")
    external.ok("status")
    external.ok("init")
    load_sample_data(external, 300)
    external.ok("backup")
    [key] = keys(external)
    assert list_json(external)[0]["verified"] is True

    with external.connect("demo") as connection:
        connection.execute("DELETE FROM orders WHERE id > 7")
    refused = fails(external, "restore", "latest", code=3)
    assert "--clean" in refused.stderr
    assert count_orders(external) == 7

    restored = external.ok("restore", "latest", "--clean", "--yes")
    assert key in restored.stdout
    assert count_orders(external) == 300
    assert [record for record in list_json(external, "--safety") if str(record["key"]).startswith("safety/")]
    external.ok("init")
    verified = external.ok("verify")
    assert "row counts match" in verified.stdout
    assert_users_log_in(external)


def test_external_clean_hard_without_down_command_refuses_with_exit_3_and_leaves_the_server_alone(external):
    external.ok("init")
    load_sample_data(external, 30)
    before = server_state(external)
    for args in (("clean", "hard"), ("clean", "hard", "--yes")):
        result = fails(external, *args, code=3)
        assert "down_command" in result.stderr
    assert server_state(external) == before
    stopped = external.ok("down")
    assert "nothing to stop" in stopped.stdout
    assert server_state(external) == before


def test_external_up_and_clean_hard_run_only_the_configured_commands(workdir, pg_server):
    project = external_project(workdir / "external", pg_server,
                               'up_command = "touch up-ran"\ndown_command = "touch down-ran"\n')
    project.ok("up")
    assert (project.root / "up-ran").exists()

    fails(project, "clean", "hard", code=3)  # no --yes, no terminal: the command must not run
    assert not (project.root / "down-ran").exists()

    project.ok("clean", "hard", "--yes")
    assert (project.root / "down-ran").exists()
    project.ok("status")  # the fixture's server was only ever touched through the configured command
    project.assert_no_password_in_output()
