"""Clean means clean, and a restore brings back what pg_dumpall leaves out (issue 13, items 1-4 and 7).

- `clean soft` and `restore --clean` recreate template1 and postgres from template0, and first remove what would
  make DROP DATABASE fail (subscriptions, logical slots, prepared transactions), naming each;
- a failed `--clean` retry never backs up the half-restored state again, so the first safety backup stays;
- postgres's and template1's comments and settings, and role settings inside them, come back; a database that
  refuses connections is named as left out, at backup time, in the manifest and at restore time;
- a database whose own settings make sessions read-only restores, and its setting comes back;
- `restore latest` refuses a newest backup flagged suspicious; verify fails when nothing was checked or when a
  database of the backup is missing.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest

from end_to_end.e2e_helpers import fails, keys, manifest_path, recorded
from harness import Project, count_orders, load_sample_data

BLOCKER_SETTINGS = ('settings = { fsync = false, synchronous_commit = false, full_page_writes = false, '
                    'wal_level = "logical", max_prepared_transactions = 4, max_replication_slots = 4, '
                    'max_wal_senders = 4 }')


@pytest.fixture
def blockers_project(project: Project) -> Project:
    """A running project whose server can hold logical slots and prepared transactions."""
    config = project.config.read_text()
    start = config.index("settings = {")
    end = config.index("\n", start)
    project.config.write_text(config[:start] + BLOCKER_SETTINGS + config[end:])
    project.ok("up")
    project.ok("init")
    return recorded(project)


def add_blockers(project: Project) -> None:
    """A subscription, a logical slot and a prepared transaction in demo; a schema in template1."""
    with project.connect("demo") as connection:
        connection.execute("CREATE PUBLICATION everything FOR ALL TABLES")
        connection.execute("CREATE SUBSCRIPTION feed CONNECTION 'host=192.0.2.1 dbname=nowhere' PUBLICATION p "
                           "WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE)")
        connection.execute("SELECT pg_create_logical_replication_slot('demo_slot', 'pgoutput')")
    with project.connect("demo") as connection:
        connection.autocommit = False
        connection.execute("CREATE TABLE pending (id int)")
        connection.execute("PREPARE TRANSACTION 'half_done'")
    with project.connect("template1") as connection:
        connection.execute("CREATE SCHEMA util")
        connection.execute("CREATE TABLE util.helpers (id int)")


def cluster_facts(project: Project) -> dict[str, object]:
    with project.connect("postgres") as connection:
        return {
            "subscriptions": connection.execute("SELECT subname FROM pg_subscription").fetchall(),
            "slots": connection.execute("SELECT slot_name FROM pg_replication_slots").fetchall(),
            "prepared": connection.execute("SELECT gid FROM pg_prepared_xacts").fetchall(),
            "databases": connection.execute(
                "SELECT datname, datistemplate, datallowconn, shobj_description(oid, 'pg_database') "
                "FROM pg_database ORDER BY datname").fetchall(),
        }


def template1_schemas(project: Project) -> list[str]:
    with project.connect("template1") as connection:
        return [row[0] for row in connection.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' "
            "ORDER BY 1")]


def test_clean_soft_removes_what_blocks_a_drop_and_recreates_template1_and_postgres(blockers_project):
    project = blockers_project
    add_blockers(project)
    with project.connect("postgres") as connection:
        connection.execute("CREATE TABLE leftover (id int)")
        connection.execute("CREATE DATABASE app_template IS_TEMPLATE true")
        initdb_acl = connection.execute("SELECT datacl::text[] FROM pg_database WHERE datname = 'template1'").fetchone()
    result = project.ok("clean", "soft", "--yes")
    for named in ("subscription feed in demo", "replication slot demo_slot in demo",
                  "prepared transaction half_done in demo"):
        assert named in result.stdout, result.stdout
    facts = cluster_facts(project)
    assert facts["subscriptions"] == [] and facts["slots"] == [] and facts["prepared"] == []
    assert facts["databases"] == [
        ("postgres", False, True, "default administrative connection database"),
        ("template0", True, False, "unmodifiable empty database"),
        ("template1", True, True, "default template for new databases"),
    ]
    assert template1_schemas(project) == ["public"]
    with project.connect("postgres") as connection:
        assert connection.execute("SELECT to_regclass('public.leftover')").fetchone() == (None,)
        assert connection.execute("SELECT datacl::text[] FROM pg_database WHERE datname = 'template1'").fetchone() \
            == initdb_acl


def test_restore_clean_over_a_subscription_and_a_template1_schema_restores_the_backup(blockers_project):
    project = blockers_project
    load_sample_data(project, 300)
    with project.connect("template1") as connection:
        connection.execute("CREATE SCHEMA kept_from_backup")
    project.ok("backup")
    add_blockers(project)  # after the backup: a subscription and a template1 schema the backup does not hold
    result = project.ok("restore", "latest", "--clean", "--yes")
    assert "subscription feed in demo" in result.stdout
    assert template1_schemas(project) == ["kept_from_backup", "public"]
    assert cluster_facts(project)["subscriptions"] == []
    assert count_orders(project) == 300


def write_old_pipeline_backup(project: Project, created: datetime, body: str) -> str:
    """A backup as the old shell pipeline wrote it (no manifest), holding `body` as its SQL."""
    stamp = created.strftime("%Y%m%d-%H%M%S")
    key = f"{stamp[:8]}/postgres-all-{stamp}.sql.gz"
    path = project.backups / key
    path.parent.mkdir(parents=True, exist_ok=True)
    script = ("--\n-- PostgreSQL database cluster dump\n--\n\nSET default_transaction_read_only = off;\n\n"
              + body + "\n--\n-- PostgreSQL database cluster dump complete\n--\n\n")
    padding = "".join(f"-- padding {index:05d} so the backup is above min_size\n" for index in range(200))
    path.write_bytes(gzip.compress((padding + script).encode()))
    return key


def safety_keys(project: Project) -> list[str]:
    return [key for key in keys(project, "--safety") if key.startswith("safety/")]


def test_a_failed_clean_restore_retried_keeps_the_first_safety_backup(live):
    load_sample_data(live, 250)
    failing = write_old_pipeline_backup(live, datetime.now(UTC) + timedelta(hours=1),
                                        "CREATE ROLE app_owner;\nCREATE TABLE broken (id int);\nSELECT 1/0;\n")
    first = fails(live, "restore", "file", failing, "--clean", "--yes", code=8)
    [safety] = safety_keys(live)
    assert safety in first.stderr, first.stderr
    for _ in range(4):  # more retries than retention.keep_safety (3)
        retry = fails(live, "restore", "file", failing, "--clean", "--yes", code=8)
        assert "no safety backup: the cluster holds an incomplete restore" in retry.stdout
        assert safety in retry.stderr and safety in retry.stdout
    assert safety_keys(live) == [safety]
    live.config.write_text(live.config.read_text() + "\n[retention]\nenabled = true\nkeep_safety = 0\n")
    pruned = live.ok("prune", "--yes")
    assert safety in safety_keys(live), pruned.stdout
    assert "the state from before the incomplete restore" in pruned.stdout
    live.ok("restore", "file", safety, "--clean", "--yes")
    assert count_orders(live) == 250


def test_postgres_and_template1_comments_and_settings_come_back_and_closed_databases_are_named(live):
    with live.connect("postgres") as connection:
        connection.execute("COMMENT ON DATABASE postgres IS 'ops notes: it''s \"quoted\"\nand two lines'")
        connection.execute("ALTER DATABASE postgres SET work_mem = '8MB'")
        connection.execute("ALTER DATABASE template1 SET search_path = \"$user\", public, \"odd \"\"name\"\"\"")
        connection.execute("ALTER ROLE demo_user IN DATABASE postgres SET search_path = a, b")
        connection.execute("COMMENT ON DATABASE template1 IS NULL")
        connection.execute("ALTER DATABASE postgres OWNER TO demo_user")  # hardening a provider does
        connection.execute("REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC")
        connection.execute("GRANT CONNECT ON DATABASE template1 TO demo_readonly_user WITH GRANT OPTION")
        connection.execute("CREATE DATABASE archived")
        connection.execute("ALTER DATABASE archived WITH ALLOW_CONNECTIONS false")

    def properties():
        with live.connect("postgres") as connection:
            return connection.execute(
                "SELECT d.datname, shobj_description(d.oid, 'pg_database'), r.rolname, s.setconfig "
                "FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid "
                "LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname IN ('postgres', 'template1') "
                "ORDER BY 1, 3 NULLS FIRST").fetchall() + connection.execute(
                "SELECT d.datname, pg_get_userbyid(d.datdba), pg_get_userbyid(a.grantee), a.privilege_type, "
                "a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
                "WHERE d.datname IN ('postgres', 'template1') ORDER BY 1, 3, 4").fetchall()

    before = properties()
    backup = live.ok("backup")
    assert "database archived is left out of the backup" in backup.stderr + backup.stdout
    [key] = keys(live)
    manifest = json.loads(manifest_path(live, key).read_text())
    assert [item["name"] for item in manifest["left_out"]] == ["archived"]
    restored = live.ok("restore", "latest", "--clean", "--yes")
    assert "does not hold database archived" in restored.stderr + restored.stdout
    assert properties() == before
    with live.connect("postgres") as connection:
        assert connection.execute("SELECT 1 FROM pg_database WHERE datname = 'archived'").fetchall() == []


def test_a_database_whose_settings_make_sessions_read_only_restores_and_keeps_the_setting(live):
    load_sample_data(live, 120)
    with live.connect("postgres") as connection:
        connection.execute("ALTER DATABASE demo SET default_transaction_read_only = on")
        connection.execute("ALTER DATABASE demo SET statement_timeout = '1ms'")
        connection.execute("COMMENT ON DATABASE demo IS 'read-only archive'")
    live.ok("backup")
    live.ok("restore", "latest", "--clean", "--yes")
    live.ok("init")
    with live.connect("demo") as connection:
        connection.execute("SET statement_timeout = 0")
        assert connection.execute("SELECT count(*) FROM orders").fetchone() == (120,)
    with live.connect("postgres") as connection:
        [(config,)] = connection.execute(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = 'demo' AND s.setrole = 0").fetchall()
    assert sorted(config) == ["default_transaction_read_only=on", "statement_timeout=1ms"]


def test_restore_is_durable_before_it_is_recorded_complete(live):
    load_sample_data(live, 4000)
    live.ok("backup")
    live.ok("restore", "latest", "--clean", "--yes")
    record = json.loads((live.root / ".pgdr" / "last-restore.json").read_text())
    assert record["status"] == "complete"
    with live.connect("postgres") as connection:
        [(behind,)] = connection.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), redo_lsn) FROM pg_control_checkpoint()").fetchall()
    assert behind < 1_000_000, f"the last checkpoint is {behind} bytes of WAL behind: the restore was not flushed"


def test_restore_latest_refuses_a_suspicious_newest_backup_unless_allowed(live):
    load_sample_data(live, 6000)
    live.ok("backup")
    with live.connect("demo") as connection:
        connection.execute("TRUNCATE orders")
    live.ok("backup")
    refused = fails(live, "restore", "latest", "--clean", "--yes", code=3)
    assert "flagged suspicious" in refused.stderr and "--allow-suspicious" in refused.stderr
    refused_recover = fails(live, "recover", "--clean", "--yes", code=3)
    assert "flagged suspicious" in refused_recover.stderr
    live.ok("restore", "latest", "--clean", "--yes", "--allow-suspicious")
    assert count_orders(live) == 0


def test_verify_fails_when_a_database_of_the_backup_is_missing(live):
    live.ok("backup")
    live.ok("restore", "latest", "--clean", "--yes")
    live.ok("init")
    with live.connect("postgres") as connection:
        connection.execute("CREATE DATABASE extra")
    live.ok("backup")
    live.ok("restore", "latest", "--clean", "--yes", "--allow-suspicious")
    live.ok("init")
    with live.connect("postgres") as connection:
        connection.execute("DROP DATABASE extra")
    result = fails(live, "verify", code=10)
    assert "database extra of backup" in result.stdout + result.stderr


def test_verify_with_nothing_to_check_fails_unless_allow_empty(project):
    config = project.config.read_text()
    project.config.write_text(config[: config.index("[[databases]]")])
    project.ok("up")
    result = fails(project, "verify", code=10)
    assert "nothing verified" in result.stderr
    allowed = project.ok("verify", "--allow-empty")
    assert "Nothing verified" in allowed.stdout + allowed.stderr
