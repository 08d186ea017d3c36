"""The split format (globals + pg_dump -Fc per database, pg_restore --jobs) and age encryption at rest,
end to end against a real server."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import pytest

from age_payload import AGE_HEADER, ZSTD_MAGIC, age_payload, assert_encrypted_gzip_dump, decompresses
from end_to_end.e2e_helpers import server_state
from harness import count_orders, load_sample_data, needs_pyrage


def configure(project, text: str) -> None:
    config = project.config.read_text().replace('compression = "gzip"\n', 'compression = "gzip"\n' + text + "\n")
    project.config.write_text(config)


def newest(project) -> dict:
    records = json.loads(project.ok("list", "--json").stdout)
    return records[-1]


def other_database_rows(project) -> int:
    with project.connect("other") as connection:
        return int(connection.execute("SELECT count(*) FROM t").fetchone()[0])


@pytest.fixture
def split_project(running_project):
    configure(running_project, 'format = "split"')
    load_sample_data(running_project, 2000)
    with running_project.connect() as connection:
        connection.execute("CREATE DATABASE other")
    with running_project.connect("other") as connection:
        connection.execute("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 77) g")
    return running_project


def test_split_backup_lists_one_verified_backup_with_a_part_per_database(split_project):
    split_project.ok("backup")
    record = newest(split_project)
    assert record["key"].endswith(".split") and record["verified"] and record["format"] == "split"
    manifest_path = split_project.backups / (record["key"] + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert {part["database"] for part in manifest["parts"]} == {None, "demo", "other", "postgres", "template1"}
    counts = {db["name"]: {t["table"]: t["rows"] for t in db["tables"]} for db in manifest["databases"]}
    assert counts["demo"]["orders"] == 2000 and counts["other"]["t"] == 77
    assert record["size"] == sum(part["size"] for part in manifest["parts"])


def test_split_backup_survives_hard_clean_and_recovers_verified(split_project):
    split_project.ok("backup")
    split_project.ok("clean", "hard", "--yes")
    split_project.ok("up")
    restored = split_project.ok("restore", "latest")
    assert "Database restored successfully" in restored.stdout
    split_project.ok("init")
    verified = split_project.ok("verify")
    assert "row counts match" in verified.stdout
    assert count_orders(split_project) == 2000 and other_database_rows(split_project) == 77


def test_restore_database_replaces_only_that_database(split_project):
    split_project.ok("backup")
    with split_project.connect("demo") as connection:
        connection.execute("DELETE FROM orders")
    with split_project.connect("other") as connection:
        connection.execute("INSERT INTO t VALUES (1000)")
    refused = split_project.pgdr("restore", "latest", "--database", "demo")
    assert refused.returncode == 3 and "--database demo --clean" in refused.stderr
    split_project.ok("restore", "latest", "--database", "demo", "--clean", "--yes")
    assert count_orders(split_project) == 2000
    assert other_database_rows(split_project) == 78  # untouched, its new row kept
    split_project.ok("verify")


def test_restore_database_of_a_plain_backup_is_a_usage_error(running_project):
    running_project.ok("backup")
    result = running_project.pgdr("restore", "latest", "--database", "demo")
    assert result.returncode == 2 and "split" in result.stderr


def test_corrupt_split_part_is_refused_before_the_server_is_touched(split_project):
    split_project.ok("backup")
    split_project.ok("clean", "soft", "--yes")
    before = server_state(split_project)
    assert {"demo_user", "demo_readonly_user"}.isdisjoint(before["roles"]), "clean soft left the roles"
    record = newest(split_project)
    part = split_project.backups / record["key"] / "db-001.dump.gz"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    result = split_project.pgdr("restore", "latest")
    assert result.returncode == 9, result.stderr
    with split_project.connect() as connection:
        databases = [row[0] for row in connection.execute("SELECT datname FROM pg_database")]
    assert "demo" not in databases and "other" not in databases
    assert server_state(split_project) == before, "the globals part (roles) was restored before the check failed"


def test_an_archive_that_matches_a_forged_manifest_but_pg_restore_cannot_read_is_an_integrity_error(split_project):
    """Someone who can write the backup dir replaces an archive and fixes the manifest's size and sha256: the
    checksums pass, pg_restore --list refuses the archive, and that is exit 9 (integrity), not 1 (a bug)."""
    split_project.ok("backup")
    split_project.ok("clean", "soft", "--yes")
    before = server_state(split_project)
    key = newest(split_project)["key"]
    manifest_path = split_project.backups / (key + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    part = next(part for part in manifest["parts"] if part["database"] == "other")
    assert part["name"].endswith(".dump.gz"), part["name"]  # compressed by pgdr: the forgery is too
    forged = gzip.compress(b"PGDMP" + b"\x00" * 4096)
    (split_project.backups / key / part["name"]).write_bytes(forged)
    part["size"], part["sha256"] = len(forged), hashlib.sha256(forged).hexdigest()
    manifest["size"] = sum(item["size"] for item in manifest["parts"])
    manifest["sha256"] = hashlib.sha256("".join(f"{item['name']}:{item['sha256']}\n"
                                                for item in manifest["parts"]).encode()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    result = split_project.pgdr("restore", "latest")
    assert result.returncode == 9, result.stderr
    assert f"pg_restore --list {part['name']}" in result.stderr and "Traceback" not in result.stderr
    assert server_state(split_project) == before, "the server was touched before the archive was read"


def test_prune_removes_every_part_of_a_split_backup(split_project):
    split_project.ok("backup")
    first = newest(split_project)["key"]
    split_project.ok("backup")
    second = newest(split_project)["key"]
    config = split_project.config.read_text() + "\n[retention]\nenabled = true\nkeep_last = 1\nkeep_daily = 0\n" \
        "keep_weekly = 0\nkeep_monthly = 0\n"
    split_project.config.write_text(config)
    split_project.ok("prune", "--yes")
    assert not (split_project.backups / first).exists()
    assert not (split_project.backups / (first + ".manifest.json")).exists()
    assert [record["key"] for record in json.loads(split_project.ok("list", "--json").stdout)] == [second]
    assert (split_project.backups / second / "globals.sql.gz").exists()


@pytest.fixture
def age_keys():
    import pyrage  # only tests marked needs_pyrage get here

    identity = pyrage.x25519.Identity.generate()
    return str(identity.to_public()), str(identity)


@pytest.fixture
def encrypted_project(running_project, age_keys):
    configure(running_project, f'encryption = "age"\nage_recipients = ["{age_keys[0]}"]')
    load_sample_data(running_project, 1500)
    return running_project


@needs_pyrage
def test_encrypted_backup_holds_no_readable_sql(encrypted_project, age_keys):
    encrypted_project.ok("backup")
    record = newest(encrypted_project)
    assert record["key"].endswith(".sql.gz.age")
    data = (encrypted_project.backups / record["key"]).read_bytes()
    assert_encrypted_gzip_dump(data, age_keys[1])


@needs_pyrage
def test_encrypted_backup_restores_with_the_identity_and_is_refused_without_it(encrypted_project, age_keys):
    encrypted_project.ok("backup")
    encrypted_project.ok("clean", "soft", "--yes")
    missing = encrypted_project.pgdr("restore", "latest")
    assert missing.returncode == 6 and "PGDR_AGE_IDENTITY" in missing.stderr
    assert age_keys[1] not in missing.stdout + missing.stderr
    import pyrage

    wrong = str(pyrage.x25519.Identity.generate())
    refused = encrypted_project.pgdr("restore", "latest", env={"PGDR_AGE_IDENTITY": wrong})
    assert refused.returncode == 9, refused.stderr
    with encrypted_project.connect() as connection:
        assert connection.execute("SELECT count(*) FROM pg_database WHERE datname = 'demo'").fetchone()[0] == 0
    restored = encrypted_project.pgdr("restore", "latest", env={"PGDR_AGE_IDENTITY": age_keys[1]})
    assert restored.returncode == 0, restored.stderr
    assert age_keys[1] not in restored.stdout + restored.stderr
    encrypted_project.ok("init")
    assert count_orders(encrypted_project) == 1500


def split_parts(project, key: str) -> dict[str | None, bytes]:
    manifest = json.loads((project.backups / (key + ".manifest.json")).read_text())
    return {part["database"]: (project.backups / key / part["name"]).read_bytes() for part in manifest["parts"]} | {
        "names": [part["name"] for part in manifest["parts"]]}  # type: ignore[dict-item]


def test_split_backup_compresses_its_parts_with_backup_compression(split_project):
    config = split_project.config.read_text().replace('compression = "gzip"\n', 'compression = "zstd"\n')
    split_project.config.write_text(config)
    split_project.ok("backup")
    key = newest(split_project)["key"]
    parts = split_parts(split_project, key)
    assert parts["names"][0] == "globals.sql.zst"
    assert all(name.endswith(".dump.zst") for name in parts["names"][1:]), parts["names"]
    assert all(data.startswith(ZSTD_MAGIC) for name, data in parts.items() if name != "names")
    split_project.ok("clean", "soft", "--yes")
    split_project.ok("restore", "latest")
    split_project.ok("init")
    assert count_orders(split_project) == 2000 and other_database_rows(split_project) == 77


@needs_pyrage
def test_split_backup_encrypted_with_age_restores_only_with_the_identity(split_project, age_keys):
    configure(split_project, f'encryption = "age"\nage_recipients = ["{age_keys[0]}"]')
    split_project.ok("backup")
    record = newest(split_project)
    assert record["key"].endswith(".split") and record["verified"]
    parts = split_parts(split_project, record["key"])
    assert parts["names"][0] == "globals.sql.gz.age"
    assert all(name.endswith(".dump.gz.age") for name in parts["names"][1:]), parts["names"]
    for name, data in parts.items():
        if name != "names":
            assert data.startswith(AGE_HEADER) and not decompresses(age_payload(data)), name
            assert b"orders" not in data and b"CREATE ROLE" not in data, name
    split_project.ok("clean", "soft", "--yes")
    before = server_state(split_project)
    missing = split_project.pgdr("restore", "latest")
    assert missing.returncode == 6 and "PGDR_AGE_IDENTITY" in missing.stderr, missing.stderr
    assert server_state(split_project) == before, "the server was touched before the identity was known"
    restored = split_project.pgdr("restore", "latest", env={"PGDR_AGE_IDENTITY": age_keys[1]})
    assert restored.returncode == 0, restored.stderr
    assert age_keys[1] not in restored.stdout + restored.stderr
    assert not list(split_project.backups.glob(".pgdr-archives-*")), "decrypted archives were left behind"
    split_project.ok("init")
    assert count_orders(split_project) == 2000 and other_database_rows(split_project) == 77
    with split_project.connect("other") as connection:
        connection.execute("INSERT INTO t VALUES (0)")
    one = split_project.pgdr("restore", "latest", "--database", "other", "--clean", "--yes",
                             env={"PGDR_AGE_IDENTITY": age_keys[1]})
    assert one.returncode == 0, one.stderr
    assert other_database_rows(split_project) == 77


def test_encryption_config_without_recipients_is_a_config_error(project):
    configure(project, 'encryption = "age"')
    result = project.pgdr("status")
    assert result.returncode == 2 and "age_recipients" in result.stderr
    assert os.stat(project.root / ".env").st_mode & 0o077 == 0
