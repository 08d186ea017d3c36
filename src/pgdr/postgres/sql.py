"""Pure builders of SQL: quoting, idempotent DDL for databases, roles, users and grants.

Every identifier and literal goes through `identifier` / `literal`. Passwords are sent as SCRAM-SHA-256
verifiers computed here, so the cleartext never reaches the server, its logs or pg_stat_activity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

from pgdr.config import DatabaseSettings, UserSettings

TABLE_WRITE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
SYSTEM_DATABASES = ("template0", "template1", "postgres")
SCRAM_ITERATIONS = 4096


def identifier(name: str) -> str:
    """Always-quoted SQL identifier; embedded double quotes are doubled."""
    if "\x00" in name:
        raise ValueError("identifiers cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """SQL string literal (standard_conforming_strings on, the default since 9.1)."""
    if "\x00" in value:
        raise ValueError("literals cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


_SASLPREP_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
    stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
    stringprep.in_table_c9, stringprep.in_table_a1,
)


def saslprep(password: str) -> str:
    """The password as libpq and the server use it in SCRAM: SASLprep (RFC 4013) the way PostgreSQL's
    pg_saslprep does it. ASCII passes unchanged; a password SASLprep refuses is used unchanged too."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(char) else char
                     for char in password if not stringprep.in_table_b1(char))
    prepared = unicodedata.normalize("NFKC", mapped)
    if not prepared or any(check(char) for char in prepared for check in _SASLPREP_PROHIBITED):
        return password
    if any(stringprep.in_table_d1(char) for char in prepared) and (
        any(stringprep.in_table_d2(char) for char in prepared)
        or not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1]))
    ):
        return password
    return prepared


def scram_sha256_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The verifier PostgreSQL stores for scram-sha-256 (RFC 5802/7677), computed client-side."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass(frozen=True)
class Statement:
    """One step of a plan: SQL to run in `database`, described for humans (descriptions never hold secrets)."""

    description: str
    sql: str
    database: str = "postgres"
    secret: bool = False  # SQL carries a password verifier: never print it, run with logging off


def create_role_if_missing(role: str, options: str = "NOLOGIN") -> str:
    return (
        "DO $pgdr$ BEGIN "
        f"IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {literal(role)}) THEN "
        f"CREATE ROLE {identifier(role)} {options}; "
        "END IF; END $pgdr$;"
    )


def create_database(name: str, owner: str) -> str:
    return f"CREATE DATABASE {identifier(name)} OWNER {identifier(owner)} TEMPLATE template0 ENCODING 'UTF8'"


def set_user_password(user: UserSettings, verifier: str) -> str:
    return (
        f"ALTER ROLE {identifier(user.name)} WITH LOGIN PASSWORD {literal(verifier)} "
        f"CONNECTION LIMIT {int(user.connection_limit)}"
    )


def session_without_logging() -> str:
    """Keep a password change out of the server log whatever log_statement says (Patroni does the same)."""
    return (
        "SET LOCAL log_statement = 'none'; SET LOCAL log_min_duration_statement = -1; "
        "SET LOCAL log_min_error_statement = 'panic'"
    )


def database_privileges(database: DatabaseSettings) -> list[str]:
    db = identifier(database.name)
    readwrite, readonly = identifier(database.readwrite_role), identifier(database.readonly_role)
    return [
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {readwrite}",
        f"GRANT CONNECT ON DATABASE {db} TO {readonly}",
    ]


def schema_privileges(database: DatabaseSettings, superuser: str) -> list[str]:
    """Grants inside the database, current objects and future ones created by the superuser or the rw user."""
    readwrite, readonly = identifier(database.readwrite_role), identifier(database.readonly_role)
    creators = [identifier(superuser), identifier(database.readwrite_user.name)]
    statements = [
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {readwrite}",
        f"GRANT USAGE ON SCHEMA public TO {readonly}",
        f"GRANT {TABLE_WRITE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {readwrite}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {readwrite}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {readwrite}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {readonly}",
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {readonly}",
    ]
    for creator in creators:
        prefix = f"ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public GRANT"
        statements += [
            f"{prefix} {TABLE_WRITE_PRIVILEGES} ON TABLES TO {readwrite}",
            f"{prefix} USAGE, SELECT, UPDATE ON SEQUENCES TO {readwrite}",
            f"{prefix} EXECUTE ON FUNCTIONS TO {readwrite}",
            f"{prefix} SELECT ON TABLES TO {readonly}",
            f"{prefix} SELECT ON SEQUENCES TO {readonly}",
        ]
    return statements


def role_statements(database: DatabaseSettings) -> list[Statement]:
    statements = [
        Statement(f"role {database.readwrite_role} exists", create_role_if_missing(database.readwrite_role)),
        Statement(f"role {database.readonly_role} exists", create_role_if_missing(database.readonly_role)),
    ]
    memberships = [(database.readwrite_user, database.readwrite_role)]
    if database.readonly_user is not None:
        memberships.append((database.readonly_user, database.readonly_role))
    for user, role in memberships:
        statements.append(Statement(f"user {user.name} exists", create_role_if_missing(user.name, "LOGIN")))
        statements.append(
            Statement(f"user {user.name} is in {role}", f"GRANT {identifier(role)} TO {identifier(user.name)}")
        )
    return statements


def grant_statements(database: DatabaseSettings, superuser: str) -> list[Statement]:
    statements = [
        Statement(f"privileges on database {database.name}", sql) for sql in database_privileges(database)
    ]
    statements += [
        Statement(f"extension {extension} in {database.name}",
                  f"CREATE EXTENSION IF NOT EXISTS {identifier(extension)}", database.name)
        for extension in database.extensions
    ]
    statements.append(
        Statement(
            f"schema privileges and default privileges in {database.name}",
            ";\n".join(schema_privileges(database, superuser)),
            database.name,
        )
    )
    return statements


def password_statement(user: UserSettings, password: str) -> Statement:
    return Statement(
        f"password of {user.name} (re)set", set_user_password(user, scram_sha256_verifier(password)), secret=True
    )


def user_databases_query() -> str:
    return (
        "SELECT datname FROM pg_catalog.pg_database WHERE datname NOT IN "
        f"({', '.join(literal(name) for name in SYSTEM_DATABASES)}) ORDER BY datname"
    )


def user_roles_query(superuser: str) -> str:
    return (
        "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_' "
        f"AND rolname <> {literal(superuser)} ORDER BY rolname"
    )


def table_counts_query() -> str:
    return (
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname !~ '^pg_toast' ORDER BY 1, 2"
    )


def count_rows(schema: str, table: str) -> str:
    return f"SELECT count(*) FROM ONLY {identifier(schema)}.{identifier(table)}"


def drop_database(name: str) -> str:
    return f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)"


def drop_role_statements(role: str, superuser: str) -> list[str]:
    """Statements to run in each remaining database before DROP ROLE (ownership and grants go away)."""
    return [f"REASSIGN OWNED BY {identifier(role)} TO {identifier(superuser)}", f"DROP OWNED BY {identifier(role)}"]
