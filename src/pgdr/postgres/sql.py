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


def drop_any_database(name: str) -> list[str]:
    """A template database (IS_TEMPLATE true) cannot be dropped until it is no longer one."""
    return [f"ALTER DATABASE {identifier(name)} IS_TEMPLATE false", drop_database(name)]


def drop_role_statements(role: str, superuser: str) -> list[str]:
    """Statements to run in each remaining database before DROP ROLE (ownership and grants go away)."""
    return [f"REASSIGN OWNED BY {identifier(role)} TO {identifier(superuser)}", f"DROP OWNED BY {identifier(role)}"]


# What blocks DROP DATABASE even WITH (FORCE): a subscription in it, a logical replication slot on it, a prepared
# transaction in it. Each is named and removed before anything is dropped.
def blockers_query(databases: list[str]) -> str:
    """One row per blocker of dropping `databases`: kind, database, name."""
    names = ", ".join(literal(name) for name in databases) or "NULL"
    return (
        "SELECT 'subscription', d.datname, s.subname FROM pg_catalog.pg_subscription s "
        "JOIN pg_catalog.pg_database d ON d.oid = s.subdbid "
        f"WHERE d.datname IN ({names}) "
        "UNION ALL SELECT 'replication slot', r.database, r.slot_name FROM pg_catalog.pg_replication_slots r "
        f"WHERE r.database IN ({names}) "
        "UNION ALL SELECT 'prepared transaction', p.database, p.gid FROM pg_catalog.pg_prepared_xacts p "
        f"WHERE p.database IN ({names}) ORDER BY 1, 2, 3"
    )


def remove_subscription(name: str) -> list[str]:
    """Run in the subscription's database: detached from its slot first, so the drop never calls the publisher
    (which may be gone), and the publisher's slot is left to its owner."""
    subscription = identifier(name)
    return [f"ALTER SUBSCRIPTION {subscription} DISABLE",
            f"ALTER SUBSCRIPTION {subscription} SET (slot_name = NONE)",
            f"DROP SUBSCRIPTION {subscription}"]


def remove_replication_slot(name: str) -> list[str]:
    """The walsender that holds an active slot is stopped first (it would hold the slot again at once otherwise
    only if its client reconnects, which the dropped database then refuses)."""
    return [
        "SELECT pg_catalog.pg_terminate_backend(active_pid, 10000) FROM pg_catalog.pg_replication_slots "
        f"WHERE slot_name = {literal(name)} AND active_pid IS NOT NULL",
        f"SELECT pg_catalog.pg_drop_replication_slot({literal(name)})",
    ]


def rollback_prepared(gid: str) -> str:
    """Run in the prepared transaction's database."""
    return f"ROLLBACK PREPARED {literal(gid)}"


def allow_connections(database: str) -> str:
    return f"ALTER DATABASE {identifier(database)} WITH ALLOW_CONNECTIONS true"


# initdb's comments on the databases it creates; a recreated template1 or postgres gets them back.
SYSTEM_DATABASE_COMMENTS = {
    "template1": "default template for new databases",
    "postgres": "default administrative connection database",
}


def recreate_from_template0(database: str) -> list[str]:
    """Drop `database` (template1 or postgres) and create it again, empty, from template0, with initdb's flags
    and comment. Run connected to another database."""
    name = identifier(database)
    template = database == "template1"
    return [
        *([f"ALTER DATABASE {name} IS_TEMPLATE false"] if template else []),
        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        f"CREATE DATABASE {name} TEMPLATE template0" + (" IS_TEMPLATE true" if template else ""),
        f"COMMENT ON DATABASE {name} IS {literal(SYSTEM_DATABASE_COMMENTS[database])}",
        *(["REVOKE CREATE, TEMPORARY ON DATABASE template1 FROM PUBLIC"] if template else []),  # as initdb does
    ]


def user_tablespaces_query() -> str:
    return ("SELECT spcname FROM pg_catalog.pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') "
            "ORDER BY spcname")


def drop_tablespace(name: str) -> str:
    return f"DROP TABLESPACE IF EXISTS {identifier(name)}"


# pg_dump's list of settings whose value is a list of names, each quoted on its own (variable_is_guc_list_quote):
# `search_path = a, "b c"` is stored as one string and must be set back as 'a', 'b c', not as one name.
GUC_LIST_QUOTE = frozenset({"local_preload_libraries", "search_path", "session_preload_libraries",
                            "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"})


def split_guc_list(value: str) -> list[str]:
    """The elements of a list setting as PostgreSQL's SplitGUCList reads them: separated by commas, spaces
    trimmed, a double-quoted element kept whole with "" meaning one quote."""
    elements: list[str] = []
    position = 0
    while True:
        while position < len(value) and value[position].isspace():
            position += 1
        if position >= len(value):
            return elements
        if value[position] == '"':
            element, position = [], position + 1
            while position < len(value):
                if value[position] == '"':
                    if value[position + 1 : position + 2] == '"':
                        element.append('"')
                        position += 2
                        continue
                    position += 1
                    break
                element.append(value[position])
                position += 1
            text = "".join(element)
        else:
            end = value.find(",", position)
            end = len(value) if end < 0 else end
            text, position = value[position:end].rstrip(), end
        elements.append(text)
        while position < len(value) and value[position].isspace():
            position += 1
        if position < len(value) and value[position] == ",":
            position += 1


def set_clause(setting: str) -> str:
    """`SET name TO value` from a pg_db_role_setting entry `name=value`, quoted the way pg_dump quotes it."""
    name, _, value = setting.partition("=")
    if name.lower() in GUC_LIST_QUOTE:
        values = ", ".join(literal(element) for element in split_guc_list(value)) or "''"
    else:
        values = literal(value)
    return f"SET {identifier(name)} TO {values}"


def database_settings_query(database: str) -> str:
    """Comment, settings, and the role settings inside `database`; one row per role setting (role NULL: the
    database's own)."""
    return (
        "SELECT pg_catalog.shobj_description(d.oid, 'pg_database'), r.rolname, s.setconfig "
        "FROM pg_catalog.pg_database d "
        "LEFT JOIN pg_catalog.pg_db_role_setting s ON s.setdatabase = d.oid "
        "LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole "
        f"WHERE d.datname = {literal(database)} ORDER BY r.rolname NULLS FIRST"
    )


def database_access_query(database: str) -> str:
    """Owner, whether the privileges are the defaults (datacl NULL), and one row per privilege otherwise."""
    return (
        "SELECT pg_catalog.pg_get_userbyid(d.datdba), d.datacl IS NULL, "
        "CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, a.privilege_type, "
        "a.is_grantable FROM pg_catalog.pg_database d "
        "LEFT JOIN LATERAL pg_catalog.aclexplode(d.datacl) a ON true "
        f"WHERE d.datname = {literal(database)} ORDER BY 3, 4"
    )


def database_access_statements(database: str, owner: str, grants: list[tuple[str, str, bool]] | None) -> list[str]:
    """Owner and privileges as recorded: grants None means the defaults (PUBLIC may connect and create temporary
    tables, the owner may do everything), granted explicitly; grantee "" is PUBLIC."""
    name = identifier(database)
    statements = [f"ALTER DATABASE {name} OWNER TO {identifier(owner)}"] if owner else []
    if grants is None:
        return [*statements, f"GRANT CONNECT, TEMPORARY ON DATABASE {name} TO PUBLIC"]
    statements.append(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
    if owner:
        statements.append(f"REVOKE ALL ON DATABASE {name} FROM {identifier(owner)}")
    for grantee, privilege, grantable in grants:
        statements.append(f"GRANT {privilege} ON DATABASE {name} TO {identifier(grantee) if grantee else 'PUBLIC'}"
                          + (" WITH GRANT OPTION" if grantable else ""))
    return statements


def closed_databases_query() -> str:
    return ("SELECT datname FROM pg_catalog.pg_database WHERE NOT datallowconn AND datname <> 'template0' "
            "ORDER BY datname")


def database_property_statements(database: str, comment: str | None, settings: list[str],
                                 role_settings: list[tuple[str, str]]) -> list[str]:
    """What pg_dump --create would write for a database pg_dumpall only connects to (postgres, template1)."""
    name = identifier(database)
    statements = [f"COMMENT ON DATABASE {name} IS {literal(comment) if comment is not None else 'NULL'}",
                  f"ALTER DATABASE {name} RESET ALL"]
    statements += [f"ALTER DATABASE {name} {set_clause(setting)}" for setting in settings]
    statements += [f"ALTER ROLE {identifier(role)} IN DATABASE {name} {set_clause(setting)}"
                   for role, setting in role_settings]
    return statements


def extension_configuration_tables_query() -> str:
    return ("SELECT n.nspname, c.relname FROM pg_catalog.pg_extension e "
            "CROSS JOIN LATERAL unnest(e.extconfig) AS config(oid) "
            "JOIN pg_catalog.pg_class c ON c.oid = config.oid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2")
