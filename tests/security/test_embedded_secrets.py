"""Passwords that are not role passwords: a user mapping's `password` option and a subscription's connection
string are stored in the catalog and written by pg_dump in plain text. A backup says so (a warning naming the
objects, never their values, and `embedded_secrets` in the manifest), or with `backup.embedded_secrets = "refuse"`
is not made at all. Text that only mentions a password, in a comment or a value, is no secret.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from end_to_end.e2e_helpers import tree_snapshot
from harness import USER_PASSWORD, Project
from security.security_helpers import (
    extra_project,
    latest_key,
    module_workdir,
    output_of,
    read_manifest,
    set_backup_options,
    string_literal,
    warning_text,
    warnings_in,
)

MAPPING_SECRET = "Fdw-S3kret-in-a-user-mapping"
SUBSCRIPTION_SECRET = "Sub-S3kret-in-a-conninfo"
SERVER = "remote_srv"
SUBSCRIPTION = "orders_sub"


@pytest.fixture(scope="module")
def with_secrets() -> Iterator[Project]:
    """A provisioned project whose demo database holds a user mapping and a subscription, each with a password."""
    with module_workdir("pgdr-secrets-") as workdir, extra_project(workdir, "project", init=True) as project:
        with project.connect("demo") as connection:
            connection.execute("CREATE EXTENSION postgres_fdw")
            connection.execute(f"CREATE SERVER {SERVER} FOREIGN DATA WRAPPER postgres_fdw "
                               "OPTIONS (host '127.0.0.1', port '1', dbname 'x')")
            connection.execute(f"CREATE USER MAPPING FOR demo_user SERVER {SERVER} "
                               f"OPTIONS (user 'u', password '{MAPPING_SECRET}')")
            connection.execute(f"CREATE SUBSCRIPTION {SUBSCRIPTION} CONNECTION 'host=127.0.0.1 port=1 dbname=x "
                               f"password={SUBSCRIPTION_SECRET}' PUBLICATION p WITH (connect = false)")
        yield project


def assert_no_secret_value(text: str, where: str) -> None:
    for secret in (MAPPING_SECRET, SUBSCRIPTION_SECRET):
        assert secret not in text, f"a secret value is shown in {where}"


def test_user_mapping_and_subscription_passwords_are_named_in_a_warning_and_in_the_manifest(with_secrets):
    backup = with_secrets.pgdr("backup")
    assert backup.returncode == 0, output_of(backup)
    assert_no_secret_value(output_of(backup), "the output of `pgdr backup`")
    warned = warning_text(backup)
    assert SERVER in warned and SUBSCRIPTION in warned, f"no warning naming both:\n{output_of(backup)}"

    key = latest_key(with_secrets)
    assert_no_secret_value((with_secrets.backups / (key + ".manifest.json")).read_text(), "the manifest")
    found = read_manifest(with_secrets, key)["embedded_secrets"]
    assert all(set(entry) == {"database", "kind", "name"} for entry in found), found
    assert {entry["database"] for entry in found} == {"demo"}, found
    mappings = [entry for entry in found if "mapping" in entry["kind"].lower()]
    subscriptions = [entry for entry in found if "subscription" in entry["kind"].lower()]
    assert len(found) == 2 and len(mappings) == 1 and len(subscriptions) == 1, found
    assert SERVER in mappings[0]["name"] and SUBSCRIPTION in subscriptions[0]["name"], found


@pytest.mark.parametrize("how", ["config", "environment"])
def test_refuse_mode_stops_the_backup_and_leaves_nothing(with_secrets, how):
    before = tree_snapshot(with_secrets.backups)
    config = with_secrets.config.read_text()
    environment = {}
    if how == "config":
        set_backup_options(with_secrets, 'embedded_secrets = "refuse"')
    else:
        environment = {"PGDR_BACKUP__EMBEDDED_SECRETS": "refuse"}
    try:
        refused = with_secrets.pgdr("backup", env=environment)
    finally:
        with_secrets.config.write_text(config)
    assert refused.returncode == 7, output_of(refused)
    assert SERVER in output_of(refused) and SUBSCRIPTION in output_of(refused), output_of(refused)
    assert_no_secret_value(output_of(refused), "the refusal")
    assert tree_snapshot(with_secrets.backups) == before  # no backup, no manifest, no hidden temporary


DECOY_TEXT = (
    "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', password 'x');\n"
    "CREATE SUBSCRIPTION s CONNECTION 'host=h password=x' PUBLICATION p;\n"
    "password 'x' / password=x"
)


def plant_decoys(project: Project) -> None:
    """Everything about passwords except a stored one: comments, values, a function body, a column called password,
    and a user mapping whose options hold no password."""
    with project.connect("demo") as connection:
        connection.execute("CREATE EXTENSION postgres_fdw")
        connection.execute("CREATE SERVER plain_srv FOREIGN DATA WRAPPER postgres_fdw "
                           "OPTIONS (host '127.0.0.1', port '1', dbname 'x')")
        connection.execute("CREATE USER MAPPING FOR demo_user SERVER plain_srv OPTIONS (user 'u')")
        connection.execute("COMMENT ON SERVER plain_srv IS " + string_literal(DECOY_TEXT))
    with project.connect("demo", "demo_user", USER_PASSWORD) as connection:
        connection.execute("CREATE TABLE logins (id integer PRIMARY KEY, password text, note text)")
        connection.execute("INSERT INTO logins VALUES (1, 'x', %s), (2, 'password=x', %s)",
                           (DECOY_TEXT, "password 'x'"))
        connection.execute("COMMENT ON TABLE logins IS " + string_literal(DECOY_TEXT))
        connection.execute("COMMENT ON COLUMN logins.password IS 'password ''x'''")
        connection.execute("CREATE FUNCTION conninfo() RETURNS text LANGUAGE sql AS "
                           + string_literal("SELECT " + string_literal(DECOY_TEXT)))


def test_text_that_mentions_a_password_is_not_an_embedded_secret(running_project: Project):
    plant_decoys(running_project)
    backup = running_project.pgdr("backup")
    assert backup.returncode == 0, output_of(backup)
    assert warnings_in(backup) == []
    assert read_manifest(running_project, latest_key(running_project))["embedded_secrets"] == []
    refusing = running_project.pgdr("backup", env={"PGDR_BACKUP__EMBEDDED_SECRETS": "refuse"})
    assert refusing.returncode == 0, output_of(refusing)
