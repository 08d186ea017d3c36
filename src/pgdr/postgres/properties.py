"""What pg_dumpall leaves out of a cluster, read at backup time and put back after a restore.

pg_dumpall connects to `postgres` and `template1` instead of creating them, so their owner, privileges, comment,
settings and the role settings inside them (`ALTER ROLE app IN DATABASE postgres SET ...`) are never written; and
it skips every database that refuses connections (datallowconn = false). pgdr records the first in the manifest
and applies them after the data is restored (so a setting such as default_transaction_read_only cannot get in the
restore's way), and names the second as left out, at backup time and in the manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgdr.artifact import DatabaseGrant, DatabaseProperties, LeftOut, Manifest, RoleSetting
from pgdr.postgres import sql
from pgdr.postgres.connect import Endpoint, session

if TYPE_CHECKING:
    import psycopg

CAPTURED_DATABASES = ("postgres", "template1")
CLOSED_REASON = "datallowconn = false: pg_dumpall cannot connect to it, so it is not in the backup"


def read_properties(connection: psycopg.Connection) -> tuple[list[DatabaseProperties], list[LeftOut]]:
    """The properties of postgres and template1, and the databases the dump leaves out (connection: a superuser's
    session on any database; the backup reads its other facts over the same one)."""
    captured = []
    for database in CAPTURED_DATABASES:
        rows = connection.execute(sql.database_settings_query(database)).fetchall()  # type: ignore[call-overload]
        if rows:
            properties = _properties(database, rows)
            access = connection.execute(sql.database_access_query(database)).fetchall()  # type: ignore[call-overload]
            properties.owner = str(access[0][0])
            properties.grants = None if access[0][1] else [
                DatabaseGrant(grantee=grantee, privilege=privilege, grantable=grantable)
                for _, _, grantee, privilege, grantable in access]
            captured.append(properties)
    closed = [row[0] for row in connection.execute(sql.closed_databases_query())]  # type: ignore[call-overload]
    return captured, [LeftOut(name=name, reason=CLOSED_REASON) for name in closed]


def _statements(properties: DatabaseProperties, roles: set[str]) -> list[str]:
    """Owner and privileges first (older manifests have neither: left as they are), then comment and settings."""
    owner = properties.owner if properties.owner in roles else ""
    statements = []
    if properties.owner:
        grants = None if properties.grants is None else [
            (grant.grantee, grant.privilege, grant.grantable) for grant in properties.grants
            if grant.grantee == "" or grant.grantee in roles]
        statements = sql.database_access_statements(properties.name, owner, grants)
    role_settings = [(item.role, item.setting) for item in properties.role_settings if item.role in roles]
    return statements + sql.database_property_statements(properties.name, properties.comment, properties.settings,
                                                         role_settings)


def _properties(database: str, rows: list[tuple[str | None, str | None, list[str] | None]]) -> DatabaseProperties:
    properties = DatabaseProperties(name=database, comment=rows[0][0])
    for _, role, config in rows:
        for setting in config or []:
            if role is None:
                properties.settings.append(setting)
            else:
                properties.role_settings.append(RoleSetting(role=role, setting=setting))
    return properties


def apply_properties(endpoint: Endpoint, manifest: Manifest | None, only: str | None = None) -> list[str]:
    """Put back what the manifest recorded (for `only` when one database was restored); returns warnings: a role
    setting whose role the restore did not bring back is skipped, not failed."""
    if manifest is None:
        return []
    warnings = []
    with session(endpoint) as connection:
        roles = {row[0] for row in connection.execute("SELECT rolname FROM pg_catalog.pg_roles")}  # type: ignore[call-overload]
        for properties in manifest.database_properties:
            if only is not None and properties.name != only:
                continue
            needed = {item.role for item in properties.role_settings} | {properties.owner} | {
                grant.grantee for grant in properties.grants or []}
            missing = sorted(needed - roles - {""})
            if missing:
                warnings.append(f"owner, privileges or settings of roles {', '.join(missing)} on database "
                                f"{properties.name} skipped: those roles are not in the cluster")
            for statement in _statements(properties, roles):
                connection.execute(statement)  # type: ignore[call-overload]
    return warnings
