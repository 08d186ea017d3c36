"""Every layout a split backup's parts have had restores object for object, judged like test_split_fidelity.

pgdr now stores each database's archive as pg_dump writes it uncompressed, compressed by pgdr with the backup's
codec (`db-001.dump.gz`, then `.age` when encrypted). Split backups written before hold pg_dump's own zlib archive
(`pg_dump --format=custom --compress=1`) as `db-001.dump`, or `db-001.dump.age` encrypted. One source cluster is
backed up once by pgdr; each layout is made from that backup in the target project the way the pgdr of that layout
wrote it (the old archives by the real pg_dump with the old argv, the encryption by age), its manifest's names,
sizes and digests set accordingly; then `pgdr restore latest` into a fresh cluster must give the source back.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from collections.abc import Iterator

import pytest

from end_to_end.e2e_helpers import real_bin_dir
from fidelity.fidelity_helpers import (
    SPLIT,
    Source,
    assert_same_cluster,
    backed_up_fixture,
    cluster,
    copy_backup,
    manifest_of,
)
from harness import Project, needs_pyrage
from security.security_helpers import superuser_environment


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    with backed_up_fixture("pgdr-fidelity-layouts-", SPLIT) as backed_up:
        yield backed_up


@pytest.fixture(scope="module")
def age_keys() -> tuple[str, str]:
    import pyrage  # only tests marked needs_pyrage get here

    identity = pyrage.x25519.Identity.generate()
    return str(identity.to_public()), str(identity)


def old_archive(source: Project, database: str) -> bytes:
    """What split backups before this layout stored: pg_dump's archive with its own zlib (their pg_dump argv, the
    snapshot aside: nothing writes to the source after its backup)."""
    result = subprocess.run([str(real_bin_dir() / "pg_dump"), "--format=custom", "--compress=1", "--no-password",
                             "--quote-all-identifiers"], capture_output=True, check=False, timeout=300,
                            env=superuser_environment(source, database))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.startswith(b"PGDMP")
    return result.stdout


def rewrite(source: Project, target: Project, key: str, old: bool, recipient: str | None) -> list[str]:
    """The copied backup in `target` rewritten part by part into a layout; its manifest follows. The part names."""
    manifest_path = target.backups / (key + ".manifest.json")
    manifest = manifest_of(target, key)
    for part in manifest["parts"]:
        path = target.backups / key / part["name"]
        data, name = path.read_bytes(), part["name"]
        if part["database"] is not None:
            assert name.endswith(".dump.gz"), name  # what pgdr writes now for a gzip backup
            assert gzip.decompress(data).startswith(b"PGDMP"), "not an uncompressed archive inside pgdr's gzip"
            if old:
                data, name = old_archive(source, part["database"]), name.removesuffix(".gz")
        if recipient is not None:
            import pyrage

            data, name = pyrage.encrypt(data, [pyrage.x25519.Recipient.from_str(recipient)]), name + ".age"
        path.unlink()
        (target.backups / key / name).write_bytes(data)
        part.update(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest["size"] = sum(part["size"] for part in manifest["parts"])
    manifest["sha256"] = hashlib.sha256("".join(f"{part['name']}:{part['sha256']}\n"
                                                for part in manifest["parts"]).encode()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return [part["name"] for part in manifest["parts"]]


def restore_layout(source: Source, name: str, old: bool, recipient: str | None = None,
                   identity: str | None = None) -> list[str]:
    with cluster(source.parent, name, *source.backup_options) as target:
        copy_backup(source.project, target, source.key)
        names = rewrite(source.project, target, source.key, old, recipient)
        target.ok("restore", "latest", env={"PGDR_AGE_IDENTITY": identity} if identity else None)
        assert_same_cluster(source.expected, target, f"a fresh cluster restored from the {name} layout")
        assert not list(target.backups.glob(".pgdr-*")), "decoded archives were left behind"
    return names


def test_the_old_layout_with_pg_dumps_zlib_restores_like_the_source(source: Source) -> None:
    names = restore_layout(source, "old-layout", old=True)
    assert names[0] == "globals.sql.gz" and all(name.endswith(".dump") for name in names[1:]), names


@needs_pyrage
def test_the_old_encrypted_layout_restores_like_the_source(source: Source, age_keys: tuple[str, str]) -> None:
    names = restore_layout(source, "old-encrypted", old=True, recipient=age_keys[0], identity=age_keys[1])
    assert names[0] == "globals.sql.gz.age" and all(name.endswith(".dump.age") for name in names[1:]), names


@needs_pyrage
def test_the_new_encrypted_layout_restores_like_the_source(source: Source, age_keys: tuple[str, str]) -> None:
    names = restore_layout(source, "new-encrypted", old=False, recipient=age_keys[0], identity=age_keys[1])
    assert all(name.endswith(".dump.gz.age") for name in names[1:]), names
