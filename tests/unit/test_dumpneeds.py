"""NeedsReader: what a plain script needs from the target (extensions, ICU, tablespaces), read through the psql-exact
lexer, so text inside strings, comments, dollar quotes, quoted names and COPY rows never counts."""

from __future__ import annotations

import pytest

from pgdr.artifact import ExtensionNeed, Requirements, TablespaceNeed
from pgdr.dumpneeds import NeedsReader

# The shape of PostgreSQL 15's pg_dumpall --quote-all-identifiers output, cut to what matters here.
DUMP = """\
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET standard_conforming_strings = on;

CREATE ROLE "postgres";
CREATE TABLESPACE "fast" OWNER "postgres" LOCATION '/srv/pg fast';

\\connect template1

--
-- PostgreSQL database dump complete
--

\\connect postgres

CREATE DATABASE "app" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu LOCALE = 'C' ICU_LOCALE = 'en';
ALTER DATABASE "app" OWNER TO "postgres";

\\connect "app"

CREATE COLLATION "public"."german" (provider = icu, locale = 'de-DE');
CREATE EXTENSION IF NOT EXISTS "pgcrypto" WITH SCHEMA "public";
COMMENT ON EXTENSION "pgcrypto" IS 'cryptographic functions';

\\connect postgres

CREATE DATABASE "shop" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';

\\connect -reuse-previous=on "dbname='shop'"

CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA "public";

--
-- PostgreSQL database cluster dump complete
--
"""

EXPECTED = Requirements(
    extensions=[ExtensionNeed(database="app", name="pgcrypto"), ExtensionNeed(database="shop", name="uuid-ossp")],
    icu=["database app", "collation app.public.german"],
    tablespaces=[TablespaceNeed(name="fast", location="/srv/pg fast")],
)


def needs(script: str, chunk: int = 0) -> Requirements:
    reader = NeedsReader()
    data = script.encode()
    if chunk:
        for start in range(0, len(data), chunk):
            reader.feed(data[start : start + chunk])
    else:
        reader.feed(data)
    reader.finish()
    return reader.requirements()


def test_a_pg_dumpall_script_yields_its_extensions_icu_users_and_tablespaces():
    assert needs(DUMP) == EXPECTED


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_the_result_does_not_depend_on_how_the_stream_is_cut(chunk):
    assert needs(DUMP, chunk) == EXPECTED


@pytest.mark.parametrize(("statement", "extension"), [
    ("CREATE EXTENSION hstore;", ExtensionNeed(database="postgres", name="hstore")),
    ("create extension if not exists Citext cascade;", ExtensionNeed(database="postgres", name="citext")),
    ('CREATE EXTENSION "PostGIS" WITH SCHEMA version VERSION \'3.4.2\';',
     ExtensionNeed(database="postgres", name="PostGIS", version="3.4.2")),
    ("CREATE EXTENSION vector SCHEMA public VERSION '0.8.0' CASCADE;",
     ExtensionNeed(database="postgres", name="vector", version="0.8.0")),
])
def test_create_extension_forms_before_any_connect_count_in_postgres(statement, extension):
    assert needs(statement + "\n").extensions == [extension]


@pytest.mark.parametrize("statement", [
    "CREATE DATABASE a LOCALE_PROVIDER = 'icu';",
    "CREATE DATABASE a WITH LOCALE_PROVIDER icu ICU_LOCALE 'en' TEMPLATE template0;",
    'CREATE DATABASE a TEMPLATE = template0 locale_provider = "ICU";',
])
def test_an_icu_database_in_any_spelling_is_found(statement):
    assert needs(statement + "\n").icu == ["database a"]


@pytest.mark.parametrize("statement", [
    "CREATE DATABASE a LOCALE_PROVIDER = libc LOCALE = 'icu';",
    "CREATE DATABASE icu TEMPLATE template0;",
    "CREATE DATABASE a LOCALE_PROVIDER = builtin ICU_LOCALE = 'icu';",
])
def test_icu_that_is_not_the_database_provider_does_not_count(statement):
    assert needs(statement + "\n").icu == []


def test_an_icu_collation_counts_only_through_its_provider_option():
    script = ("\\connect app\n"
              "CREATE COLLATION provider (provider = libc, locale = 'provider = icu');\n"
              "CREATE COLLATION IF NOT EXISTS s.de (locale = 'de', PROVIDER = 'icu', deterministic = false);\n"
              "CREATE COLLATION c2 FROM \"und-x-icu\";\n")
    assert needs(script).icu == ["collation app.s.de"]


def test_a_tablespace_owned_by_a_role_called_location_keeps_its_real_location():
    script = "CREATE TABLESPACE t OWNER location LOCATION '/srv/it''s here' WITH (seq_page_cost = 1);\n"
    assert needs(script).tablespaces == [TablespaceNeed(name="t", location="/srv/it's here")]


def test_an_in_place_tablespace_needs_no_directory():
    assert needs("CREATE TABLESPACE t LOCATION '';\n").tablespaces == []


HOSTILE = """\
SET standard_conforming_strings = on;
\\connect app
-- CREATE EXTENSION in_line_comment;
/* CREATE EXTENSION in_block_comment; /* nested */ CREATE TABLESPACE b LOCATION '/b'; */
CREATE TABLE "CREATE EXTENSION quoted_name; x" (a text DEFAULT 'CREATE EXTENSION in_string;
CREATE DATABASE s LOCALE_PROVIDER icu;');
CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$
CREATE EXTENSION in_dollar_quote;
CREATE COLLATION d (provider = icu, locale = 'und');
$body$;
CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
COMMENT ON TABLE t IS E'it\\'s CREATE EXTENSION in_escape_string;';
COPY public.t (a) FROM stdin;
CREATE EXTENSION in_copy_row;
CREATE TABLESPACE c LOCATION '/c';
\\connect evil
\\.
SET standard_conforming_strings = off;
SELECT 'a backslash \\' CREATE EXTENSION in_old_style_string;';
SET standard_conforming_strings = on;
CREATE EXTENSION real_one;
"""


def test_text_inside_strings_comments_dollar_quotes_names_and_copy_rows_never_counts():
    found = needs(HOSTILE)
    assert found == Requirements(extensions=[ExtensionNeed(database="app", name="real_one")])


def test_the_same_extension_in_the_same_database_is_listed_once():
    script = "\\connect a\nCREATE EXTENSION x;\nCREATE EXTENSION IF NOT EXISTS x;\n\\connect b\nCREATE EXTENSION x;\n"
    assert needs(script).extensions == [ExtensionNeed(database="a", name="x"), ExtensionNeed(database="b", name="x")]
