"""The recoverable window through the CLI: `pgdr status`, `list` (and --json) show it, `check` exits 15 when the
archive is behind, broken or not streamed, the metrics carry the lag, a drill records the RPO, and `prune` deletes
only the WAL no kept base backup reads, the window it reports still whole after.

The archive is laid out by hand in .pgdr/backups/wal/ as `pgdr wal stream` writes it (segments, a partial, a
timeline history, status.json), with physical base backups' manifests beside the backups; times are set relative
to when the test runs, and only compared with the times written, never with the clock.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from end_to_end.ops_helpers import fabricate, set_config
from harness import Project
from pgdr.artifact import Manifest, PhysicalFacts, make_physical_key
from pgdr.wal.archive import Segment, StreamStatus, format_lsn

CHECK_FAILED = 15
SIZE = 16 * 1024 * 1024
SWITCH = 12 * SIZE + 0xA0  # timeline 2 branches off inside segment 12


def base_backup(project: Project, created: datetime, start: int, stop: int) -> tuple[str, datetime]:
    """A physical base backup on timeline 1, from segment `start` to `stop`: (key, consistent from)."""
    key = make_physical_key(created, "none").key
    stop_time = created + timedelta(minutes=1)
    facts = PhysicalFacts(timeline=1, start_lsn=format_lsn(start * SIZE + 0x28),
                          stop_lsn=format_lsn(stop * SIZE + 0x100), start_time=created, stop_time=stop_time,
                          system_identifier="7")
    manifest = Manifest(key=key, compression="none", server_version="17", pg_dumpall_version="", pgdr_version="",
                        started_at=created, format="physical", size=4096, sha256="0" * 64, uncompressed_size=4096,
                        finished_at=stop_time, physical=facts)
    path = project.backups / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 4096)
    (project.backups / (key + ".manifest.json")).write_bytes(manifest.to_json())
    return key, stop_time


def put_wal(project: Project, name: str, stored: datetime, data: bytes = b"wal") -> None:
    path = project.backups / "wal" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (stored.timestamp(), stored.timestamp()))


def write_status(project: Project, stored_at: datetime, caught_up_at: datetime) -> None:
    status = StreamStatus("7", 2, format_lsn(15 * SIZE + 0x500), stored_at, caught_up_at)
    (project.backups / "wal" / "status.json").write_bytes(status.to_json())


def archive(project: Project, now: datetime) -> dict[str, object]:
    """Three base backups (two physical, the oldest a plain one), timeline 1 to segment 12, timeline 2 from 12 to
    the partial 15, a partial of 5 superseded by its segment."""
    old_plain = fabricate_plain(project, now - timedelta(minutes=50))
    older, older_from = base_backup(project, now - timedelta(minutes=40), 6, 7)
    newest, newest_from = base_backup(project, now - timedelta(minutes=30), 10, 11)
    first = now - timedelta(hours=1)
    for number in range(1, 13):
        put_wal(project, Segment(1, number).name, first + timedelta(minutes=number))
    put_wal(project, "00000002.history", first, f"1\t{format_lsn(SWITCH)}\tno recovery target specified\n".encode())
    for number in range(12, 15):
        put_wal(project, Segment(2, number).name, first + timedelta(minutes=number, seconds=30))
    put_wal(project, Segment(2, 15).name + ".partial", now - timedelta(seconds=20))
    put_wal(project, Segment(1, 5).name + ".partial", first + timedelta(minutes=4))
    write_status(project, now - timedelta(seconds=20), now - timedelta(seconds=20))
    return {"plain": old_plain, "older": older, "older_from": older_from, "newest": newest,
            "newest_from": newest_from, "stored_at": now - timedelta(seconds=20)}


def fabricate_plain(project: Project, created: datetime) -> str:
    project.ok("backup")
    real = next(path.relative_to(project.backups).as_posix() for path in project.backup_files()
                if path.name.endswith(".sql.gz"))
    key = fabricate(project, real, created)
    (project.backups / real).unlink()
    (project.backups / (real + ".manifest.json")).unlink()
    return key


def check_codes(project: Project) -> tuple[list[str], str]:
    result = project.pgdr("check", "--json")
    assert result.returncode == CHECK_FAILED, result.stdout + result.stderr
    report = json.loads(result.stdout)
    text = project.pgdr("check")
    assert text.returncode == CHECK_FAILED and "Traceback" not in text.stderr
    return [problem["code"] for problem in report["problems"]], text.stdout


def wal_names(project: Project) -> set[str]:
    return {path.name for path in (project.backups / "wal").iterdir()}


def test_status_list_check_and_metrics_show_the_window(running_project: Project):
    project = running_project
    set_config(project, '[metrics]\ntextfile = "textfile/pgdr.prom"\n')
    laid = archive(project, datetime.now(UTC).replace(microsecond=0))
    window_text = (f"recoverable from {laid['older_from'].isoformat(sep=' ')} to "  # type: ignore[attr-defined]
                   f"{laid['stored_at'].isoformat(sep=' ')}, RPO now ")  # type: ignore[attr-defined]

    status = project.ok("status").stdout
    assert f"WAL archive (local): {window_text}" in status
    found = json.loads(project.ok("status", "--json").stdout)["wal_windows"]["local"]
    assert found["from"] == laid["older_from"].isoformat()  # type: ignore[attr-defined]
    assert found["to"] == laid["stored_at"].isoformat()  # type: ignore[attr-defined]
    assert (found["timeline"], found["end_segment"], found["gap"]) == (2, Segment(2, 15).name, None)
    assert found["base_backup"] == laid["older"] and found["rpo_seconds"] is not None

    listed = project.ok("list").stdout
    assert f"WAL archive (local): {window_text}" in listed
    records = json.loads(project.ok("list", "--json").stdout)
    assert {record["recoverable_window"]["from"] for record in records} == {found["from"]}

    ok = project.ok("check")
    assert ok.stdout.startswith("OK: ")
    assert json.loads(project.ok("check", "--json").stdout)["wal_windows"]["local"]["to"] == found["to"]
    metrics = (project.root / "textfile" / "pgdr.prom").read_text()
    assert 'pgdr_wal_lag_seconds{target="local"} ' in metrics
    newest = (laid["stored_at"]).timestamp()  # type: ignore[attr-defined]
    assert f'pgdr_wal_last_segment_timestamp_seconds{{target="local"}} {int(newest)}' in metrics

    project.ok("drill", "--file", str(laid["plain"]))  # a logical drill: the RPO the archive gave is recorded too
    [entry] = json.loads(project.ok("drill", "--history", "--json").stdout)
    assert entry["outcome"] == "ok" and entry["rpo_seconds"] is not None and entry["rto_seconds"] > 0


def test_check_fails_when_the_archive_is_behind_has_a_gap_or_nothing_streams(running_project: Project):
    project = running_project
    now = datetime.now(UTC).replace(microsecond=0)
    laid = archive(project, now)
    write_status(project, now - timedelta(seconds=20), now - timedelta(hours=2))
    codes, text = check_codes(project)
    assert codes == ["wal_behind"]
    assert text.startswith("CRITICAL: WAL archive in local is 2h") and "pgdr wal stream" in text

    write_status(project, laid["stored_at"], laid["stored_at"])  # type: ignore[arg-type]
    (project.backups / "wal" / Segment(1, 8).name).unlink()
    codes, text = check_codes(project)
    assert codes == ["wal_gap"] and Segment(1, 8).name in text
    gap = json.loads(project.pgdr("status", "--json").stdout)["wal_windows"]["local"]
    assert gap["gap"] == Segment(1, 8).name and gap["end_segment"] == Segment(1, 7).name
    put_wal(project, Segment(1, 8).name, now - timedelta(minutes=50))

    with project.connect() as connection:
        connection.execute("SELECT pg_catalog.pg_create_physical_replication_slot('pgdr')")
    codes, text = check_codes(project)
    assert codes == ["wal_slot_inactive"] and "'pgdr' is inactive" in text
    with project.connect() as connection:
        connection.execute("SELECT pg_catalog.pg_drop_replication_slot('pgdr')")
    project.ok("check")


def test_prune_deletes_only_the_wal_no_kept_base_backup_reads(running_project: Project):
    project = running_project
    laid = archive(project, datetime.now(UTC).replace(microsecond=0))
    before = json.loads(project.ok("status", "--json").stdout)["wal_windows"]["local"]

    set_config(project, "[retention]\nenabled = true\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\n"
                        "keep_monthly = 0\n")
    dry = project.ok("prune", "--dry-run").stdout  # the newest alone: WAL up to its start (segment 10) would go
    assert f"would delete 10 WAL objects ({Segment(1, 1).name} .. {Segment(1, 9).name}, " in dry
    plan = json.loads(project.ok("prune", "--dry-run", "--json").stdout)[0]
    assert plan["wal_delete"]["count"] == 10 and plan["wal_deleted"] == 0

    two = {"PGDR_RETENTION__KEEP_LAST": "2"}  # the two physical ones: WAL up to segment 6
    wal_before = wal_names(project)
    done = project.ok("prune", "--yes", env=two).stdout
    assert "deleted 6 WAL objects" in done
    gone = {Segment(1, number).name for number in range(1, 6)} | {Segment(1, 5).name + ".partial"}
    assert wal_before - wal_names(project) == gone
    assert "00000002.history" in wal_names(project)
    assert not (project.backups / str(laid["plain"])).exists()

    after = json.loads(project.ok("status", "--json").stdout)["wal_windows"]["local"]
    assert {name: after[name] for name in ("from", "to", "base_backup", "end_segment", "gap", "timeline")} == \
        {name: before[name] for name in ("from", "to", "base_backup", "end_segment", "gap", "timeline")}
    project.ok("check")
    assert "deleted 0 backups" in project.ok("prune", "--yes", env=two).stdout  # pruning again deletes nothing more
    assert wal_names(project) == wal_before - gone
