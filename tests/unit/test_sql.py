"""SQL builders: quoting, SCRAM verifiers (checked against RFC 7677's published exchange), role and grant DDL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgdr.config import DatabaseSettings, UserSettings
from pgdr.postgres.sql import (
    count_rows,
    create_database,
    create_role_if_missing,
    drop_role_statements,
    grant_statements,
    identifier,
    literal,
    password_statement,
    role_statements,
    saslprep,
    scram_sha256_verifier,
    set_user_password,
    user_roles_query,
)

VERIFIER = re.compile(
    r"^SCRAM-SHA-256\$(?P<iterations>\d+):(?P<salt>[A-Za-z0-9+/]+=*)\$(?P<stored>[A-Za-z0-9+/]{43}=):(?P<server>[A-Za-z0-9+/]{43}=)$"
)

# RFC 7677 section 3: the SCRAM-SHA-256 example exchange for password "pencil".
RFC_PASSWORD = "pencil"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL_WITHOUT_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def unquote_identifier(text: str) -> str:
    assert text.startswith('"') and text.endswith('"') and len(text) >= 2
    inner = text[1:-1]
    assert '"' not in inner.replace('""', "")
    return inner.replace('""', '"')


def unquote_literal(text: str) -> str:
    assert text.startswith("'") and text.endswith("'") and len(text) >= 2
    inner = text[1:-1]
    assert "'" not in inner.replace("''", "")
    return inner.replace("''", "'")


def hi(password: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 Hi(): PBKDF2 with HMAC-SHA-256 written out, independent of hashlib.pbkdf2_hmac."""
    block = hmac.new(password, salt + b"\x00\x00\x00\x01", hashlib.sha256).digest()
    result = bytearray(block)
    for _ in range(iterations - 1):
        block = hmac.new(password, block, hashlib.sha256).digest()
        result = bytearray(a ^ b for a, b in zip(result, block, strict=True))
    return bytes(result)


def expected_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    salted = hi(password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    salt_text, stored_text, server_text = (base64.b64encode(part).decode() for part in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_text}${stored_text}:{server_text}"


def verifier_keys(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    match = VERIFIER.match(verifier)
    assert match, verifier
    return (int(match["iterations"]), base64.b64decode(match["salt"]), base64.b64decode(match["stored"]),
            base64.b64decode(match["server"]))


def database(name: str = "demo", readonly: bool = True) -> DatabaseSettings:
    return DatabaseSettings(
        name=name,
        extensions=["pg_trgm", "uuid-ossp"],
        readwrite_user=UserSettings(name=f"{name}_user", password="RW_PASSWORD", connection_limit=50),
        readonly_user=UserSettings(name=f"{name}_ro", password="RO_PASSWORD") if readonly else None,
    )


# --- quoting ---

@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("demo", '"demo"'),
        ("Demo", '"Demo"'),
        ("weird-db name", '"weird-db name"'),
        ('we"ird', '"we""ird"'),
        ('"', '""""'),
        ("select", '"select"'),
        ("ünïcødé 数据库", '"ünïcødé 数据库"'),
        ("a'b", '"a\'b"'),
        ("x; DROP TABLE t; --", '"x; DROP TABLE t; --"'),
    ],
)
def test_identifier_is_always_quoted_with_quotes_doubled(name: str, quoted: str) -> None:
    assert identifier(name) == quoted
    assert unquote_identifier(quoted) == name


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ("back\\slash", "'back\\slash'"),
        ('"double"', "'\"double\"'"),
        ("ünïcødé", "'ünïcødé'"),
        ("line\nbreak", "'line\nbreak'"),
        ("'; DROP ROLE postgres; --", "'''; DROP ROLE postgres; --'"),
    ],
)
def test_literal_doubles_single_quotes_and_nothing_else(value: str, quoted: str) -> None:
    assert literal(value) == quoted
    assert unquote_literal(quoted) == value


@pytest.mark.parametrize("builder", [identifier, literal])
@pytest.mark.parametrize("text", ["\x00", "a\x00b", "demo\x00"])
def test_nul_is_refused(builder, text: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        builder(text)


@given(st.text().filter(lambda text: "\x00" not in text))
def test_quoting_round_trips_for_any_text(text: str) -> None:
    assert unquote_identifier(identifier(text)) == text
    assert unquote_literal(literal(text)) == text


# --- SCRAM-SHA-256 verifiers ---

def test_verifier_matches_an_independent_rfc_5802_derivation() -> None:
    assert scram_sha256_verifier(RFC_PASSWORD, RFC_SALT) == expected_verifier(RFC_PASSWORD, RFC_SALT)
    salt = bytes(range(16))
    assert scram_sha256_verifier("Rw-Passw0rd", salt, 4096) == expected_verifier("Rw-Passw0rd", salt)
    assert scram_sha256_verifier("x", salt, 10) == expected_verifier("x", salt, 10)


def test_verifier_authenticates_rfc_7677_example_exchange() -> None:
    """The verifier's StoredKey and ServerKey must accept the RFC's client proof and produce its signature."""
    iterations, salt, stored_key, server_key = verifier_keys(scram_sha256_verifier(RFC_PASSWORD, RFC_SALT))
    assert (iterations, salt) == (4096, RFC_SALT)
    auth_message = ",".join([RFC_CLIENT_FIRST_BARE, RFC_SERVER_FIRST, RFC_CLIENT_FINAL_WITHOUT_PROOF]).encode()
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(RFC_PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key  # what the server checks
    assert hmac.new(server_key, auth_message, hashlib.sha256).digest() == RFC_SERVER_SIGNATURE


def test_wrong_password_does_not_authenticate_the_rfc_exchange() -> None:
    _, _, stored_key, server_key = verifier_keys(scram_sha256_verifier("pencil2", RFC_SALT))
    auth_message = ",".join([RFC_CLIENT_FIRST_BARE, RFC_SERVER_FIRST, RFC_CLIENT_FINAL_WITHOUT_PROOF]).encode()
    assert hmac.new(server_key, auth_message, hashlib.sha256).digest() != RFC_SERVER_SIGNATURE
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(RFC_PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() != stored_key


def test_verifier_format_and_fresh_salt() -> None:
    first, second = scram_sha256_verifier("same password"), scram_sha256_verifier("same password")
    for verifier in (first, second):
        iterations, salt, stored_key, server_key = verifier_keys(verifier)
        assert iterations == 4096
        assert len(salt) == 16
        assert len(stored_key) == len(server_key) == 32
        assert "same password" not in verifier
    assert first != second  # random salt each time
    assert verifier_keys(first)[1] != verifier_keys(second)[1]


def test_verifier_is_deterministic_for_a_fixed_salt() -> None:
    salt = b"0123456789abcdef"
    assert scram_sha256_verifier("p", salt) == scram_sha256_verifier("p", salt)
    assert scram_sha256_verifier("p", salt) != scram_sha256_verifier("q", salt)
    assert scram_sha256_verifier("p", salt, 5000).startswith("SCRAM-SHA-256$5000:")


# PostgreSQL (libpq and server) SASLprep passwords before SCRAM; a verifier made from the raw bytes would never
# match what a client sends for these passwords.
@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        ("I\u00adX", "IX"),  # RFC 4013 example: soft hyphen mapped to nothing
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),  # RFC 4013 example: NFKC
        ("\u2168", "IX"),  # RFC 4013 example: NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to space
        ("\ufb01le", "file"),
        ("e\u0301", "\u00e9"),
        ("pässwörd", "pässwörd"),
        ("\x07bell", "\x07bell"),  # ASCII: used as is, controls included
        ("x\x07\u00e9", "x\x07\u00e9"),  # prohibited control in a non-ASCII password: used unchanged
        ("\u0627\u0031", "\u0627\u0031"),  # RFC 4013 example: bidi violation, used unchanged
        ("\u0627\u0628", "\u0627\u0628"),
        ("\u00ad", "\u00ad"),  # maps to nothing: used unchanged
    ],
)
def test_saslprep_as_postgresql_does_it(password: str, prepared: str) -> None:
    assert saslprep(password) == prepared
    salt = b"S" * 16
    assert scram_sha256_verifier(password, salt) == expected_verifier(prepared, salt)


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_passwords_are_hashed_as_given(password: str) -> None:
    assert saslprep(password) == password


# --- DDL ---

def test_role_statements_create_roles_users_and_memberships_idempotently() -> None:
    statements = role_statements(database())
    sqls = [statement.sql for statement in statements]
    assert sqls == [
        create_role_if_missing("demo_readwrite"),
        create_role_if_missing("demo_readonly"),
        create_role_if_missing("demo_user", "LOGIN"),
        'GRANT "demo_readwrite" TO "demo_user"',
        create_role_if_missing("demo_ro", "LOGIN"),
        'GRANT "demo_readonly" TO "demo_ro"',
    ]
    assert all(statement.database == "postgres" and not statement.secret for statement in statements)
    assert "IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'demo_readwrite')" in sqls[0]
    assert 'CREATE ROLE "demo_readwrite" NOLOGIN;' in sqls[0]
    assert 'CREATE ROLE "demo_user" LOGIN;' in sqls[2]


def test_role_statements_without_readonly_user_still_create_both_roles() -> None:
    sqls = [statement.sql for statement in role_statements(database(readonly=False))]
    assert len(sqls) == 4
    assert any('CREATE ROLE "demo_readonly" NOLOGIN' in sql for sql in sqls)
    assert not any("demo_ro\"" in sql for sql in sqls)


def test_grant_statements_set_default_privileges_for_superuser_and_readwrite_user() -> None:
    statements = grant_statements(database(), "postgres")
    schema = statements[-1]
    assert schema.database == "demo"
    for creator in ('"postgres"', '"demo_user"'):
        prefix = f"ALTER DEFAULT PRIVILEGES FOR ROLE {creator} IN SCHEMA public GRANT"
        assert (f"{prefix} SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES TO "
                '"demo_readwrite"') in schema.sql
        assert f'{prefix} USAGE, SELECT, UPDATE ON SEQUENCES TO "demo_readwrite"' in schema.sql
        assert f'{prefix} EXECUTE ON FUNCTIONS TO "demo_readwrite"' in schema.sql
        assert f'{prefix} SELECT ON TABLES TO "demo_readonly"' in schema.sql
        assert f'{prefix} SELECT ON SEQUENCES TO "demo_readonly"' in schema.sql
    assert schema.sql.count("ALTER DEFAULT PRIVILEGES FOR ROLE") == 10
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "demo_readonly"' in schema.sql
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in schema.sql


def test_grant_statements_database_level_and_extensions() -> None:
    statements = grant_statements(database(), "admin")
    database_level = [statement for statement in statements if statement.database == "postgres"]
    assert [statement.sql for statement in database_level] == [
        'REVOKE ALL ON DATABASE "demo" FROM PUBLIC',
        'GRANT CONNECT, TEMPORARY ON DATABASE "demo" TO "demo_readwrite"',
        'GRANT CONNECT ON DATABASE "demo" TO "demo_readonly"',
    ]
    extensions = [statement.sql for statement in statements if statement.sql.startswith("CREATE EXTENSION")]
    assert extensions == ['CREATE EXTENSION IF NOT EXISTS "pg_trgm"', 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp"']
    assert 'FOR ROLE "admin"' in statements[-1].sql and 'FOR ROLE "postgres"' not in statements[-1].sql


def test_weird_names_are_quoted_everywhere() -> None:
    weird = database('weird-db "name"')
    sqls = [s.sql for s in role_statements(weird) + grant_statements(weird, "su per")]
    assert any('CREATE ROLE "weird-db ""name""_readwrite" NOLOGIN' in sql for sql in sqls)
    assert any("rolname = 'weird-db \"name\"_user'" in sql for sql in sqls)
    assert 'REVOKE ALL ON DATABASE "weird-db ""name""" FROM PUBLIC' in sqls
    assert any('FOR ROLE "su per"' in sql for sql in sqls)
    assert any('FOR ROLE "weird-db ""name""_user"' in sql for sql in sqls)
    assert create_database("a b", "o'wner") == (
        'CREATE DATABASE "a b" OWNER "o\'wner" TEMPLATE template0 ENCODING \'UTF8\''
    )
    assert count_rows("my schema", 'ta"ble') == 'SELECT count(*) FROM ONLY "my schema"."ta""ble"'
    assert drop_role_statements("r r", "su") == ['REASSIGN OWNED BY "r r" TO "su"', 'DROP OWNED BY "r r"']
    assert "rolname <> 'o''brien'" in user_roles_query("o'brien")


PASSWORD = "Rw-Passw0rd 'quoted' \\ $x"


def test_password_statement_is_secret_and_its_description_holds_no_password() -> None:
    user = UserSettings(name="demo_user", password="RW_PASSWORD", connection_limit=50)
    statement = password_statement(user, PASSWORD)
    assert statement.secret is True
    assert statement.description == "password of demo_user (re)set"
    assert PASSWORD not in statement.description and "SCRAM" not in statement.description
    assert PASSWORD not in statement.sql and "Passw0rd" not in statement.sql
    match = re.fullmatch(r'ALTER ROLE "demo_user" WITH LOGIN PASSWORD \'(?P<verifier>[^\']+)\' CONNECTION LIMIT 50',
                         statement.sql)
    assert match, statement.sql
    _, salt, _, _ = verifier_keys(match["verifier"])
    assert match["verifier"] == expected_verifier(PASSWORD, salt)


def test_set_user_password_quotes_name_and_limits_connections() -> None:
    user = UserSettings(name='we"ird', password="P")
    assert set_user_password(user, "SCRAM-SHA-256$1:a$b:c") == (
        "ALTER ROLE \"we\"\"ird\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$1:a$b:c' CONNECTION LIMIT -1"
    )
