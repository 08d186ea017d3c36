"""The storage protocol and what its implementations share (see pgdr.storage)."""


from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, Protocol, Self

Reporter = Callable[[str], None]
LOGGER = logging.getLogger("pgdr.storage")


def log_warning(message: str) -> None:
    """The default reporter: a warning on the "pgdr.storage" logger."""
    LOGGER.warning("%s", message)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Upload(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Store data; never keep it after returning (the caller reuses its buffer)."""

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None: ...


class UploadContext(ABC):
    """What makes an upload a context manager: a normal exit commits, an exception aborts and goes on (the way
    streams.handoff.Handoff closes or aborts)."""

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is None:
            self.commit()
        else:
            self.abort()


class Storage(Protocol):
    name: str

    def describe(self) -> str: ...

    def open_upload(self, key: str) -> Upload: ...

    def open_download(self, key: str) -> BinaryIO: ...

    def list(self, prefix: str = "") -> list[StoredObject]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, *keys: str) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes | None: ...
