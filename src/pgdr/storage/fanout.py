"""One object written to every backup target at once: optional age encryption, sha256 and size on the way.

All or nothing: `commit` commits every target's upload, and if one fails removes the ones already committed;
`abort` leaves nothing anywhere.
"""

from __future__ import annotations

import hashlib

from pgdr.encryption import StreamEncryptor
from pgdr.storage import Storage, Upload


class FanoutWriter:
    def __init__(self, storages: list[Storage], key: str, age_recipients: list[object] | None = None) -> None:
        self.key = key
        self.storages = storages
        self.size = 0
        self._digest = hashlib.sha256()
        self._uploads: list[Upload] = []
        self._encryptor: StreamEncryptor | None = None
        try:
            self._uploads = [storage.open_upload(key) for storage in storages]
        except BaseException:
            self.abort()
            raise
        if age_recipients:
            self._encryptor = StreamEncryptor(age_recipients, self._emit)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self._digest.update(data)
        self.size += len(data)
        for upload in self._uploads:
            upload.write(data)

    def write(self, data: bytes) -> None:
        if self._encryptor is not None:
            self._encryptor.write(data)
        else:
            self._emit(data)

    def commit(self) -> None:
        if self._encryptor is not None:
            encryptor, self._encryptor = self._encryptor, None
            encryptor.close()
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
        if self._encryptor is not None:
            encryptor, self._encryptor = self._encryptor, None
            try:
                encryptor.close()
            except Exception:  # noqa: BLE001 - aborting anyway; the original error is what matters
                pass
        for upload in self._uploads:
            upload.abort()
