"""One object written to every backup target at once, all or nothing.

`commit` commits every target's upload, and if one fails removes the ones already committed; `abort` leaves
nothing anywhere. As a context manager (storage.base.UploadContext): a normal exit commits, an exception aborts.
Bytes only: what they are (compressed, encrypted) is decided above, in pgdr.streams.
"""

from __future__ import annotations

from pgdr.storage.base import Storage, Upload, UploadContext


class FanoutUpload(UploadContext):
    def __init__(self, storages: list[Storage], key: str) -> None:
        self.key = key
        self.storages = storages
        self._uploads: list[Upload] = []
        try:
            for storage in storages:
                self._uploads.append(storage.open_upload(key))
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        for upload in self._uploads:
            upload.write(data)

    def commit(self) -> None:
        committed: list[Storage] = []
        try:
            for storage, upload in zip(self.storages, self._uploads, strict=True):
                upload.commit()
                committed.append(storage)
        except BaseException:
            for storage in committed:
                storage.delete(self.key)
            raise

    def abort(self) -> None:
        for upload in self._uploads:
            upload.abort()
