"""The bulk load's settings (pgdr.postgres.bulk_load): what they turn off, what streamed WAL keeps, the mark in
pgdr.conf that says the server may still run with them, and the memory of index builds."""

from __future__ import annotations

import subprocess

import pytest

from harness import run_as_postgres_kwargs, server_bin_dir
from pgdr.postgres import bulk_load
from pgdr.postgres.binaries import version_of
from pgdr.postgres.bulk_load import (
    BULK_LOAD_MARK,
    bulk_settings,
    fsync_is_off,
    index_build_memory_mb,
    is_marked,
    physical_memory,
)
from pgdr.postgres.cluster import server_settings_text

GB = 1024**3


def test_without_streamed_wal_the_load_writes_minimal_wal_and_no_wal_senders():
    settings = bulk_settings(15, keep_wal=False)
    assert settings["fsync"] is False and settings["full_page_writes"] is False and settings["autovacuum"] is False
    assert (settings["wal_level"], settings["max_wal_senders"], settings["archive_mode"]) == ("minimal", 0, False)
    assert "summarize_wal" not in settings  # PostgreSQL 15 has no such setting: naming it stops the server starting


@pytest.mark.parametrize("major", [15, 16])
def test_before_17_wal_summaries_are_never_named(major: int):
    assert "summarize_wal" not in bulk_settings(major, keep_wal=False)  # unknown before 17: the server would not start


def test_every_setting_of_the_load_is_one_the_installed_server_knows():
    """The names the bulk load writes into pgdr.conf, for the major of the installed server: a name it does not know
    stops it from starting (the restore would fail before loading anything)."""
    postgres = str(server_bin_dir() / "postgres")
    major, _ = version_of(postgres)
    described = subprocess.run([postgres, "--describe-config"], capture_output=True, text=True, check=True,
                               **run_as_postgres_kwargs()).stdout  # type: ignore[call-overload]
    known = {line.split("\t", 1)[0] for line in described.splitlines()}
    for keep_wal in (False, True):
        assert set(bulk_settings(major, keep_wal)) <= known, set(bulk_settings(major, keep_wal)) - known


def test_physical_memory_is_what_the_kernel_reports_and_0_where_it_cannot_be_read(monkeypatch: pytest.MonkeyPatch):
    with open("/proc/meminfo", encoding="ascii") as handle:
        kilobytes = int(next(line for line in handle if line.startswith("MemTotal:")).split()[1])
    assert physical_memory() == kilobytes * 1024

    def unreadable(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(bulk_load.os, "sysconf", unreadable)
    assert physical_memory() == 0
    assert index_build_memory_mb(physical_memory(), 4) == 256


def test_from_17_wal_summaries_are_off_with_minimal_wal():
    assert bulk_settings(17, keep_wal=False)["summarize_wal"] is False
    assert "summarize_wal" not in bulk_settings(17, keep_wal=True)


def test_streamed_wal_keeps_wal_level_and_the_senders():
    settings = bulk_settings(18, keep_wal=True)
    assert not {"wal_level", "max_wal_senders", "archive_mode"} & set(settings)
    assert settings["fsync"] is False


def test_the_mark_is_found_in_the_file_written_for_a_bulk_load_only():
    assert is_marked(server_settings_text({"fsync": False}, BULK_LOAD_MARK))
    assert not is_marked(server_settings_text({"fsync": False}))
    assert not is_marked("# note: " + BULK_LOAD_MARK)  # a whole line, as pgdr writes it


def test_fsync_off_in_the_normal_settings_is_read_in_every_spelling():
    assert all(fsync_is_off({"fsync": value}) for value in (False, "off", "false", "0", "no", "OFF"))
    assert not any(fsync_is_off({"fsync": value}) for value in (True, "on", "true", "1"))
    assert not fsync_is_off({})


def test_index_build_memory_is_a_share_of_the_machine_between_256_mb_and_1_gb():
    assert index_build_memory_mb(0, 4) == 256
    assert index_build_memory_mb(2 * GB, 4) == 256
    assert index_build_memory_mb(8 * GB, 4) == 512
    assert index_build_memory_mb(64 * GB, 4) == 1024
    assert index_build_memory_mb(8 * GB, 0) == 1024  # no sessions counts as one
    assert index_build_memory_mb(4 * GB, 0) == index_build_memory_mb(4 * GB, 1) == 1024
