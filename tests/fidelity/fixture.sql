-- The fidelity tier's cluster: what a restore has to give back object for object. Loaded with
-- `psql -X -v ON_ERROR_STOP=1 -f fixture.sql` as the bootstrap superuser, connected to `postgres`, into a cluster
-- where `pgdr init` has run (so demo, demo_user and demo_readonly_user exist already).
--
-- Every database but template1 is created from template0, so what template1 holds shows up only in template1.
-- The database `closed_db` is made unconnectable at the end: pg_dumpall cannot dump it, and pgdr must say it left it
-- out.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- Roles: attributes, memberships with ADMIN OPTION and GRANTED BY, settings for all databases and for one. ----------
CREATE ROLE app_owner LOGIN CREATEDB;
CREATE ROLE app LOGIN CONNECTION LIMIT 40;
CREATE ROLE reader NOLOGIN;
CREATE ROLE writer NOLOGIN NOINHERIT;
CREATE ROLE admin_group NOLOGIN CREATEROLE;
CREATE ROLE "Ünïcode ""Rôle"" 😀" LOGIN CONNECTION LIMIT 3 VALID UNTIL '2099-12-31 23:59:59+00';
CREATE ROLE "role with 'quote' and \backslash" NOLOGIN BYPASSRLS;
GRANT reader TO writer;
GRANT writer TO app WITH ADMIN OPTION;
GRANT admin_group TO app_owner GRANTED BY postgres;
GRANT reader TO "Ünïcode ""Rôle"" 😀";
ALTER ROLE app SET statement_timeout = '30s';
ALTER ROLE reader SET search_path = "$user", public, "Ünïcode ""Schema""";
ALTER ROLE "Ünïcode ""Rôle"" 😀" SET application_name = 'ünï ''app''';
COMMENT ON ROLE app IS 'the application''s login role';
COMMENT ON ROLE "Ünïcode ""Rôle"" 😀" IS E'a role with\na newline, a ''quote'' and -- dashes';

-- The databases. -----------------------------------------------------------------------------------------------------
CREATE DATABASE app OWNER app_owner TEMPLATE template0 CONNECTION LIMIT 20;
COMMENT ON DATABASE app IS E'The application''s database:\n  two lines, ''quotes'', "double quotes", \\backslash';
ALTER DATABASE app SET work_mem = '16MB';
ALTER DATABASE app SET search_path = sales, public, ext;
ALTER ROLE app IN DATABASE app SET work_mem = '32MB';
ALTER ROLE reader IN DATABASE app SET statement_timeout = '5s';
GRANT CREATE, TEMPORARY ON DATABASE app TO writer;
REVOKE TEMPORARY ON DATABASE app FROM PUBLIC;

CREATE DATABASE "Dätabase ""quoted"" ünï 😀" TEMPLATE template0;
COMMENT ON DATABASE "Dätabase ""quoted"" ünï 😀" IS 'a database whose name needs quotes';
ALTER ROLE "Ünïcode ""Rôle"" 😀" IN DATABASE "Dätabase ""quoted"" ünï 😀" SET DateStyle = 'ISO, DMY';

CREATE DATABASE ro TEMPLATE template0;
CREATE DATABASE app_template TEMPLATE template0 IS_TEMPLATE true CONNECTION LIMIT 5;
COMMENT ON DATABASE app_template IS 'a template users copy';
CREATE DATABASE closed_db TEMPLATE template0;
COMMENT ON DATABASE closed_db IS 'nobody may connect';

-- postgres: a comment and settings pg_dumpall never writes for it (it connects to postgres instead of creating it) ---
COMMENT ON DATABASE postgres IS E'postgres, commented:\nwith ''quotes''';
ALTER DATABASE postgres SET work_mem = '8MB';
ALTER ROLE app IN DATABASE postgres SET search_path = a, b;
CREATE TABLE public.notes (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO public.notes VALUES (1, 'kept in postgres'), (2, E'tab\tand newline\n');
SELECT pg_catalog.lo_from_bytea(424240, convert_to('a large object in postgres', 'UTF8'));

-- app: the rich one. ------------------------------------------------------------------------------------------------
\connect app
SET client_min_messages = warning;
CREATE SCHEMA ext;
GRANT USAGE ON SCHEMA ext TO PUBLIC;
CREATE EXTENSION pgcrypto WITH SCHEMA ext;
CREATE EXTENSION hstore WITH SCHEMA ext;
CREATE EXTENSION ltree WITH SCHEMA ext;
CREATE EXTENSION citext WITH SCHEMA public;
CREATE EXTENSION pg_trgm WITH SCHEMA public;
CREATE EXTENSION "uuid-ossp" WITH SCHEMA ext;
CREATE EXTENSION postgres_fdw;
COMMENT ON EXTENSION hstore IS 'key/value pairs, commented by us';

CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1', dbname 'nowhere');
CREATE USER MAPPING FOR app_owner SERVER elsewhere OPTIONS (user 'remote_app');
GRANT USAGE ON FOREIGN SERVER elsewhere TO app_owner;

-- Event triggers: one on ddl_command_end for two tags, one disabled, one ENABLE ALWAYS.
CREATE FUNCTION public.note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $body$
BEGIN
  RAISE NOTICE 'ddl: %', tg_tag;
END
$body$;
CREATE EVENT TRIGGER note_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
  EXECUTE FUNCTION public.note_ddl();
CREATE EVENT TRIGGER "Disabled ""drop"" watcher" ON sql_drop EXECUTE FUNCTION public.note_ddl();
ALTER EVENT TRIGGER "Disabled ""drop"" watcher" DISABLE;
CREATE EVENT TRIGGER always_on ON ddl_command_start WHEN TAG IN ('DROP TABLE') EXECUTE FUNCTION public.note_ddl();
ALTER EVENT TRIGGER always_on ENABLE ALWAYS;
COMMENT ON EVENT TRIGGER note_ddl IS 'says which DDL ran';

CREATE SCHEMA sales AUTHORIZATION app_owner;
CREATE SCHEMA "Ünïcode ""Schema""" AUTHORIZATION app_owner;
COMMENT ON SCHEMA sales IS E'sales:\n''orders'' and customers';

-- Default privileges, set before the objects they apply to.
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA sales GRANT SELECT ON TABLES TO reader;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA sales GRANT USAGE, SELECT ON SEQUENCES TO writer;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner GRANT EXECUTE ON FUNCTIONS TO app;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner GRANT USAGE ON TYPES TO "Ünïcode ""Rôle"" 😀";

SET ROLE app_owner;
SET search_path = sales, public, ext;

CREATE TYPE sales.status AS ENUM ('new', 'paid');
ALTER TYPE sales.status ADD VALUE 'shipped' AFTER 'paid';
ALTER TYPE sales.status ADD VALUE 'draft' BEFORE 'new';
COMMENT ON TYPE sales.status IS 'order states, one added BEFORE another';
CREATE DOMAIN sales.positive_amount AS numeric(12, 2) DEFAULT 1 NOT NULL CONSTRAINT amount_positive CHECK (VALUE > 0);
CREATE DOMAIN sales.email AS public.citext CONSTRAINT has_at CHECK (VALUE OPERATOR(pg_catalog.~) '@');
CREATE TYPE sales.address AS (street text, city text, "zip code" text);

CREATE TABLE sales.customers (
    id bigint GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 3) PRIMARY KEY,
    email sales.email NOT NULL UNIQUE,
    name text NOT NULL,
    attrs ext.hstore,
    region_path ext.ltree,
    address sales.address,
    secret bytea,
    token uuid DEFAULT ext.uuid_generate_v4()
);
COMMENT ON TABLE sales.customers IS 'who buys';
COMMENT ON COLUMN sales.customers.attrs IS E'free-form\nkey => value';
CREATE INDEX customers_name_trgm ON sales.customers USING gin (name public.gin_trgm_ops);
CREATE INDEX customers_region_path ON sales.customers USING gist (region_path);

CREATE TABLE sales.orders (
    id bigint NOT NULL,
    ordered_on date NOT NULL,
    region text NOT NULL,
    customer_id bigint NOT NULL REFERENCES sales.customers (id),
    status sales.status NOT NULL DEFAULT 'new',
    amount sales.positive_amount,
    PRIMARY KEY (id, ordered_on, region)
) PARTITION BY RANGE (ordered_on);
CREATE TABLE sales.orders_2023 PARTITION OF sales.orders
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') PARTITION BY LIST (region);
CREATE TABLE sales.orders_2023_eu PARTITION OF sales.orders_2023 FOR VALUES IN ('eu');
CREATE TABLE sales.orders_2023_us PARTITION OF sales.orders_2023 FOR VALUES IN ('us');
CREATE TABLE sales.orders_2023_rest PARTITION OF sales.orders_2023 DEFAULT;
CREATE TABLE sales.orders_2024 PARTITION OF sales.orders
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (region);
CREATE TABLE sales.orders_2024_eu PARTITION OF sales.orders_2024 FOR VALUES IN ('eu');
CREATE TABLE sales."orders_2024_ünï" PARTITION OF sales.orders_2024 FOR VALUES IN ('us', 'ünï');
CREATE INDEX orders_customer ON sales.orders (customer_id);
CREATE INDEX orders_open ON sales.orders (ordered_on) WHERE status IN ('new', 'draft');

CREATE TABLE sales.order_lines (
    order_id bigint NOT NULL,
    ordered_on date NOT NULL,
    region text NOT NULL,
    line int NOT NULL,
    sku text NOT NULL,
    qty int NOT NULL CHECK (qty > 0),
    total numeric GENERATED ALWAYS AS (qty * 2.5) STORED,
    PRIMARY KEY (order_id, ordered_on, region, line),
    FOREIGN KEY (order_id, ordered_on, region) REFERENCES sales.orders ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
) PARTITION BY RANGE (ordered_on);
CREATE TABLE sales.order_lines_2023 PARTITION OF sales.order_lines
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') PARTITION BY HASH (order_id);
CREATE TABLE sales.order_lines_2023_h0 PARTITION OF sales.order_lines_2023 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE sales.order_lines_2023_h1 PARTITION OF sales.order_lines_2023 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE sales.order_lines_2024 PARTITION OF sales.order_lines FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');

CREATE SEQUENCE sales.invoice_no START WITH 1000 INCREMENT BY 7 CACHE 1;
SELECT pg_catalog.setval('sales.invoice_no', 1234, true);
CREATE SEQUENCE sales.never_called MINVALUE -50 START WITH -10 INCREMENT BY -1;
SELECT pg_catalog.setval('sales.never_called', -20, false);
CREATE SEQUENCE sales.cycling AS smallint MAXVALUE 300 CYCLE;
SELECT pg_catalog.setval('sales.cycling', 299);

CREATE TABLE "Ünïcode ""Schema"""."Täblé ""with"" quotes; and spaces" (
    "Çolumn ""1""" int PRIMARY KEY,
    "back\slash" text,
    "ünï 😀" text DEFAULT E'd\u00e9faut'
);
COMMENT ON COLUMN "Ünïcode ""Schema"""."Täblé ""with"" quotes; and spaces"."ünï 😀"
    IS E'comment with /* a block */ and -- a line, ''quotes'' and\n\\. on its own line:\n\\.\nend';
INSERT INTO "Ünïcode ""Schema"""."Täblé ""with"" quotes; and spaces"
    VALUES (1, E'a\\b', 'ünï'), (2, E'\\.', E'line\nbreak'), (3, NULL, E'tab\there'), (4, 'COPY x FROM stdin;', '');

-- Data: rows spread over every partition, then updated and deleted so the heap is not in insertion order.
INSERT INTO sales.customers (email, name, attrs, region_path, address, secret)
SELECT 'c' || g || '@example.com', 'customer ' || g || CASE WHEN g % 7 = 0 THEN E' ''quoted''' ELSE '' END,
       ext.hstore(ARRAY['tier', 'n'], ARRAY[(g % 3)::text, g::text]), ('top.r' || (g % 4) || '.c' || g)::ext.ltree,
       ROW('street ' || g, 'city ' || (g % 5), lpad(g::text, 5, '0'))::sales.address,
       ext.digest('secret ' || g, 'sha256')
FROM generate_series(1, 300) AS g;
INSERT INTO sales.orders (id, ordered_on, region, customer_id, status, amount)
SELECT g, DATE '2023-01-01' + (g * 7 % 700), (ARRAY['eu', 'us', 'apac', 'ünï'])[1 + g % 4], 100 + 3 * (g % 300),
       (ARRAY['draft', 'new', 'paid', 'shipped'])[1 + g % 4]::sales.status, round((g * 1.37)::numeric, 2) + 1
FROM generate_series(1, 2000) AS g
WHERE NOT (DATE '2023-01-01' + (g * 7 % 700) >= DATE '2024-01-01' AND g % 4 = 2);  -- 2024 has no default partition
INSERT INTO sales.order_lines (order_id, ordered_on, region, line, sku, qty)
SELECT o.id, o.ordered_on, o.region, l, 'sku-' || (o.id * l % 97), 1 + (o.id + l) % 5
FROM sales.orders AS o, generate_series(1, 3) AS l;
UPDATE sales.customers SET name = name || ' (updated)' WHERE id % 11 = 1;
UPDATE sales.orders SET status = 'paid' WHERE id % 13 = 0 AND status = 'new';
DELETE FROM sales.orders WHERE id % 17 = 0;

CREATE FUNCTION sales.line_total(p_order bigint) RETURNS numeric LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(sum(l.total), 0) FROM sales.order_lines AS l WHERE l.order_id = p_order;
END;
COMMENT ON FUNCTION sales.line_total(bigint) IS E'sum of the lines\n(BEGIN ATOMIC body)';
CREATE PROCEDURE sales.mark_paid(p_order bigint)
BEGIN ATOMIC
    UPDATE sales.orders SET status = 'paid' WHERE id = p_order AND status IN ('draft', 'new');
END;
CREATE FUNCTION sales.touch_amount() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.amount IS NULL THEN NEW.amount := 1; END IF;  -- 'quotes' and $dollars$ inside
  RETURN NEW;
END
$$;
CREATE TRIGGER touch_amount BEFORE INSERT OR UPDATE ON sales.orders
    FOR EACH ROW EXECUTE FUNCTION sales.touch_amount();
CREATE TRIGGER "disabled ünï trigger" BEFORE DELETE ON sales.customers
    FOR EACH ROW EXECUTE FUNCTION sales.touch_amount();
ALTER TABLE sales.customers DISABLE TRIGGER "disabled ünï trigger";

CREATE VIEW sales.order_totals WITH (security_barrier = true) AS
    SELECT o.id, o.region, o.status, sales.line_total(o.id) AS total FROM sales.orders AS o;
CREATE VIEW sales.eu_orders AS SELECT * FROM sales.orders WHERE region = 'eu' WITH CASCADED CHECK OPTION;
CREATE FUNCTION sales.region_total(p_region text) RETURNS numeric LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT coalesce(sum(t.total), 0) FROM sales.order_totals AS t WHERE t.region = p_region;
END;
CREATE MATERIALIZED VIEW sales.region_totals AS
    SELECT region, count(*) AS orders, sales.region_total(region) AS total FROM sales.orders GROUP BY region;
CREATE UNIQUE INDEX region_totals_region ON sales.region_totals (region);
CREATE MATERIALIZED VIEW sales.not_populated AS SELECT id FROM sales.customers WITH NO DATA;
COMMENT ON MATERIALIZED VIEW sales.region_totals IS 'refreshed by the restore';

-- Row-level security, with a forced table and a restrictive policy.
ALTER TABLE sales.customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE sales.customers FORCE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON sales.customers FOR SELECT TO reader USING (name = current_user);
CREATE POLICY "writers' ünï policy" ON sales.customers AS RESTRICTIVE FOR UPDATE TO writer
    USING (true) WITH CHECK (email IS NOT NULL);
COMMENT ON POLICY own_rows ON sales.customers IS 'readers see their own row';
ALTER TABLE sales.order_lines ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_region ON sales.order_lines USING (region <> 'apac');

-- Column grants and table grants beyond the default privileges.
GRANT SELECT (id, name), UPDATE (name) ON sales.customers TO "Ünïcode ""Rôle"" 😀";
GRANT INSERT (order_id, ordered_on, region, line, sku, qty) ON sales.order_lines TO writer;
GRANT SELECT, INSERT ON sales.orders TO writer WITH GRANT OPTION;
GRANT USAGE ON SCHEMA sales TO reader, writer;
GRANT EXECUTE ON PROCEDURE sales.mark_paid(bigint) TO writer;
RESET ROLE;

-- Large objects: with a comment, an owner and a grant.
SELECT pg_catalog.lo_from_bytea(424242, convert_to(E'large object payload\nwith a newline', 'UTF8'));
SELECT pg_catalog.lo_from_bytea(424243, decode(repeat('00ff7f80', 4096), 'hex'));
COMMENT ON LARGE OBJECT 424242 IS 'a large object, ''commented''';
ALTER LARGE OBJECT 424243 OWNER TO app_owner;
GRANT SELECT ON LARGE OBJECT 424242 TO reader;

-- Publications, then a subscription that needs no publisher.
CREATE PUBLICATION pub_all FOR ALL TABLES WITH (publish = 'insert, update');
CREATE PUBLICATION "pub ""sales"" ünï" FOR TABLE sales.customers (id, name, email) WHERE (id > 100), sales.orders
    WITH (publish = 'insert', publish_via_partition_root = true);
CREATE PUBLICATION pub_schema FOR TABLES IN SCHEMA "Ünïcode ""Schema""";
COMMENT ON PUBLICATION pub_all IS 'everything';
CREATE SUBSCRIPTION "sub ünï" CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere user=nobody'
    PUBLICATION pub_all, "pub ""sales"" ünï"
    WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE);
COMMENT ON SUBSCRIPTION "sub ünï" IS 'needs no publisher';

ANALYZE;

-- A database whose name needs quotes. -------------------------------------------------------------------------------
\connect "Dätabase ""quoted"" ünï 😀"
SET client_min_messages = warning;
CREATE SCHEMA "ünï ""s""";
CREATE TABLE "ünï ""s"""."Ta""ble" (id int PRIMARY KEY, v text COLLATE "C", "Мир" text);
INSERT INTO "ünï ""s"""."Ta""ble" SELECT g, 'value ' || g, 'мир ' || g FROM generate_series(1, 50) AS g;
ALTER TABLE "ünï ""s"""."Ta""ble" OWNER TO "Ünïcode ""Rôle"" 😀";

-- ro: read-only once loaded. ----------------------------------------------------------------------------------------
\connect ro
CREATE TABLE facts (id int PRIMARY KEY, fact text NOT NULL);
INSERT INTO facts SELECT g, 'fact ' || g FROM generate_series(1, 100) AS g;
CREATE SEQUENCE facts_seq;
SELECT pg_catalog.setval('facts_seq', 77);
\connect postgres
ALTER DATABASE ro SET default_transaction_read_only = on;

-- app_template: a template database of the users' own. --------------------------------------------------------------
\connect app_template
CREATE TABLE starter (id int PRIMARY KEY, label text);
INSERT INTO starter VALUES (1, 'copied into new databases');

-- closed_db: made unconnectable; pg_dumpall skips it, pgdr must name it as left out. --------------------------------
\connect closed_db
CREATE TABLE lost (id int);
INSERT INTO lost VALUES (1);
\connect postgres
ALTER DATABASE closed_db ALLOW_CONNECTIONS false;

-- template1: a schema with a table, a comment and settings pg_dumpall never writes for it. --------------------------
\connect template1
SET client_min_messages = warning;
CREATE SCHEMA tpl;
CREATE TABLE tpl.defaults (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO tpl.defaults VALUES ('currency', 'EUR'), ('quote''d', E'line\nbreak');
COMMENT ON DATABASE template1 IS E'template1, ours:\nwith ''quotes''';
ALTER DATABASE template1 SET work_mem = '6MB';
ALTER ROLE reader IN DATABASE template1 SET statement_timeout = '7s';
