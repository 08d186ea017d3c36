"""Optional encryption at rest with age (pyrage), streaming both ways.

pyrage's encrypt_io/decrypt_io pull from a reader and push to a writer; pgdr's pipeline pushes chunks. A pipe
and one worker thread join the two, so memory stays flat and encryption overlaps with dumping and compressing.
The recipient (public key) is in the config; the identity (private key) is a secret, needed only to restore.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from pgdr.errors import BackupFailed, ConfigError, IntegrityError


def _pyrage():  # type: ignore[no-untyped-def]
    try:
        import pyrage  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("backup.encryption = \"age\" needs pyrage", "pip install pyrage") from None
    return pyrage


def parse_recipients(recipients: list[str]) -> list[object]:
    pyrage = _pyrage()
    parsed = []
    for index, text in enumerate(recipients):
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(text.strip()))
        except Exception:  # noqa: BLE001 - pyrage raises its own error types
            raise ConfigError(f"[backup].age_recipients[{index}]: not an age public key (age1...)",
                              "generate a key pair with age-keygen and put the public key here") from None
    return parsed


def parse_identity(text: str, secret_name: str) -> object:
    pyrage = _pyrage()
    for line in text.strip().splitlines():
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                return pyrage.x25519.Identity.from_str(line.strip())
            except Exception:  # noqa: BLE001
                break
    raise ConfigError(f"secret {secret_name} is not an age identity (AGE-SECRET-KEY-...)",
                      f"store the private key from age-keygen as {secret_name}")


class _SinkWriter(io.RawIOBase):
    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sink(bytes(data))
        return len(data)


class StreamEncryptor:
    """write() plaintext; the worker thread calls sink() with ciphertext. close() finishes and re-raises errors."""

    def __init__(self, recipients: list[object], sink: Callable[[bytes], None]) -> None:
        read_end, write_end = os.pipe()
        self._input = os.fdopen(write_end, "wb")
        self._reader = os.fdopen(read_end, "rb")
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(recipients, sink), name="age-encrypt", daemon=True)
        self._thread.start()

    def _run(self, recipients: list[object], sink: Callable[[bytes], None]) -> None:
        try:
            _pyrage().encrypt_io(self._reader, _SinkWriter(sink), recipients)
        except BaseException as error:  # noqa: BLE001 - handed to the caller in close()
            self._error = error
        finally:
            self._reader.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._input.write(data)
        except BrokenPipeError:
            self.close()  # re-raises the worker's error
            raise BackupFailed("age encryption stopped before the end of the backup",
                                   "run `pgdr backup` again; check the disk and the recipients") from None

    def close(self) -> None:
        try:
            self._input.close()
        except BrokenPipeError:
            pass
        self._thread.join()
        if self._error is not None:
            raise self._error


class DecryptingReader:
    """A read(n) stream of plaintext from an age-encrypted stream, decrypted by a worker thread."""

    def __init__(self, source: BinaryIO, identity: object) -> None:
        read_end, write_end = os.pipe()
        self._output = os.fdopen(read_end, "rb")
        self._writer = os.fdopen(write_end, "wb")
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(source, identity), name="age-decrypt", daemon=True)
        self._thread.start()

    def _run(self, source: BinaryIO, identity: object) -> None:
        try:
            _pyrage().decrypt_io(source, self._writer, [identity])
        except BaseException as error:  # noqa: BLE001
            self._error = error
        finally:
            try:
                self._writer.close()
            except BrokenPipeError:
                pass

    def read(self, size: int = -1) -> bytes:
        data = self._output.read(size)
        if not data:
            self._ended()
        return data

    def readinto(self, buffer: memoryview) -> int:
        count = self._output.readinto(buffer)
        if not count:
            self._ended()
        return count

    def _ended(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise IntegrityError(f"age decryption failed: {self._error}",
                                 "the backup is corrupt or was encrypted for another key") from None

    def close(self) -> None:
        self._output.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
