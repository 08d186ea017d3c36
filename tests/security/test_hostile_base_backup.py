"""A stored base backup is hostile input: whoever can write the bucket can forge the tar and its manifest together.
pgdr.formats.base_backup_tar.extract must create nothing outside the new data directory, no link, no device, no
FIFO, and never write one file twice. Python's `data` extraction filter (PEP 706) is the reference: every case
below it refuses or rewrites, and pgdr refuses (stricter: every link, where the filter allows links inside)."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from pgdr.errors import IntegrityError
from pgdr.formats.base_backup_tar import extract

BASE = {"PG_VERSION": b"15\n", "global/pg_control": b"\0" * 64, "backup_label": b"START TIMELINE: 1\n"}


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo,
                                                                                                   bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data), link, 0o644
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes], base: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as writer:
        for name, data in (BASE.items() if base else []):
            writer.addfile(member(name, data=data)[0], io.BytesIO(data))
        for info, data in members:
            writer.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def chunks(data: bytes, size: int = 700):
    return iter([data[start:start + size] for start in range(0, len(data), size)])


def reference_objects(data: bytes, folder: Path) -> bool:
    """The data filter refuses the archive, or rewrites a member (an absolute name loses its leading slash)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as reader:
            for info in reader.getmembers():
                if tarfile.data_filter(info, str(folder)).name != info.name:
                    return True
    except tarfile.FilterError:
        return True
    return False


@pytest.fixture
def around(tmp_path: Path) -> tuple[Path, Path]:
    """The data directory being made, inside a parent that must stay as it was."""
    folder = tmp_path / "parent" / "pgdata"
    folder.mkdir(parents=True, mode=0o700)
    return folder, tmp_path


HOSTILE = {
    "an absolute path": member("/tmp/pgdr-hostile-absolute", data=b"owned"),
    "a path out through ..": member("../escaped", data=b"owned"),
    "a path out through a folder's ..": member("base/../../escaped", data=b"owned"),
    "a symlink out": member("pg_wal", tarfile.SYMTYPE, link="/etc"),
    "a symlink out by ..": member("pg_tblspc/16400", tarfile.SYMTYPE, link="../../escaped"),
    "a hard link to a file outside": member("base/1/1", tarfile.LNKTYPE, link="../outside"),
    "a character device": member("base/dev", tarfile.CHRTYPE),
    "a block device": member("base/disk", tarfile.BLKTYPE),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_member_is_refused_and_nothing_lands_outside(case, around):
    folder, root = around
    data = archive(HOSTILE[case])
    before = sorted(path for path in root.rglob("*") if not path.is_relative_to(folder))
    with pytest.raises(IntegrityError) as refused:
        extract(chunks(data), folder, None, "backup X")
    assert "altered" in refused.value.hint
    assert sorted(path for path in root.rglob("*") if not path.is_relative_to(folder)) == before
    assert not Path("/tmp/pgdr-hostile-absolute").exists()
    assert not any(path.is_symlink() or not (path.is_file() or path.is_dir()) for path in folder.rglob("*"))


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_the_reference_filter_refuses_each_hostile_case_too(case, around):
    """The cases above are the ones PEP 706's data filter exists for: the reference agrees they are hostile."""
    folder, _ = around
    assert reference_objects(archive(HOSTILE[case]), folder)


def test_a_fifo_is_refused(around):
    folder, _ = around
    with pytest.raises(IntegrityError, match="device or FIFO"):
        extract(chunks(archive(member("base/pipe", tarfile.FIFOTYPE))), folder, None, "backup X")


def test_a_name_twice_is_refused_not_overwritten(around):
    folder, _ = around
    data = archive(member("postgresql.auto.conf", data=b"first\n"), member("postgresql.auto.conf", data=b"second\n"))
    with pytest.raises(IntegrityError, match="twice"):
        extract(chunks(data), folder, None, "backup X")
    assert (folder / "postgresql.auto.conf").read_bytes() == b"first\n"


def test_a_file_where_a_folder_must_be_is_refused(around):
    folder, _ = around
    data = archive(member("base", data=b"a file"), member("base/1/1259", data=b"x"))
    with pytest.raises(IntegrityError):
        extract(chunks(data), folder, None, "backup X")


def test_an_archive_without_the_cluster_files_is_not_a_base_backup(around):
    folder, _ = around
    with pytest.raises(IntegrityError, match="PG_VERSION"):
        extract(chunks(archive(member("base/1/1259", data=b"x"), base=False)), folder, None, "backup X")


def test_garbage_is_not_a_tar(around):
    folder, _ = around
    with pytest.raises(IntegrityError, match="not a readable tar"):
        extract(chunks(b"\x89PNG" * 1000), folder, None, "backup X")


def test_a_benign_archive_is_extracted_private_and_exact(around):
    folder, _ = around
    files = {**BASE, "base/1/1259": b"\1" * 9000, "pg_wal/000000010000000000000002": b"\2" * 5000}
    data = archive(member("base", tarfile.DIRTYPE), *(member(name, data=body) for name, body in files.items()
                                                      if name not in BASE))
    assert extract(chunks(data), folder, None, "backup X") == len(files)
    for name, body in files.items():
        path = folder / name
        assert path.read_bytes() == body
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o700 for path in folder.rglob("*") if path.is_dir())
