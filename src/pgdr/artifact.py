"""Backup names and manifests.

A backup key is ``YYYYMMDD/postgres-all-YYYYMMDD-HHMMSS.sql[.gz|.zst]`` (UTC), relative to the backup dir or the
S3 prefix: the layout of the old shell pipeline, kept so its backups stay restorable. Safety backups taken by
``restore --clean`` live under ``safety/`` with the same name, so ``restore latest`` never picks them.
A manifest (``<key>.manifest.json``) is written after the backup is complete: no manifest, not a pgdr backup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field, ValidationError

from pgdr.errors import IntegrityError, UsageError

MANIFEST_SUFFIX = ".manifest.json"
SAFETY_PREFIX = "safety/"
EXTENSIONS = {"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}
SPLIT_EXTENSION = ".split"  # a folder-like prefix: <key>/globals.sql.gz and one pg_dump -Fc file per database
SPLIT_COMPRESSION = "custom"
PHYSICAL_EXTENSION = ".base.tar"  # + .gz/.zst: a pg_basebackup tar of the data directory (formats/physical.py)
AGE_EXTENSION = ".age"
KEY_PATTERN = re.compile(
    r"^(?P<safety>safety/)?(?P<day>\d{8})/postgres-all-(?P<stamp>\d{8}-\d{6})"
    r"(?P<extension>\.sql(?:\.gz|\.zst)?|\.split|\.base\.tar(?:\.gz|\.zst)?)(?P<age>\.age)?\Z"
)


@dataclass(frozen=True, order=True)
class BackupKey:
    """A parsed backup key; orders by creation time."""

    created: datetime
    key: str
    compression: str
    safety: bool = False
    encrypted: bool = False
    format: str = "plain"  # the extension says: "split" for <key>.split/, "physical" for .base.tar[.gz|.zst],
    # "plain" for one .sql[.gz|.zst] file

    def __str__(self) -> str:
        return self.key

    def object_key(self, name: str) -> str:
        """Key of one object of a split backup, e.g. <key>/globals.sql.gz."""
        return f"{self.key}/{name}"

    @property
    def manifest_key(self) -> str:
        return self.key + MANIFEST_SUFFIX


def compression_of(extension: str) -> str:
    """The compression a key's extension names; a split backup's parts each name their own (SPLIT_COMPRESSION)."""
    if extension.startswith(PHYSICAL_EXTENSION):
        extension = ".sql" + extension.removeprefix(PHYSICAL_EXTENSION)
    return {extension: name for name, extension in EXTENSIONS.items()}.get(extension, SPLIT_COMPRESSION)


def format_of(extension: str) -> str:
    if extension.startswith(PHYSICAL_EXTENSION):
        return "physical"
    return "split" if extension == SPLIT_EXTENSION else "plain"


def parse_key(key: str) -> BackupKey:
    """Parse a backup key, refusing anything that is not exactly our layout (no '..', no absolute paths)."""
    match = KEY_PATTERN.match(key)
    if not match:
        raise UsageError(
            f"not a backup key: {key!r}",
            "keys look like 20251116/postgres-all-20251116-095831.sql.gz; see `pgdr list`",
        )
    try:
        created = datetime.strptime(match["stamp"], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(f"not a backup key: {key!r} (invalid date)", "see `pgdr list`") from None
    if match["day"] != match["stamp"][:8]:
        raise UsageError(f"not a backup key: {key!r} (folder and name dates differ)", "see `pgdr list`")
    return BackupKey(created, key, compression_of(match["extension"]), bool(match["safety"]), bool(match["age"]),
                     format_of(match["extension"]))


def is_backup_key(key: str) -> bool:
    try:
        parse_key(key)
    except UsageError:
        return False
    return True


def make_key(created: datetime, compression: str, safety: bool = False, encrypted: bool = False) -> BackupKey:
    """The key of a plain backup: one file, its extension naming its compression and encryption."""
    return parse_key(_stem(created, safety) + EXTENSIONS[compression] + (AGE_EXTENSION if encrypted else ""))


def make_split_key(created: datetime, safety: bool = False) -> BackupKey:
    """The key of a split backup: a folder-like prefix; its parts' names carry their own codecs."""
    return parse_key(_stem(created, safety) + SPLIT_EXTENSION)


def make_physical_key(created: datetime, compression: str, encrypted: bool = False) -> BackupKey:
    """The key of a physical base backup: one tar of the data directory, compressed and encrypted like a plain one."""
    suffix = EXTENSIONS[compression].removeprefix(".sql")
    return parse_key(_stem(created, False) + PHYSICAL_EXTENSION + suffix + (AGE_EXTENSION if encrypted else ""))


def _stem(created: datetime, safety: bool) -> str:
    created = created.astimezone(UTC).replace(microsecond=0)
    stamp = f"{created.year:04d}{created:%m%d-%H%M%S}"  # strftime's %Y does not pad years before 1000
    return f"{SAFETY_PREFIX if safety else ''}{stamp[:8]}/postgres-all-{stamp}"


class TableCount(BaseModel):
    schema_name: str = Field(alias="schema")
    table: str
    rows: int

    model_config = {"populate_by_name": True}


class DatabaseContents(BaseModel):
    name: str
    tables: list[TableCount] = Field(default_factory=list)

    def counts(self) -> dict[tuple[str, str], int]:
        return {(table.schema_name, table.table): table.rows for table in self.tables}


class Section(BaseModel):
    """Where one database's part of a plain dump starts (byte offset in the uncompressed SQL); the globals are
    everything before the first section. Parts after the globals are independent and restore concurrently.

    compressed_offset: where, in the stored file, the gzip member (zstd frame) that starts with this section begins,
    so a restore reads and decompresses this part alone. None in older manifests and encrypted backups: such a part
    is read by decompressing the file from its start."""

    database: str
    offset: int
    compressed_offset: int | None = None


class EmbeddedSecret(BaseModel):
    """A secret other than a role password that the dump holds in plain text (pg_dumpall writes them as they are):
    a user mapping's or server's password option, a subscription's connection string with a password."""

    database: str
    kind: str
    name: str


class ExtensionNeed(BaseModel):
    """An extension one database of the backup has installed: the target must offer it (version for the record;
    pg_dump's CREATE EXTENSION installs the target's default version)."""

    database: str
    name: str
    version: str = ""


class TablespaceNeed(BaseModel):
    """A tablespace the globals create: its directory must exist on the target's server."""

    name: str
    location: str


class Requirements(BaseModel):
    """What the target server must offer for the backup to restore, checked before anything is touched."""

    extensions: list[ExtensionNeed] = Field(default_factory=list)
    icu: list[str] = Field(default_factory=list)  # what uses ICU: "database app", "collation app.public.german"
    tablespaces: list[TablespaceNeed] = Field(default_factory=list)


class RoleSetting(BaseModel):
    """`ALTER ROLE role IN DATABASE ... SET setting`: setting as pg_db_role_setting holds it (name=value)."""

    role: str
    setting: str


class DatabaseGrant(BaseModel):
    """One privilege on a database (aclexplode): grantee "" is PUBLIC."""

    grantee: str
    privilege: str  # CONNECT, CREATE, TEMPORARY
    grantable: bool = False


class DatabaseProperties(BaseModel):
    """What pg_dumpall never writes for `postgres` and `template1` (it connects to them instead of creating them):
    their owner, privileges, comment, settings and the role settings inside them. pgdr reads them and restores
    them after."""

    name: str
    comment: str | None = None
    settings: list[str] = Field(default_factory=list)  # name=value, as pg_db_role_setting holds them
    role_settings: list[RoleSetting] = Field(default_factory=list)
    owner: str = ""  # "" in older manifests: not recorded
    grants: list[DatabaseGrant] | None = None  # None: the default privileges (or not recorded)


class LeftOut(BaseModel):
    """Something of the cluster the backup does not hold, and why (e.g. a database with datallowconn = false,
    which pg_dumpall skips)."""

    name: str
    reason: str


class StoredPart(BaseModel):
    """One object of a split backup: the globals script or one database's pg_dump -Fc archive."""

    name: str
    database: str | None = None  # None: the globals (roles, tablespaces)
    size: int
    sha256: str


class RelationName(BaseModel):
    """A table's file as the catalog named it: how `pgdr wal timeline` names a file the WAL changed (or dropped)."""

    database_oid: int
    database: str
    tablespace: int
    relfilenode: int
    table_oid: int
    schema_name: str
    name: str
    kind: str = "r"  # pg_class.relkind: r table, m materialized view, t TOAST table


class PhysicalFacts(BaseModel):
    """Where a physical base backup sits in the WAL: recovery from it needs the WAL from start_lsn on, and it is
    consistent once stop_lsn is replayed (times as the server wrote them in backup_label and the stop record)."""

    timeline: int
    start_lsn: str
    stop_lsn: str
    start_time: datetime
    stop_time: datetime
    system_identifier: str = ""
    wal_included: bool = False  # pg_basebackup -X fetch: restorable to stop_lsn without the archive
    incremental_of: str | None = None  # the key of the base backup this one is an incremental of (PostgreSQL 17+)
    backup_manifest_sha256: str | None = None  # of the copy of its backup_manifest kept beside it
    relations: list[RelationName] = Field(default_factory=list)  # the tables' files when it started (wal timeline)


class BackupFacts(BaseModel):
    """What every backup's manifest says whatever its format, gathered by the backup action before the format
    writes: the key, the server and tools, what pg_dumpall leaves out, what a target must offer."""

    format_version: int = 1
    key: str
    compression: str
    server_version: str
    pg_dumpall_version: str
    pgdr_version: str
    started_at: datetime
    encryption: str = "none"
    requirements: Requirements | None = None  # None: an older manifest (the lexer reads them from the script)
    database_properties: list[DatabaseProperties] = Field(default_factory=list)
    left_out: list[LeftOut] = Field(default_factory=list)


class Manifest(BackupFacts):
    """What a finished backup holds; written last, beside the backup."""

    format: str = "plain"
    size: int
    sha256: str
    uncompressed_size: int
    finished_at: datetime
    seconds: dict[str, float] = Field(default_factory=dict)
    databases: list[DatabaseContents] = Field(default_factory=list)
    contains_passwords: bool = False
    parts: list[StoredPart] = Field(default_factory=list)  # split format only
    sections: list[Section] = Field(default_factory=list)  # plain format; none in older manifests
    # how the sections were proven: "restrict" (psql-exact lexer and pg_dump's \restrict keys). Sections of older
    # manifests were found by a line scanner that hostile names could fool: they are never used.
    sections_proof: str = ""
    embedded_secrets: list[EmbeddedSecret] = Field(default_factory=list)
    physical: PhysicalFacts | None = None  # physical format only

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, key: str) -> Manifest:
        try:
            return cls.model_validate_json(data)
        except ValidationError as error:
            raise IntegrityError(
                f"manifest of {key} is unreadable: {error.errors()[0]['msg']}",
                "the manifest is damaged; restore another backup (see `pgdr list`)",
            ) from None

    def database(self, name: str) -> DatabaseContents | None:
        return next((database for database in self.databases if database.name == name), None)
