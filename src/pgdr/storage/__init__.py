"""Storage behind one small interface: stream an upload in, stream a download out, list, delete.

An upload is invisible under its key until `commit`; `abort` leaves nothing behind. That is what lets a
failed backup leave nothing that `list` or `restore latest` would pick up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from pgdr.config import Settings
from pgdr.errors import UsageError


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Upload(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Storage(Protocol):
    name: str

    def describe(self) -> str: ...

    def open_upload(self, key: str) -> Upload: ...

    def open_download(self, key: str) -> BinaryIO: ...

    def list(self) -> list[StoredObject]: ...

    def delete(self, key: str) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes | None: ...

    def local_path(self, key: str) -> Path | None: ...


def open_storage(settings: Settings, target: str) -> Storage:
    if target == "local":
        from pgdr.storage.local import LocalStorage

        return LocalStorage(settings.backup.dir)
    if target == "s3":
        from pgdr.storage.s3 import S3Storage

        return S3Storage.from_settings(settings.s3)
    raise UsageError(f"unknown storage target {target!r}", "use 'local' or 's3'")
