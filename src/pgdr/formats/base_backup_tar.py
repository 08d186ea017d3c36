"""The tar stream of a physical base backup: read as it passes (what its manifest needs), and extracted safely.

pg_basebackup writes one ustar archive of the data directory. While a backup streams, TarScanner keeps only what
the manifest records: `backup_label` whole and the end of `backup_manifest` (its WAL range). Memory stays flat
whatever the cluster's size.

A stored backup is hostile input: its bytes passed through storage anyone with the bucket's keys can write, and
the manifest next to it can be forged along with it. Extraction therefore trusts nothing in the archive:
only regular files and directories are created, under relative names without `..`; links, devices, FIFOs and
names that appear twice are refused; every file is created new (O_EXCL, O_NOFOLLOW) with mode 0600 in 0700
folders, owned by the server's OS user. GNU tar's and Python's `data` filter make the same refusals.
"""

from __future__ import annotations

import errno
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from pgdr.errors import IntegrityError, RestoreFailed
from pgdr.run import RunAs

BLOCK_SIZE = 512
LABEL = "backup_label"
MANIFEST = "backup_manifest"
LABEL_LIMIT = 64 * 1024  # a backup_label is a few hundred bytes
MANIFEST_TAIL = 64 * 1024  # the WAL ranges and the checksum close the manifest
HINT_HOSTILE = "the backup was altered after it was written: recover from another one (see `pgdr list`)"
REQUIRED = ("PG_VERSION", "global/pg_control", LABEL)


class TarScanner:
    """Follows a tar stream chunk by chunk: member headers are parsed, member data skipped except the label's
    and the manifest's end. `ended` once the end-of-archive block was seen."""

    def __init__(self, manifest_sink: Callable[[bytes], object] | None = None) -> None:
        """manifest_sink: sees backup_manifest whole, piece by piece (kept for the next incremental)."""
        self.manifest_sink = manifest_sink
        self.label = bytearray()
        self.manifest_tail = bytearray()
        self.members = 0
        self.ended = False
        self._header = bytearray()
        self._data_left = 0
        self._padding_left = 0
        self._member = ""

    def feed(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        while view and not self.ended:
            if self._data_left:
                view = self._take_data(view)
            elif self._padding_left:
                taken = min(self._padding_left, len(view))
                self._padding_left -= taken
                view = view[taken:]
            else:
                view = self._take_header(view)

    def _take_data(self, view: memoryview) -> memoryview:
        taken = min(self._data_left, len(view))
        data = view[:taken]
        if self._member == LABEL and len(self.label) + taken <= LABEL_LIMIT:
            self.label += data
        elif self._member == MANIFEST:
            self.manifest_tail += data
            del self.manifest_tail[:-MANIFEST_TAIL]
            if self.manifest_sink is not None:
                self.manifest_sink(bytes(data))
        self._data_left -= taken
        return view[taken:]

    def _take_header(self, view: memoryview) -> memoryview:
        taken = min(BLOCK_SIZE - len(self._header), len(view))
        self._header += view[:taken]
        if len(self._header) == BLOCK_SIZE:
            self._start_member(bytes(self._header))
            self._header.clear()
        return view[taken:]

    def _start_member(self, header: bytes) -> None:
        if header == bytes(BLOCK_SIZE):
            self.ended = True
            return
        size = member_size(header[124:136])
        self.members += 1
        self._member = member_name(header) if header[156:157] in (b"0", b"\0") else ""
        self._data_left = size
        self._padding_left = -size % BLOCK_SIZE


def member_size(field: bytes) -> int:
    """A ustar size field: octal digits, or base-256 (the high bit set) for members of 8 GiB and more."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b"\0 ")
    return int(digits, 8) if digits else 0


def member_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if header[257:262] == b"ustar" else ""
    full = f"{prefix}/{name}" if prefix else name
    return full.removeprefix("./")


def label_fields(label: bytes) -> dict[str, str]:
    """backup_label's `KEY: value` lines (START WAL LOCATION, START TIMELINE, ...)."""
    fields = {}
    for line in label.decode("utf-8", "replace").splitlines():
        key, separator, value = line.partition(": ")
        if separator:
            fields[key.strip()] = value.strip()
    return fields


def manifest_end_lsn(tail: bytes) -> str | None:
    """The last WAL range's End-LSN: where the backup is consistent."""
    found = re.findall(rb'"End-LSN"\s*:\s*"([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})"', tail)
    return found[-1].decode() if found else None


class ChunkReader:
    """A file-like reader over an iterator of chunks, for tarfile's stream mode (which reads 10 KiB at a time:
    each read slices the current chunk instead of copying what is left of it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            rest = [self._buffer[self._offset:], *self._chunks]
            self._buffer, self._offset = b"", 0
            return b"".join(rest)
        parts, wanted = [], size
        while wanted:
            if self._offset == len(self._buffer):
                self._buffer, self._offset = next((chunk for chunk in self._chunks if chunk), b""), 0
                if not self._buffer:  # the end (empty chunks, which a decompressor may yield, are skipped)
                    break
            part = self._buffer[self._offset:self._offset + wanted]
            self._offset += len(part)
            wanted -= len(part)
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def extract(chunks: Iterator[bytes], folder: Path, run_as: RunAs | None, label: str) -> int:
    """Extract the archive into the empty `folder`; returns the number of files. Hostile members are refused
    (IntegrityError) before anything is written for them; a full disk is a RestoreFailed. The caller removes
    `folder` on failure."""
    files = 0
    try:
        with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                relative = safe_name(member, label)
                if member.isdir():
                    make_folders(folder, relative.parts, run_as)
                else:
                    make_folders(folder, relative.parts[:-1], run_as)
                    write_file(folder / relative, archive.extractfile(member), run_as)
                    files += 1
    except tarfile.TarError as error:
        raise IntegrityError(f"{label} is not a readable tar archive: {error}", HINT_HOSTILE) from None
    except OSError as error:
        if error.errno == errno.EEXIST:
            raise IntegrityError(f"{label} holds {error.filename} twice", HINT_HOSTILE) from None
        raise RestoreFailed(f"extracting {label} into {folder} failed: {error.strerror}",
                            f"free space in {folder.parent} (the base backup needs its uncompressed size), "
                            "then run the recovery again") from None
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise IntegrityError(f"{label} is not a PostgreSQL base backup: {', '.join(missing)} missing", HINT_HOSTILE)
    return files


def safe_name(member: tarfile.TarInfo, label: str) -> PurePosixPath:
    """The member's relative path, or IntegrityError: only files and folders, named inside the archive."""
    kind = "a regular file" if member.isreg() else "a folder" if member.isdir() else ""
    if not kind:
        what = "a link" if member.issym() or member.islnk() else "a device or FIFO"
        raise IntegrityError(f"{label} holds {what} ({member.name!r}); a base backup holds only files and folders",
                             HINT_HOSTILE)
    path = PurePosixPath(member.name.removeprefix("./"))
    if path.is_absolute() or ".." in path.parts or not path.parts or "\0" in member.name or path == PurePosixPath("."):
        raise IntegrityError(f"{label} names a path outside the data directory ({member.name!r})", HINT_HOSTILE)
    return path


def make_folders(folder: Path, parts: tuple[str, ...], run_as: RunAs | None) -> None:
    current = folder
    for part in parts:
        current = current / part
        try:
            current.mkdir(mode=0o700)
        except FileExistsError:
            if current.is_symlink() or not current.is_dir():
                raise IntegrityError(f"{current.name} is both a file and a folder in the base backup",
                                     HINT_HOSTILE) from None
            continue
        if run_as is not None:
            os.chown(current, run_as.uid, run_as.gid)


def write_file(path: Path, source: object, run_as: RunAs | None) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "wb") as target:
        if run_as is not None:
            os.fchown(descriptor, run_as.uid, run_as.gid)
        while source is not None and (data := source.read(1024 * 1024)):  # type: ignore[attr-defined]
            target.write(data)
