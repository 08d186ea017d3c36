"""Storage behind one small interface: stream an upload in, stream a download out, list, check, delete.

An upload is invisible under its key until `commit`; `abort` leaves nothing behind. That is what lets a
failed backup leave nothing that `list` or `restore latest` would pick up. Used as a context manager, an upload
commits on a normal exit and aborts on an exception.

A key names an object (`YYYYMMDD/postgres-all-....sql.gz`) or, for a split backup, a folder of objects
(`YYYYMMDD/postgres-all-....split` holding `<key>/globals.sql.gz` and the rest): `exists` is true and `delete`
removes everything when any object lives under `key + "/"`, on every storage alike.

Storage never talks to the user: what it has to say (retries, a multipart upload it could not abort) goes to the
`report` callback its caller passes in, by default a warning on the "pgdr.storage" logger.
"""

from __future__ import annotations

from pgdr.config import Settings
from pgdr.errors import UsageError
from pgdr.storage.base import Reporter, Storage, StoredObject, Upload, UploadContext, log_warning
from pgdr.storage.local import LocalStorage

__all__ = ["Reporter", "Storage", "StoredObject", "Upload", "UploadContext", "log_warning", "open_storage",
           "same_place"]


def open_storage(settings: Settings, target: str, report: Reporter = log_warning) -> Storage:
    if target == "local":
        return LocalStorage(settings.backup.dir)
    if target == "s3":
        from pgdr.storage.s3 import S3Storage  # boto3 is imported only by commands that use S3

        return S3Storage.from_settings(settings.s3, report=report)
    raise UsageError(f"unknown storage target {target!r}", "use 'local' or 's3'")


def same_place(first: Storage, second: Storage) -> bool:
    """Whether two storages hold the same objects (the same folder, or the same bucket and prefix)."""
    return first.describe() == second.describe()
