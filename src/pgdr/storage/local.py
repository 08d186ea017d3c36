"""Backups in a local folder. Uploads go to a hidden temporary file renamed into place on commit.

Keys are paths relative to the folder; a key that is a folder (a split backup) exists when it holds a listed
file, and is deleted with everything in it. Hidden files (a `.partial-` upload in progress) are never listed.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pgdr.errors import StorageError, UsageError
from pgdr.storage.base import StoredObject, UploadContext

PARTIAL_MARKER = ".partial-"
WRITEBACK_EVERY = 16 * 1024 * 1024


def _disk_error(error: OSError, path: Path) -> StorageError:
    if error.errno == errno.ENOSPC:
        return StorageError(f"disk full while writing {path}", f"free space in {path.parent} or move backup.dir")
    if error.errno == errno.EFBIG:
        return StorageError(f"file size limit reached while writing {path}", "raise the file size limit (ulimit -f)")
    return StorageError(f"cannot write {path}: {error.strerror}", f"check permissions and space of {path.parent}")


class LocalUpload(UploadContext):
    def __init__(self, final_path: Path) -> None:
        self.final_path = final_path
        self.partial_path = final_path.with_name(f".{final_path.name}{PARTIAL_MARKER}{os.getpid()}")
        try:
            final_path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = self._create_partial()
        except OSError as error:
            raise _disk_error(error, final_path) from None
        self._file: BinaryIO | None = os.fdopen(descriptor, "wb")
        self._written = 0
        self._handed_to_disk = 0

    def _create_partial(self) -> int:
        """The temporary file, new. One left under this name was written by a process with this pid that died
        mid-upload (a container restarted after kill -9 gets the same pid): nobody writes it any more."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            return os.open(self.partial_path, flags, 0o600)
        except FileExistsError:
            self.partial_path.unlink(missing_ok=True)
            return os.open(self.partial_path, flags, 0o600)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
            self._written += len(data)
            if self._written - self._handed_to_disk >= WRITEBACK_EVERY:
                self._start_writeback()
        except OSError as error:
            raise _disk_error(error, self.final_path) from None

    def _start_writeback(self) -> None:
        """Start writing the bytes written since last time to the disk, without waiting for it, so the fsync at
        commit has only the last few MiB left to wait for instead of the whole backup. On Linux
        POSIX_FADV_DONTNEED starts writeback of dirty pages and returns (PostgreSQL's pg_flush_data uses it the
        same way); durability still comes from the fsync at commit."""
        assert self._file is not None
        if not hasattr(os, "posix_fadvise"):
            return
        self._file.flush()
        start, length = self._handed_to_disk, self._written - self._handed_to_disk
        self._handed_to_disk = self._written
        try:
            os.posix_fadvise(self._file.fileno(), start, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # advice only

    def commit(self) -> None:
        assert self._file is not None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self.partial_path, self.final_path)
            directory = os.open(self.final_path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            self.abort()
            raise _disk_error(error, self.final_path) from None
        except BaseException:  # Ctrl-C or SIGTERM during the fsync: no temporary file left behind
            self.abort()
            raise

    def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        self.partial_path.unlink(missing_ok=True)


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def path_of(self, key: str) -> Path:
        try:
            path = (self.root / key).resolve()
        except (ValueError, OSError, RuntimeError):  # NUL byte, symlink loop
            raise UsageError(f"not a usable key: {key!r}", "use a key shown by `pgdr list`") from None
        if self.root.resolve() not in path.parents:
            raise UsageError(f"key escapes the backup dir: {key!r}", "use a key shown by `pgdr list`")
        return path

    def open_upload(self, key: str) -> LocalUpload:
        return LocalUpload(self.path_of(key))

    def open_download(self, key: str) -> BinaryIO:
        try:
            return open(self.path_of(key), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise StorageError(f"backup {key} not found in {self.root}", "see `pgdr list` for the keys") from None

    def list(self, prefix: str = "") -> list[StoredObject]:
        """The files whose key starts with prefix, by key; only the folder the prefix points into is walked."""
        folder, _, _ = prefix.rpartition("/")
        if folder:
            self.path_of(folder)  # a prefix escaping the backup dir is refused like a key
        objects = []
        for path in self._files_under(self.root / folder):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                try:
                    info = path.stat()
                except FileNotFoundError:  # deleted since it was walked (the streamer replacing a .partial): gone
                    continue
                objects.append(StoredObject(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC)))
        return sorted(objects, key=lambda item: item.key)

    @staticmethod
    def _files_under(folder: Path) -> Iterator[Path]:
        """The files a listing shows, under folder at any depth: not hidden ones (uploads in progress), nor those in
        hidden folders (a restore's decoded archives)."""
        if not folder.is_dir():
            return
        for path in folder.rglob("*"):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
                yield path

    def exists(self, key: str) -> bool:
        """A file, or a folder (a split backup) holding a file that list() would show."""
        path = self.path_of(key)
        if path.is_dir():
            return next(self._files_under(path), None) is not None
        return path.exists()

    def delete(self, *keys: str) -> None:
        """Each key's file, or its folder with everything in it; a key already gone is no error. Every key is
        checked before the first is deleted."""
        for path in [self.path_of(key) for key in keys]:
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass  # removed meanwhile: gone is what was asked
            except OSError as error:
                raise StorageError(f"cannot delete {path}: {error.strerror}",
                                   f"check the permissions of {path.parent}") from None
            self._remove_empty_day_folder(path.parent)

    def _remove_empty_day_folder(self, folder: Path) -> None:
        """A day folder (YYYYMMDD) goes with its last backup."""
        if folder != self.root.resolve() and folder.name.isdigit():
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: other backups of that day are kept

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.open_upload(key) as upload:
            upload.write(data)

    def get_bytes(self, key: str) -> bytes | None:
        path = self.path_of(key)
        return path.read_bytes() if path.exists() else None

    def local_path(self, key: str) -> Path | None:
        return self.path_of(key)
