"""The runbook's local recovery scenarios, driven through the CLI against the managed cluster."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

from end_to_end.e2e_helpers import assert_users_log_in, backup_path, fails, keys, list_json, real_bin_dir, server_state
from harness import SUPERUSER_PASSWORD, count_orders, load_sample_data


def test_soft_clean_then_restore_latest_init_verify_brings_data_and_logins_back(live):
    load_sample_data(live, 500)
    live.ok("backup")
    before = server_state(live)

    live.ok("clean", "soft", "--yes")
    after_clean = server_state(live)
    assert "demo" not in after_clean["databases"]
    assert after_clean["roles"] == ["postgres"]

    restored = live.ok("restore", "latest")
    assert "Database restored successfully" in restored.stdout
    assert "pgdr init" in restored.stdout
    assert count_orders(live) == 500
    live.ok("init")
    verified = live.ok("verify")
    assert "Application can connect" in verified.stdout
    assert "row counts match" in verified.stdout
    assert server_state(live) == before
    assert_users_log_in(live)


def test_hard_clean_then_up_restore_latest_init_verify_on_a_fresh_cluster(live):
    load_sample_data(live, 500)
    live.ok("backup")
    data_dir = live.root / ".pgdr" / "pgdata"
    with live.connect() as connection:
        system_id_before = connection.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]

    live.ok("clean", "hard", "--yes")
    assert not data_dir.exists()

    live.ok("up")
    with live.connect() as connection:
        system_id_after = connection.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
    assert system_id_after != system_id_before, "clean hard + up did not create a new cluster"
    restored = live.ok("restore", "latest")
    assert "ERROR" not in restored.stdout + restored.stderr
    assert count_orders(live) == 500
    live.ok("init")
    live.ok("verify")
    assert_users_log_in(live)


def test_restore_latest_after_accidental_data_loss_brings_the_rows_back(live):
    load_sample_data(live, 300)
    live.ok("backup")
    with live.connect("demo") as connection:
        connection.execute("DROP TABLE orders")
    live.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(live) == 300
    live.ok("init")
    live.ok("verify")


def test_restore_file_key_restores_exactly_that_older_backup(live):
    load_sample_data(live, 100)
    live.ok("backup")
    time.sleep(1.1)  # keys have one-second resolution
    load_sample_data(live, 250)
    live.ok("backup")
    older, newer = keys(live)
    assert older < newer
    assert count_orders(live) == 350

    live.ok("restore", "file", older, "--clean", "--yes")
    assert count_orders(live) == 100
    live.ok("init")
    verified = live.ok("verify")
    assert older in verified.stdout  # row counts are checked against the backup actually restored

    live.ok("restore", "file", newer, "--clean", "--yes")
    assert count_orders(live) == 350


def test_restore_file_without_key_and_without_terminal_fails_with_exit_2(live):
    load_sample_data(live, 50)
    live.ok("backup")
    before = server_state(live)
    result = fails(live, "restore", "file", code=2)
    assert "needs a KEY" in result.stderr
    assert "pgdr list" in result.stderr
    assert server_state(live) == before


def test_restore_file_of_an_unknown_key_fails_before_touching_anything(live):
    live.ok("backup")
    result = fails(live, "restore", "file", "20000101/postgres-all-20000101-000000.sql.gz", "--clean", "--yes",
                   code=11)
    assert "not found" in result.stderr
    assert not (live.backups / "safety").exists()


def test_old_shell_pipeline_backup_is_listed_unverified_and_restorable_into_a_fresh_cluster(live):
    load_sample_data(live, 200)
    created = datetime.now(UTC) - timedelta(days=1)
    key = f"{created:%Y%m%d}/postgres-all-{created:%Y%m%d-%H%M%S}.sql.gz"
    target = backup_path(live, key)
    target.parent.mkdir(parents=True)
    pg_dumpall = real_bin_dir() / "pg_dumpall"
    # exactly the old cron job: no pipefail, no manifest
    subprocess.run(["sh", "-c", f'"{pg_dumpall}" --no-role-passwords | gzip > "{target}"'], check=True,
                   env={**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(live.port), "PGUSER": "postgres",
                        "PGPASSWORD": SUPERUSER_PASSWORD})
    assert target.stat().st_size > 0

    [record] = list_json(live)
    assert record["key"] == key
    assert record["verified"] is False
    assert "unverified" in live.ok("list").stdout

    live.ok("clean", "hard", "--yes")
    live.ok("up")
    restored = live.ok("restore", "file", key)
    assert "Database restored successfully" in restored.stdout
    assert count_orders(live) == 200
    live.ok("init")
    live.ok("verify")
    assert_users_log_in(live)


def test_every_compression_round_trips_and_gzip_stays_gunzip_compatible(live):
    load_sample_data(live, 300)
    for compression in ("gzip", "zstd", "none"):
        live.ok("backup", env={"PGDR_BACKUP__COMPRESSION": compression})
        time.sleep(1.1)  # keys have one-second resolution
    by_suffix = {key.rsplit("/", 1)[1].split(".", 1)[1]: key for key in keys(live)}
    assert set(by_suffix) == {"sql.gz", "sql.zst", "sql"}
    gunzipped = subprocess.run(["gzip", "-dc", str(backup_path(live, by_suffix["sql.gz"]))], capture_output=True,
                               check=True).stdout
    assert b"PostgreSQL database cluster dump complete" in gunzipped
    assert b"PostgreSQL database cluster dump complete" in backup_path(live, by_suffix["sql"]).read_bytes()
    for key in by_suffix.values():
        with live.connect("demo") as connection:
            connection.execute("TRUNCATE orders")
        live.ok("restore", "file", key, "--clean", "--yes")
        assert count_orders(live) == 300, key


def test_verify_fails_when_rows_are_missing_compared_with_the_restored_backup(live):
    load_sample_data(live, 300)
    live.ok("backup")
    live.ok("restore", "latest", "--clean", "--yes")
    live.ok("init")
    live.ok("verify")
    with live.connect("demo") as connection:
        connection.execute("DELETE FROM orders WHERE id <= 5")
    result = fails(live, "verify", code=10)
    assert "public.orders: 295 (backup: 300)" in result.stderr
    live.ok("verify", "--skip-row-counts")
