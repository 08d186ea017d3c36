"""restore's checks before the server is touched, and its messages, without a server: found by the mutation pass
(tests/mutants/mutation_pass.py), which otherwise had only end-to-end tests to kill restore's mutants with.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from pgdr.actions.restore import check_versions, refuse_existing
from pgdr.artifact import Manifest, make_key
from pgdr.catalog import BackupRecord
from pgdr.errors import IntegrityError, Refused, StageFailed
from pgdr.formats.plain import check_backup, fetch_to_local
from pgdr.formats.psql_feed import describe_psql_error
from pgdr.storage.local import LocalStorage
from pgdr.ui import Output

WHEN = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SQL = b"SELECT 1;\n" * 5000 + b"--\n-- PostgreSQL database cluster dump complete\n--\n\n"


def context(local_dir: Path) -> SimpleNamespace:
    console = Console(file=io.StringIO(), width=300)
    return SimpleNamespace(output=Output(given_console=console, given_error_console=console),
                           settings=SimpleNamespace(backup=SimpleNamespace(dir=local_dir)))


def printed(checked: SimpleNamespace) -> str:
    return checked.output.console.file.getvalue()


def stored(storage: LocalStorage, data: bytes, with_manifest: bool = True, server_version: str = "15.18"
           ) -> BackupRecord:
    key = make_key(WHEN, "gzip")
    storage.put_bytes(key.key, data)
    manifest = Manifest(key=key.key, compression="gzip", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                        uncompressed_size=len(SQL), server_version=server_version, pg_dumpall_version="15.18",
                        pgdr_version="0", started_at=WHEN, finished_at=WHEN) if with_manifest else None
    if manifest is not None:
        storage.put_bytes(key.manifest_key, manifest.to_json())
    return BackupRecord(key, len(data), WHEN, storage.name, manifest=manifest)


@pytest.fixture
def remote(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "remote")


def test_a_backup_with_a_manifest_is_checked_by_its_checksum(remote: LocalStorage, tmp_path: Path) -> None:
    record = stored(remote, gzip.compress(SQL))
    checked = context(tmp_path)
    check_backup(checked, remote, record)  # type: ignore[arg-type]
    assert f"Checking {record.key} (checksum)" in printed(checked)


def test_a_backup_without_manifest_is_decompressed_and_needs_its_end_marker(remote: LocalStorage,
                                                                           tmp_path: Path) -> None:
    record = stored(remote, gzip.compress(SQL), with_manifest=False)
    checked = context(tmp_path)
    check_backup(checked, remote, record)  # type: ignore[arg-type]
    assert f"Checking {record.key} (decompression)" in printed(checked)


def test_a_backup_without_manifest_cut_short_is_refused(remote: LocalStorage, tmp_path: Path) -> None:
    data = gzip.compress(SQL)
    record = stored(remote, data[: len(data) // 2], with_manifest=False)
    with pytest.raises(IntegrityError, match=f"backup {record.key} does not decompress as gzip"):
        check_backup(context(tmp_path), remote, record)  # type: ignore[arg-type]


def test_a_backup_without_manifest_and_without_its_end_marker_is_refused(remote: LocalStorage,
                                                                        tmp_path: Path) -> None:
    record = stored(remote, gzip.compress(SQL.replace(b"cluster dump complete", b"cluster dump")),
                    with_manifest=False)
    with pytest.raises(IntegrityError, match="the dump's end marker is missing"):
        check_backup(context(tmp_path), remote, record)  # type: ignore[arg-type]


def test_a_size_or_checksum_other_than_the_manifests_is_refused(remote: LocalStorage, tmp_path: Path) -> None:
    data = gzip.compress(SQL)
    record = stored(remote, data)
    remote.put_bytes(record.key.key, data + b"x")
    longer = BackupRecord(record.key, len(data) + 1, WHEN, "local", manifest=record.manifest)
    with pytest.raises(IntegrityError, match=f"is {len(data) + 1} bytes but its manifest says {len(data)}"):
        check_backup(context(tmp_path), remote, longer)  # type: ignore[arg-type]
    remote.put_bytes(record.key.key, bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(IntegrityError, match="does not match its manifest's sha256"):
        check_backup(context(tmp_path), remote, record)  # type: ignore[arg-type]


def test_a_download_is_checked_on_the_way_and_its_manifest_follows_it(remote: LocalStorage, tmp_path: Path) -> None:
    data = gzip.compress(SQL)
    record = stored(remote, data)
    local = fetch_to_local(context(tmp_path / "local"), remote, record, LocalStorage(tmp_path / "local"))  # type: ignore[arg-type]
    assert local.get_bytes(record.key.key) == data
    assert local.get_bytes(record.key.manifest_key) == remote.get_bytes(record.key.manifest_key)


def test_a_corrupt_download_leaves_nothing_behind(remote: LocalStorage, tmp_path: Path) -> None:
    data = gzip.compress(SQL)
    record = stored(remote, data)
    remote.put_bytes(record.key.key, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        fetch_to_local(context(tmp_path / "local"), remote, record, LocalStorage(tmp_path / "local"))  # type: ignore[arg-type]
    assert [path for path in (tmp_path / "local").rglob("*") if path.is_file()] == []


@pytest.mark.parametrize(("version", "refused"), [("15.18", False), ("14.2", False), ("16.0", True),
                                                  ("PostgreSQL 16.4 (Debian 16.4-1)", True), ("", False)])
def test_a_backup_from_a_newer_major_is_refused(remote: LocalStorage, version: str, refused: bool) -> None:
    record = stored(remote, b"x", server_version=version)
    if not refused:
        check_versions(record, 15)
        return
    with pytest.raises(Refused, match="comes from PostgreSQL 16, newer than this server \\(15\\)") as raised:
        check_versions(record, 15)
    assert raised.value.hint == "restore into a PostgreSQL 16 server or newer"


def test_the_psql_error_and_its_statement_are_named() -> None:
    tail = ("psql:<stdin>:12: NOTICE:  something\npsql:<stdin>:13: ERROR:  relation \"nowhere\" does not exist\n"
            "  \nCREATE TABLE broken (id integer REFERENCES nowhere (id));\n")
    assert describe_psql_error(StageFailed("psql", "exit status 3", tail)) == (
        'relation "nowhere" does not exist (statement: CREATE TABLE broken (id integer REFERENCES nowhere (id));)')
    assert describe_psql_error(StageFailed("psql", "exit status 3", "psql: ERROR:  the last line\n")) == \
        "the last line"
    assert describe_psql_error(StageFailed("psql", "exit status 2", "connection refused\n")) == "exit status 2"


def test_a_refusal_names_what_the_server_holds_and_how_to_go_on() -> None:
    with pytest.raises(Refused) as raised:
        refuse_existing(["crm", "shop"], ["app"], "pgdr restore latest")
    assert raised.value.message == ("the server already has databases crm, shop and roles app; refusing to restore "
                                    "over live data")
    assert raised.value.hint.startswith("re-run as `pgdr restore latest --clean`")
    with pytest.raises(Refused, match="the server already has roles app;"):
        refuse_existing([], ["app"], "x")
