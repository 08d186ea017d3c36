"""LocalStorage: uploads invisible until commit, nothing left on abort, 0600 files, keys kept inside the folder,
disk-full and file-size-limit errors that name the fix; list(prefix), exists and delete(*keys) with split backups
(a folder under one key) and uploads used as context managers."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgdr.errors import ExitCode, StorageError, UsageError
from pgdr.storage.local import LocalStorage
from small_filesystem import KINDS, small_filesystem

KEY = "20251116/postgres-all-20251116-095831.sql.gz"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "backups")


def files_under(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_upload_is_invisible_until_commit(storage: LocalStorage) -> None:
    upload = storage.open_upload(KEY)
    upload.write(b"first part, ")
    upload.write(b"second part")
    assert storage.list() == []
    assert storage.get_bytes(KEY) is None
    assert not (storage.root / KEY).exists()
    with pytest.raises(StorageError, match="not found"):
        storage.open_download(KEY)
    upload.commit()
    assert [(item.key, item.size) for item in storage.list()] == [(KEY, len(b"first part, second part"))]
    assert storage.get_bytes(KEY) == b"first part, second part"
    with storage.open_download(KEY) as handle:
        assert handle.read() == b"first part, second part"
    assert files_under(storage.root) == [KEY]  # no temporary left beside it


def test_abort_leaves_nothing(storage: LocalStorage) -> None:
    upload = storage.open_upload(KEY)
    upload.write(b"x" * 100_000)
    assert len(files_under(storage.root)) == 1  # the hidden partial file
    upload.abort()
    assert files_under(storage.root) == []
    assert storage.list() == []
    upload.abort()  # twice is harmless


def test_abort_keeps_an_earlier_committed_backup(storage: LocalStorage) -> None:
    storage.put_bytes(KEY, b"good backup")
    upload = storage.open_upload(KEY)
    upload.write(b"broken replacement")
    upload.abort()
    assert storage.get_bytes(KEY) == b"good backup"
    assert files_under(storage.root) == [KEY]


def test_commit_replaces_atomically(storage: LocalStorage) -> None:
    storage.put_bytes(KEY, b"old")
    upload = storage.open_upload(KEY)
    upload.write(b"new")
    assert storage.get_bytes(KEY) == b"old"
    upload.commit()
    assert storage.get_bytes(KEY) == b"new"


def test_a_long_upload_is_handed_to_the_disk_while_it_is_written(storage: LocalStorage,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Writeback starts every WRITEBACK_EVERY bytes, over consecutive ranges, so the fsync at commit is short;
    the content is untouched."""
    advised: list[tuple[int, int]] = []
    real_fadvise = os.posix_fadvise

    def spy(descriptor: int, offset: int, length: int, advice: int) -> None:
        advised.append((offset, length))
        real_fadvise(descriptor, offset, length, advice)

    monkeypatch.setattr("pgdr.storage.local.WRITEBACK_EVERY", 1000)
    monkeypatch.setattr(os, "posix_fadvise", spy)
    pieces = [bytes([number]) * 700 for number in range(10)]
    upload = storage.open_upload(KEY)
    for piece in pieces:
        upload.write(piece)
    upload.commit()
    assert advised == [(0, 1400), (1400, 1400), (2800, 1400), (4200, 1400), (5600, 1400)]
    assert storage.get_bytes(KEY) == b"".join(pieces)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_files_are_0600_whatever_the_umask(storage: LocalStorage, mask: int) -> None:
    original = os.umask(mask)
    try:
        storage.put_bytes(KEY, b"data")
        storage.put_bytes(KEY + ".manifest.json", b"{}")
        upload = storage.open_upload("20251117/postgres-all-20251117-000000.sql.gz")
        partial = next(path for path in storage.root.rglob(".*") if path.is_file())
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600
        upload.abort()
    finally:
        os.umask(original)
    for key in (KEY, KEY + ".manifest.json"):
        assert stat.S_IMODE((storage.root / key).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "key",
    ["../escape.sql.gz", "20251116/../../escape.sql.gz", "/etc/passwd", "/tmp/x", "", ".", "20251116/..",
     "safety/../../x", "a/" * 3 + "../" * 4 + "x"],
)
def test_keys_escaping_the_folder_are_refused(storage: LocalStorage, key: str, tmp_path: Path) -> None:
    for operation in (storage.open_upload, storage.open_download, storage.delete, storage.get_bytes,
                      storage.local_path, lambda key: storage.put_bytes(key, b"x")):
        with pytest.raises(UsageError) as raised:
            operation(key)
        assert raised.value.exit_code == ExitCode.CONFIG
        assert "pgdr list" in raised.value.hint
    assert not (tmp_path / "escape.sql.gz").exists() and not (tmp_path / "x").exists()


def test_symlink_out_of_the_folder_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir()
    (storage.root / "20251116").symlink_to(outside)
    with pytest.raises(UsageError, match="escapes the backup dir"):
        storage.put_bytes(KEY, b"x")
    assert list(outside.iterdir()) == []


def test_keys_inside_the_folder_are_accepted(storage: LocalStorage) -> None:
    assert storage.local_path("safety/" + KEY) == storage.root.resolve() / "safety" / KEY
    assert storage.local_path("a/../" + KEY) == storage.root.resolve() / KEY


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
@example("a\x00b")
@example("../" * 40)
def test_any_key_maps_inside_the_folder_or_is_refused(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "backups")
    try:
        path = storage.path_of(key)
    except UsageError:
        return
    assert storage.root.resolve() in path.parents


def test_list_is_sorted_skips_hidden_files_and_handles_a_missing_folder(storage: LocalStorage) -> None:
    assert storage.list() == []
    for key in ("b/2", "a/1", "c"):
        storage.put_bytes(key, key.encode())
    (storage.root / "a" / ".hidden").write_bytes(b"x")
    items = storage.list()
    assert [item.key for item in items] == ["a/1", "b/2", "c"]
    assert all(item.modified.tzinfo is not None for item in items)


def test_delete(storage: LocalStorage) -> None:
    storage.put_bytes(KEY, b"x")
    storage.delete(KEY)
    assert storage.list() == []
    storage.delete(KEY)  # already gone: fine


SPLIT = "20251116/postgres-all-20251116-095831.split"
SPLIT_PARTS = ("globals.sql.gz", "demo.dump", "shop.dump")


def put_split_backup(storage: LocalStorage, key: str = SPLIT) -> None:
    for part in SPLIT_PARTS:
        storage.put_bytes(f"{key}/{part}", part.encode())
    storage.put_bytes(key + ".manifest.json", b"{}")


def test_list_with_a_prefix_walks_only_the_folder_it_points_into(storage: LocalStorage,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    storage.put_bytes(KEY, b"x")
    storage.put_bytes("20251117/postgres-all-20251117-000000.sql.gz", b"y")
    storage.put_bytes("drill-history.json", b"[]")
    put_split_backup(storage)
    walked: list[Path] = []
    real_rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: walked.append(self) or real_rglob(self, pattern))
    assert [item.key for item in storage.list(SPLIT + "/")] == sorted(f"{SPLIT}/{part}" for part in SPLIT_PARTS)
    assert walked == [storage.root / SPLIT], "more than the split backup's folder was walked"
    assert [item.key for item in storage.list("20251116/postgres-all-20251116-095831.s")] == sorted(
        [KEY, SPLIT + ".manifest.json", *(f"{SPLIT}/{part}" for part in SPLIT_PARTS)])
    assert [item.key for item in storage.list("2025111")] == [item.key for item in storage.list()
                                                              if item.key.startswith("2025111")]
    assert [item.key for item in storage.list("drill")] == ["drill-history.json"]
    assert storage.list("20251118/") == [] and storage.list("nothing") == []
    assert storage.list("") == storage.list()
    assert len(storage.list()) == 7


@pytest.mark.parametrize("prefix", ["../", "../backups/", "20251116/../../", "/etc/"])
def test_a_prefix_escaping_the_folder_is_refused(storage: LocalStorage, prefix: str) -> None:
    storage.put_bytes(KEY, b"x")
    with pytest.raises(UsageError, match="escapes the backup dir"):
        storage.list(prefix)


def test_exists_for_files_and_for_split_backup_folders(storage: LocalStorage) -> None:
    assert not storage.exists(KEY) and not storage.exists(SPLIT)
    storage.put_bytes(KEY, b"x")
    put_split_backup(storage)
    assert storage.exists(KEY) and storage.exists(SPLIT) and storage.exists(SPLIT + "/demo.dump")
    assert storage.exists("20251116"), "a day folder holding backups"
    assert not storage.exists(SPLIT + "/missing.dump") and not storage.exists(SPLIT + "x")
    upload = storage.open_upload("20251118/postgres-all-20251118-000000.split/globals.sql.gz")
    upload.write(b"in progress")
    assert not storage.exists("20251118/postgres-all-20251118-000000.split"), "a hidden partial file is content"
    upload.abort()
    assert not storage.exists("20251118/postgres-all-20251118-000000.split"), "an empty folder is content"
    with pytest.raises(UsageError):
        storage.exists("../x")


def test_delete_several_keys_a_split_backup_folder_and_missing_keys(storage: LocalStorage) -> None:
    storage.put_bytes(KEY, b"x")
    storage.put_bytes(KEY + ".manifest.json", b"{}")
    put_split_backup(storage)
    other = "20251117/postgres-all-20251117-000000.split"
    put_split_backup(storage, other)
    storage.delete(KEY, KEY + ".manifest.json", SPLIT + ".manifest.json", SPLIT, "20251116/never-there.sql.gz")
    assert not (storage.root / SPLIT).exists(), "the split backup's folder is left"
    assert [item.key for item in storage.list()] == [f"{other}.manifest.json"] + sorted(
        f"{other}/{part}" for part in SPLIT_PARTS)
    storage.delete()  # no keys: nothing to do
    storage.delete(other)
    assert [item.key for item in storage.list()] == [f"{other}.manifest.json"]
    with pytest.raises(UsageError):
        storage.delete(other + ".manifest.json", "../escape")
    assert storage.exists(other + ".manifest.json"), "a key was deleted before all were checked"


def test_an_upload_as_a_context_manager_commits_on_exit(storage: LocalStorage) -> None:
    with storage.open_upload(KEY) as upload:
        upload.write(b"first, ")
        upload.write(b"second")
        assert storage.list() == []
    assert storage.get_bytes(KEY) == b"first, second"
    assert files_under(storage.root) == [KEY]


@pytest.mark.parametrize("error", [RuntimeError("the dump died"), KeyboardInterrupt()])
def test_an_upload_as_a_context_manager_aborts_on_an_exception_and_lets_it_through(storage: LocalStorage,
                                                                                  error: BaseException) -> None:
    storage.put_bytes(KEY, b"good backup")
    with pytest.raises(type(error)) as raised, storage.open_upload(KEY) as upload:
        upload.write(b"broken replacement")
        raise error
    assert raised.value is error
    assert storage.get_bytes(KEY) == b"good backup"
    assert files_under(storage.root) == [KEY], "the partial file is left"


FILL_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from pgdr.errors import StorageError
    from pgdr.storage.local import LocalStorage

    if sys.argv[2] != "none":
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    storage = LocalStorage(Path(sys.argv[1]))
    upload = storage.open_upload("20251116/postgres-all-20251116-095831.sql.gz")
    try:
        for _ in range(64):
            upload.write(b"x" * 65536)
        upload.commit()
    except StorageError as error:
        upload.abort()
        print(json.dumps({"message": error.message, "hint": error.hint, "code": int(error.exit_code)}))
        sys.exit(0)
    sys.exit(3)
""")


def fill(root: Path, limit: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", FILL_SCRIPT, str(root), limit], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def test_file_size_limit_is_a_storage_error_naming_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    error = fill(root, str(256 * 1024))
    assert error["code"] == ExitCode.STORAGE
    assert error["message"].startswith("file size limit reached while writing")
    assert "ulimit -f" in error["hint"]
    assert files_under(root) == []


def test_disk_full_is_named_even_where_no_filesystem_can_be_mounted(storage: LocalStorage,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected at the write of the partial file (the real filesystems below need root and mount rights)."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle: Any) -> None:
            self.handle, self.written = handle, 0

        def write(self, data: bytes) -> int:
            if self.written + len(data) > 256 * 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return int(self.handle.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: FullDisk(real_fdopen(*args, **kwargs)))
    with pytest.raises(StorageError) as raised:
        storage.put_bytes(KEY, b"x" * (1024 * 1024))
    monkeypatch.undo()
    assert raised.value.message == f"disk full while writing {storage.root.resolve() / KEY}"
    assert "free space in" in raised.value.hint and "backup.dir" in raised.value.hint
    assert raised.value.exit_code == ExitCode.STORAGE
    assert files_under(storage.root) == []


@pytest.fixture(params=KINDS)
def tiny_filesystem(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A 512 KiB filesystem, a tmpfs or a loop-mounted ext4 image: a real ENOSPC (needs root and mount rights,
    else skipped naming what is lost)."""
    with small_filesystem(request.param, tmp_path / "tiny", 512) as mountpoint:
        yield mountpoint


def test_disk_full_is_a_storage_error_naming_the_fix(tiny_filesystem: Path) -> None:
    root = tiny_filesystem / "backups"
    error = fill(root, "none")
    assert error["code"] == ExitCode.STORAGE
    assert error["message"].startswith("disk full while writing")
    assert f"free space in {root.resolve() / '20251116'}" in error["hint"]
    assert "backup.dir" in error["hint"]
    assert files_under(root) == []


def test_disk_full_through_put_bytes_leaves_nothing(tiny_filesystem: Path) -> None:
    storage = LocalStorage(tiny_filesystem / "backups")
    with pytest.raises(StorageError, match="disk full"):
        storage.put_bytes(KEY, b"x" * (2 * 1024 * 1024))
    assert files_under(storage.root) == []
    storage.put_bytes(KEY, b"small")  # space is back once the partial file is gone
    assert storage.get_bytes(KEY) == b"small"


# --- found by the mutation pass (tests/mutants/mutation_pass.py) --------------------------------------------------

def test_a_backup_dir_that_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "backups").write_bytes(b"a file where the folder should be")
    with pytest.raises(StorageError, match="cannot write"):
        LocalStorage(tmp_path / "backups").open_upload(KEY)


def test_a_commit_that_cannot_rename_is_a_storage_error_and_leaves_nothing(storage: LocalStorage,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    upload = storage.open_upload(KEY)
    upload.write(b"data")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match="disk full"):
        upload.commit()
    monkeypatch.undo()
    assert files_under(storage.root) == []
    assert storage.get_bytes(KEY) is None


def test_a_file_deleted_while_the_folder_is_walked_is_left_out_not_an_error(tmp_path: Path) -> None:
    """`pgdr wal stream` deletes a `.partial` key while `pgdr status` or `check` lists the archive: the listing
    shows what is there, it does not fail on what just went."""

    class RacingStorage(LocalStorage):
        @staticmethod
        def _files_under(folder: Path) -> Iterator[Path]:
            walked = list(LocalStorage._files_under(folder))
            next(path for path in walked if path.name.endswith(".partial.gz")).unlink()  # gone before its stat
            yield from walked

    storage = RacingStorage(tmp_path / "backups")
    storage.put_bytes("wal/000000010000000000000001.gz", b"whole")
    storage.put_bytes("wal/000000010000000000000002.partial.gz", b"growing")
    assert [item.key for item in storage.list("wal/")] == ["wal/000000010000000000000001.gz"]


def test_a_temporary_file_left_by_a_dead_process_with_our_pid_does_not_block_the_key(storage: LocalStorage) -> None:
    """A container restarted after kill -9 mid-upload runs pgdr under the same pid: its upload must not fail
    forever on the dead one's temporary file."""
    first = storage.open_upload("wal/000000010000000000000003.gz")
    first.write(b"half of it")  # then the process dies: nothing aborts or commits it
    storage.put_bytes("wal/000000010000000000000003.gz", b"whole")
    assert storage.get_bytes("wal/000000010000000000000003.gz") == b"whole"
    assert not [path for path in storage.root.rglob(".*") if path.is_file()]


def test_an_interrupt_during_the_commit_leaves_no_temporary_file(storage: LocalStorage,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    upload = storage.open_upload("20251116/postgres-all-20251116-095831.sql.gz")
    upload.write(b"data")

    def interrupted(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upload.commit()
    monkeypatch.undo()
    assert not [path for path in storage.root.rglob("*") if path.is_file()]
