"""pgdr wal stream and pgdr wal mark, as a user runs them: each finished segment is stored and decodes to WAL that
pg_waldump reads without a gap; SIGTERM stores the growing segment and exits 0; a mark is recorded on the target;
`pgdr up` configures the managed cluster for streaming; a server that cannot stream is refused with the setting or
the pg_hba.conf line to add; `schedule print --systemd` gains the service with physical backups.

Killed streamers, server restarts, S3 errors and a full spool: tests/faults/test_wal_stream_faults.py.
"""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import newer_binaries, recorded, server_major
from end_to_end.wal_stream_helpers import (
    assert_no_gap,
    assert_waldump_reads,
    assert_waldump_reads_range,
    current_lsn,
    decode_partial_to,
    decode_to,
    has_segments,
    local_archive,
    local_status,
    mark_record,
    start_streamer,
    switch_segments,
)
from faults.fault_helpers import assert_clean_failure, cluster_project
from harness import SUPERUSER_PASSWORD, Project, TestServer, clean_environment, project_config, write_dotenv
from pgdr.wal.archive import Segment, is_segment_name, parse_lsn


@pytest.fixture(scope="module")
def streaming() -> Iterator[Project]:
    """One managed cluster for the module (pgdr up; no init: the WAL is all these tests need)."""
    with cluster_project(init=False) as project:
        yield project


def test_pgdr_up_configures_the_managed_cluster_for_streaming(streaming: Project):
    with streaming.connect() as connection:
        settings = dict(connection.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                           "('wal_level', 'max_wal_senders', 'max_replication_slots')").fetchall())
    assert settings == {"wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10"}


def test_each_segment_is_stored_whole_and_sigterm_stores_the_growing_one(streaming: Project, workdir: Path):
    streamer = start_streamer(streaming, workdir / "stream.log")
    try:
        switched = switch_segments(streaming, 3)
        streamer.wait_for(lambda: has_segments(local_archive(streaming), switched), "the switched segments are stored")
        with streaming.connect() as connection:  # mid-segment: no switch
            connection.execute("INSERT INTO wal_filler (payload) SELECT md5(g::text) FROM generate_series(1, 500) g")
        newest = current_lsn(streaming)
        streamer.wait_for(lambda: (status := local_status(streaming)) is not None
                          and parse_lsn(status.stored_lsn) >= newest, "the status reaches the newest WAL")
        os.kill(streamer.process.pid, signal.SIGTERM)  # pgdr alone: it must stop pg_receivewal itself
        assert streamer.finish() == 0, streamer.output()
    finally:
        streamer.kill()
    output = streamer.output()
    assert "WAL stream stopped" in output and "Traceback" not in output, output
    assert all(f"Stored WAL segment {name}" in output for name in switched), output

    listing = local_archive(streaming)
    growing = Segment.of_lsn(newest, 1)
    assert growing.name in listing.partials, "the growing segment was not stored at SIGTERM"
    assert not [path.name for path in (streaming.root / ".pgdr" / "wal-spool").iterdir() if is_segment_name(path.name)]
    status = local_status(streaming)
    assert status is not None and status.slot == "pgdr" and status.timeline == 1
    assert parse_lsn(status.stored_lsn) >= newest

    needed = assert_no_gap(listing)
    folder = workdir / "decoded"
    decode_to(lambda key: (streaming.backups / key).read_bytes(), listing, folder)
    assert_waldump_reads(folder, needed[0], Segment.from_name(switched[-1]))
    # the partial holds the newest records: pg_waldump reads them up to where the server was
    decode_partial_to(lambda key: (streaming.backups / key).read_bytes(), listing.partials[growing.name], folder)
    assert_waldump_reads_range(folder, growing.start_lsn, newest)


def test_streaming_works_on_the_newest_major_too(project: Project, workdir: Path):
    newer = newer_binaries()
    project.environment.update(newer)
    try:
        project.ok("up")
        assert server_major(project) >= 16
        streamer = start_streamer(project, workdir / "stream.log")
        try:
            switched = switch_segments(project, 2)
            streamer.wait_for(lambda: has_segments(local_archive(project), switched), "the segments are stored")
            streamer.process.send_signal(signal.SIGTERM)
            assert streamer.finish() == 0, streamer.output()
        finally:
            streamer.kill()
        listing = local_archive(project)
        needed = assert_no_gap(listing)
        decode_to(lambda key: (project.backups / key).read_bytes(), listing, workdir / "decoded")
        assert_waldump_reads(workdir / "decoded", needed[0], Segment.from_name(switched[-1]),
                             Path(newer["PGDR_POSTGRES__BIN_DIR"]))
    finally:
        project.pgdr("down")


def test_mark_records_a_restore_point_on_every_target(streaming: Project):
    result = streaming.ok("wal", "mark", "before-migration-42")
    record = mark_record(streaming, "before-migration-42")
    assert record["name"] == "before-migration-42" and record["timeline"] == 1
    assert str(record["lsn"]) in result.stdout
    assert parse_lsn(str(record["lsn"])) <= current_lsn(streaming)

    refused = streaming.pgdr("wal", "mark", "../escape")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "not a restore point name" in refused.stderr


def external_project(root: Path, server: TestServer) -> Project:
    root.mkdir()
    config = project_config(server.port).replace('mode = "local"', 'mode = "external"')
    config = "\n".join(line for line in config.splitlines() if not line.startswith("settings = "))
    (root / "pgdr.toml").write_text(config + "\n")
    write_dotenv(root / ".env")
    return recorded(Project(root, server.port, clean_environment()))


def restart_with(server: TestServer, *settings: str) -> None:
    server.pg_ctl("stop", "-m", "fast", "-w")
    options = [f"-c port={server.port}", f"-c listen_addresses={server.host}",
               f"-c unix_socket_directories={server.socket_dir}", "-c fsync=off", *(f"-c {item}" for item in settings)]
    server.pg_ctl("start", "-w", "-t", "60", "-l", str(server.log_file), "-o", " ".join(options))


def test_a_server_that_cannot_stream_is_refused_with_the_setting_or_line_to_add(pg_server: TestServer,
                                                                                 workdir: Path):
    project = external_project(workdir / "external", pg_server)

    restart_with(pg_server, "max_wal_senders=0")
    refused = project.pgdr("wal", "stream")
    assert_clean_failure(refused, 3, "max_wal_senders = 0")
    assert "max_wal_senders = 10" in refused.stderr and "command: postgres -c max_wal_senders=10" in refused.stderr

    restart_with(pg_server, "wal_level=minimal", "max_wal_senders=0")
    refused = project.pgdr("wal", "stream")
    assert_clean_failure(refused, 3, "wal_level = minimal")
    assert "wal_level = replica" in refused.stderr and "command: postgres -c wal_level=replica" in refused.stderr

    restart_with(pg_server)
    hba = pg_server.data_dir / "pg_hba.conf"
    kept = [row for row in hba.read_text().splitlines() if row.split()[1:2] != ["replication"]]
    hba.write_text("\n".join(kept) + "\n")
    with pg_server.connect() as connection:
        connection.execute("SELECT pg_reload_conf()")
        connection.execute(f"CREATE ROLE walless LOGIN PASSWORD '{SUPERUSER_PASSWORD}'")
    refused = project.pgdr("wal", "stream", env={"PGDR_WAL__SPOOL_DIR": str(workdir / "spool")})
    assert_clean_failure(refused, 3, "no pg_hba.conf entry for replication connection")
    assert "host replication postgres 127.0.0.1/32 scram-sha-256" in refused.stderr, refused.stderr
    assert str(hba) in refused.stderr and "$PGDATA/pg_hba.conf" in refused.stderr

    refused = project.pgdr("wal", "stream", env={"PGDR_POSTGRES__SUPERUSER": "walless"})
    assert_clean_failure(refused, 3, "walless", "REPLICATION")
    assert 'ALTER ROLE "walless" REPLICATION;' in refused.stderr


def test_schedule_prints_the_wal_service_with_physical_backups(project: Project, workdir: Path):
    physical = {"PGDR_BACKUP__FORMAT": "physical"}
    assert "pgdr-wal.service" not in project.ok("schedule", "print", "--systemd").stdout
    text = project.ok("schedule", "print", "--systemd", env=physical).stdout
    assert "enable --now" in text and "pgdr-wal.service" in text.split("enable --now")[1].splitlines()[0]
    body = text.split("# ---- pgdr-wal.service ----")[1].split("# ----")[0]
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(body)
    service = unit["Service"]
    assert (service["Type"], service["Restart"], service["KillSignal"]) == ("simple", "always", "SIGTERM")
    words = service["ExecStart"].split()
    assert words[-2:] == ["wal", "stream"] and words[words.index("--config") + 1] == str(project.config.resolve())
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "wal stream" in project.ok("schedule", "print", "--cron", env=physical).stdout

    folder = workdir / "units"
    project.ok("schedule", "print", "--systemd", "--dir", str(folder), env=physical)
    analyze = shutil.which("systemd-analyze")  # where it is missing, test_schedule.py's skip already says so
    if analyze is not None:
        verified = subprocess.run([analyze, "verify", *sorted(str(path) for path in folder.iterdir())],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
