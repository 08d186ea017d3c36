"""Bad input through the CLI: backup keys that try to leave the backup dir or the S3 prefix are usage errors
(exit 2) before anything is read; database, user and table names that need quoting (spaces, dashes, upper case,
unicode) are provisioned, backed up, restored and verified like any other.

Covered elsewhere, not repeated: hypothesis fuzzing of the config loader from raw TOML text, dicts and env
overrides (tests/unit/test_config.py::test_arbitrary_toml_text_gives_settings_or_config_error and neighbours),
of parse_key (tests/unit/test_artifact.py::test_parse_key_on_arbitrary_text_parses_exactly_or_raises_usage_error),
keys escaping the local backup dir (tests/unit/test_local_storage.py), identifiers and literals quoted by one
builder (tests/unit/test_sql.py::test_quoting_round_trips_for_any_text).
"""

from __future__ import annotations

import pytest

from faults.fault_helpers import assert_clean_failure, cluster_project, new_bucket, tree_snapshot, use_s3

pytestmark = pytest.mark.s3
TRAVERSALS = ["../../etc/passwd", "/etc/passwd", "20251116/../../../etc/passwd",
              "20251116/postgres-all-20251116-095831.sql.gz/../../../../etc/passwd",
              "../20251116/postgres-all-20251116-095831.sql.gz",
              "safety/../../20251116/postgres-all-20251116-095831.sql"]


@pytest.mark.parametrize("source", ["local", "s3"])
def test_keys_that_try_to_leave_the_backup_dir_or_prefix_are_usage_errors(project, moto_server, source):
    use_s3(project, moto_server, new_bucket(moto_server))
    for key in TRAVERSALS:
        result = project.pgdr("restore", "file", key, "--from", source, "--clean", "--yes")
        assert_clean_failure(result, 2, "not a backup key")
        assert "root:" not in result.stdout + result.stderr
    assert tree_snapshot(project.backups) == {}


WEIRD = """
[[databases]]
name = "weird-db name"
readwrite_user = { name = "Weird User", password = "WEIRD_RW_PASSWORD" }
readonly_user = { name = "weird reader", password = "WEIRD_RO_PASSWORD" }

[[databases]]
name = "données"
readwrite_user = { name = "utilisateur_données", password = "DONNEES_RW_PASSWORD" }
"""
WEIRD_SECRETS = {"WEIRD_RW_PASSWORD": "rw 'quoted\" pass", "WEIRD_RO_PASSWORD": "ro-pass-ü",
                 "DONNEES_RW_PASSWORD": "mot de passe é"}


def write_rows(project, database: str, user: str, password: str, rows: int) -> None:
    with project.connect(database, user, password) as connection:
        connection.execute('CREATE TABLE "Order Lines" (id serial PRIMARY KEY, "prix €" numeric, "Note" text)')
        connection.execute('INSERT INTO "Order Lines" ("prix €", "Note") SELECT g, \'ligne \' || g '
                           'FROM generate_series(1, %s) g', (rows,))


def count_lines(project, database: str) -> int:
    with project.connect(database) as connection:
        return int(connection.execute('SELECT count(*) FROM "Order Lines"').fetchone()[0])


def test_databases_and_users_with_names_that_need_quoting_survive_init_backup_restore_and_verify():
    with cluster_project(config_suffix=WEIRD, init=False) as project:
        with (project.root / ".env").open("a") as dotenv:
            dotenv.writelines(f'{name}="{value.replace(chr(34), chr(92) + chr(34))}"\n'
                              for name, value in WEIRD_SECRETS.items())
        project.ok("init")
        project.ok("init")  # idempotent with quoted names too
        write_rows(project, "weird-db name", "Weird User", WEIRD_SECRETS["WEIRD_RW_PASSWORD"], 120)
        write_rows(project, "données", "utilisateur_données", WEIRD_SECRETS["DONNEES_RW_PASSWORD"], 80)
        project.ok("verify")
        project.ok("backup")
        project.ok("clean", "soft", "--yes")
        project.ok("restore", "latest")
        project.ok("init")
        verified = project.ok("verify")
        assert "weird-db name: row counts match backup" in verified.stdout
        assert "données: row counts match backup" in verified.stdout
        assert "weird-db name: weird reader can read tables the readwrite user creates" in verified.stdout
        assert count_lines(project, "weird-db name") == 120 and count_lines(project, "données") == 80
        for value in WEIRD_SECRETS.values():
            for _, result in project.calls:
                assert value not in result.stdout + result.stderr
