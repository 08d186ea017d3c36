"""Reproducible benchmark data: three realistic databases (shop, events, crm) generated inside PostgreSQL.

Everything is produced by SQL (generate_series + random() seeded with setseed per table and batch), so the same
seed and size give the same rows on the same PostgreSQL major version, and a gigabyte takes a minute or two.
The data is meant to compress like production data (gzip -6 about 3x), not like pgbench filler (35x): prose with
a Zipf-distributed vocabulary, names, addresses, jsonb documents, prices, microsecond timestamps, uuids and some
binary (bytea, dumped as hex). Primary keys, foreign keys and indexes (btree, gin on jsonb, gin trigram) are
created after loading, as pg_dump's restore does.

    PGPASSWORD=... python3 bench/generate.py --host 127.0.0.1 --port 5432 --user postgres --size 100MB

Sizes are the approximate on-disk size of the whole cluster (sum of pg_database_size, indexes included); row
counts scale linearly. The report ends with the cluster size, the pg_dumpall size and its gzip -6 ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SIZES = {"100MB": 100 * 1000**2, "1GB": 1000**3, "5GB": 5 * 1000**3}
UNIT = 100 * 1000**2  # row counts below are per 100 MB of generated data
FIXED = 45 * 1000**2  # six databases' catalogs (postgres, template0/1 and ours), counted in the cluster size
BATCH_ROWS = 100_000
DEFAULT_SEED = 6
CHUNK = 1024 * 1024
MARKER = "pgdr-bench data"

# --- vocabulary --------------------------------------------------------------------------------------------------
COMMON_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from or had by not "
    "but what some we can out other were all there when up use your how said an each she which do their time if will "
    "way about many then them write would like so these her long make thing see him two has look more day could go "
    "come did number sound no most people my over know water than call first who may down side been now find any new "
    "work part take get place made live where after back little only round man year came show every good me give our"
).split()
SYLLABLES = (
    "ka lo mi ren sta tor vel qui bar den fi gra hol in jas ker lum mon nel or pra que ris sel tam ul ver wes xan yor "
    "zel ab ce dor el fon gu har is jo kor lin mar no os pel ru"
).split()
VOCABULARY = 20_000  # word ids 0..19999, frequency ~ 1/rank (log-uniform), like natural language
FIRST_NAMES = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony Margaret Mark Sandra "
    "Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Dorothy "
    "George Melissa Timothy Deborah Ronald Stephanie Jason Rebecca Edward Sharon Jeffrey Laura Ryan Cynthia Jacob "
    "Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda Larry Pamela Justin Emma Scott "
    "Nicole Brandon Helen Benjamin Samantha Samuel Katherine Gregory Christine Alexander Debra Frank Rachel Patrick "
    "Carolyn Raymond Janet Jack Catherine Dennis Maria Jerry Heather Tyler Diane Aaron Ruth Jose Julie Adam Olivia "
    "Henry Joyce Nathan Virginia Douglas Victoria Zachary Kelly Peter Lauren Kyle Christina Ethan Joan Walter Evelyn "
    "Noah Judith Jeremy Megan Christian Andrea Keith Cheryl Roger Hannah Terry Jacqueline Gerald Martha Harold Gloria "
    "Sean Teresa Austin Ann Carl Sara Arthur Madison Lawrence Frances Dylan Kathryn Jesse Janice Jordan Jean Bryan "
    "Abigail Billy Alice Joe Julia Bruce Judy Gabriel Sophia Logan Grace Albert Denise Willie Amber Alan Doris Juan "
    "Marilyn Wayne Danielle Elijah Beverly Randy Isabella Roy Theresa Vincent Diana Ralph Natalie Eugene Brittany "
    "Russell Charlotte Bobby Marie Mason Kayla Philip Alexis Louis Lori Lukas Sofia Mateo Camille Hiroshi Yuki "
    "Aarav Priya Wei Mei Oluwaseun Amara Mohammed Fatima Ahmed Leila Ivan Olga Pierre Chloe Giovanni Giulia"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson "
    "Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell "
    "Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales "
    "Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson "
    "Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long "
    "Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher "
    "Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole "
    "Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison "
    "Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford "
    "Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner "
    "Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols "
    "Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce Vazquez Hansen Peters "
    "Mueller Schneider Fischer Weber Becker Hoffmann Rossi Russo Ferrari Esposito Bianchi Dubois Lefebvre Moreau "
    "Tanaka Suzuki Takahashi Watanabe Yamamoto Wang Zhang Liu Singh Kumar Sharma Okafor Mensah Novak Kowalski"
).split()
CITIES = (
    "London Paris Berlin Madrid Rome Lisbon Dublin Amsterdam Brussels Vienna Prague Warsaw Budapest Athens Oslo "
    "Stockholm Helsinki Copenhagen Zurich Geneva Munich Hamburg Lyon Marseille Barcelona Valencia Milan Naples Porto "
    "Krakow Toronto Montreal Vancouver Boston Chicago Denver Seattle Austin Atlanta Miami Portland Phoenix Dallas "
    "Houston Sydney Melbourne Auckland Tokyo Osaka Seoul Singapore Mumbai Bangalore Lagos Nairobi Cairo Johannesburg "
    "Santiago Lima Bogota Mexico"
).split()
COUNTRIES = "US GB DE FR ES IT NL BE AT CH SE NO DK FI IE PT PL CZ CA AU NZ JP KR SG IN BR MX AR ZA NG".split()
STREETS = "Street Road Avenue Lane Way Drive Court Place Square Boulevard Terrace Crescent".split()
DOMAINS = "gmail.com yahoo.com outlook.com hotmail.com icloud.com proton.me gmx.de web.de orange.fr mail.com".split()
TLDS = "com io net org co.uk de fr eu ai dev".split()
COLORS = "black white red blue green grey navy beige brown pink yellow orange purple silver gold olive".split()
PRODUCT_SIZES = "XS S M L XL XXL 36 38 40 42 44 one-size".split()
MATERIALS = "cotton wool polyester leather steel aluminium oak walnut glass ceramic bamboo linen silk nylon".split()
ORDER_STATUS = "delivered shipped paid delivered delivered pending cancelled refunded returned".split()
CURRENCIES = "EUR USD GBP EUR USD CHF SEK".split()
CHANNELS = "web ios android web marketplace phone web store".split()
DEVICES = "desktop mobile tablet mobile desktop".split()
UTM_SOURCES = "google newsletter facebook instagram bing partner tiktok direct".split()
LANGUAGES = "en de fr es it nl pt pl sv ja".split()
SEGMENTS = "new regular vip dormant wholesale".split()
EVENT_KINDS = "page_view page_view page_view click click scroll search add_to_cart purchase error".split()
SECTIONS = "products category search cart checkout account blog help offers".split()
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 "
    "Edg/119.0.2151.97",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 "
    "Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Mobile "
    "Safari/537.36",
    "curl/8.4.0",
]
INDUSTRIES = ("software retail logistics healthcare finance insurance manufacturing energy education media "
              "hospitality construction telecom agriculture automotive legal").split()
COMPANY_SUFFIXES = "Inc Ltd GmbH LLC SA AG Group Labs Partners Holdings Systems Solutions".split()
JOB_TITLES = ("CEO CTO CFO COO VP-Sales VP-Engineering Head-of-Marketing Product-Manager Engineer Analyst Buyer "
              "Procurement-Lead Office-Manager Consultant Director Account-Executive").split()
ACTIVITY_KINDS = "email call meeting note task email email call".split()
OUTCOMES = "positive neutral negative no-answer follow-up won lost".split()
LISTS = {
    "first_names": FIRST_NAMES, "last_names": LAST_NAMES, "cities": CITIES, "countries": COUNTRIES,
    "streets": STREETS, "domains": DOMAINS, "tlds": TLDS, "colors": COLORS, "sizes": PRODUCT_SIZES,
    "materials": MATERIALS, "order_status": ORDER_STATUS, "currencies": CURRENCIES, "channels": CHANNELS,
    "devices": DEVICES, "utm_sources": UTM_SOURCES, "languages": LANGUAGES, "segments": SEGMENTS,
    "event_kinds": EVENT_KINDS, "sections": SECTIONS, "user_agents": USER_AGENTS, "industries": INDUSTRIES,
    "company_suffixes": COMPANY_SUFFIXES, "job_titles": [title.replace("-", " ") for title in JOB_TITLES],
    "activity_kinds": ACTIVITY_KINDS, "outcomes": OUTCOMES,
}


def array_literal(values: list[str]) -> str:
    """['a', 'b c'] -> ARRAY['a','b c']::text[] (a constant the planner folds once)."""
    return "ARRAY[" + ",".join("'" + value.replace("'", "''") + "'" for value in values) + "]::text[]"


# --- SQL snippets: @name:arg:arg@ tokens in the table definitions expand to these --------------------------------
def word_sql(z: str) -> str:
    """The word with id z: common English words first, then 2-3 syllable words (frequent ids are short)."""
    syllables, count = array_literal(SYLLABLES), len(SYLLABLES)
    return (f"CASE WHEN {z} < {len(COMMON_WORDS)} THEN ({array_literal(COMMON_WORDS)})[{z} + 1] "
            f"ELSE ({syllables})[1 + {z} % {count}] || ({syllables})[1 + ({z} / {count}) % {count}] || "
            f"CASE WHEN {z} >= {count * count} THEN ({syllables})[1 + ({z} / {count * count}) % {count}] ELSE '' END "
            "END")


def zipf_sql() -> str:
    return f"(floor(exp(random() * ln({VOCABULARY + 1})))::int - 1)"


def text_sql(low: str, high: str) -> str:
    """Prose of low..high words with punctuation; correlated to the row (g.id) so it is drawn per row."""
    return (f"(SELECT string_agg({word_sql('w.z')} || CASE WHEN w.p < 0.06 THEN '.' WHEN w.p < 0.10 THEN ',' "
            "ELSE '' END, ' ') "
            f"FROM (SELECT {zipf_sql()} AS z, random() AS p FROM generate_series(1, {low} + 0 * g.id + "
            f"floor(random() * ({high} - {low} + 1))::int) OFFSET 0) AS w)")


def pick_sql(name: str, power: str = "1") -> str:
    """An element of a list; power > 1 favours the first elements."""
    values = LISTS[name]
    skew = "random()" if power == "1" else f"random() ^ {power}"
    return f"({array_literal(values)})[1 + floor({len(values)} * {skew})::int]"


SNIPPETS: dict[str, Callable[..., str]] = {
    "text": text_sql,
    "word": lambda: f"(SELECT {word_sql('w.z')} FROM (SELECT ({zipf_sql()} + 0 * g.id)::int AS z OFFSET 0) AS w)",
    "pick": pick_sql,
    "ts": lambda: "(timestamptz '2019-01-01 00:00:00+00' + random() * interval '2190 days')",
    "uuid": lambda: "md5(random()::text)::uuid",
    "money": lambda scale: f"round(exp(random() * {scale})::numeric, 2)",
    "int": lambda high, power="1": f"floor({high} * random() ^ {power})::int",
    "ref": lambda table, power="1": f"(1 + floor(@n_{table}@ * random() ^ {power})::bigint)",
}
TOKEN = re.compile(r"@([a-z_]+)((?::[\w.]+)*)@")


def render(sql: str, counts: dict[str, int]) -> str:
    """Expand @snippet:args@ tokens, then @n_table@ counts (snippets may produce count tokens)."""
    def expand(match: re.Match[str]) -> str:
        name, args = match[1], [arg for arg in match[2].split(":") if arg]
        if name in SNIPPETS:
            return SNIPPETS[name](*args)
        return str(counts[name])

    return TOKEN.sub(expand, TOKEN.sub(expand, sql))


# --- the schema ----------------------------------------------------------------------------------------------------
@dataclass
class Table:
    name: str
    columns: str
    select: str  # rows for ids @lo@..@hi@ of generate_series AS g(id)
    per_unit: int  # rows per 100 MB of data
    after: list[str] = field(default_factory=list)  # keys and indexes, created after loading


SHOP = [
    Table("customers", """
        id bigint NOT NULL, public_id uuid NOT NULL, first_name text NOT NULL, last_name text NOT NULL,
        email text NOT NULL, phone text, country char(2) NOT NULL, city text NOT NULL,
        created_at timestamptz NOT NULL, marketing_opt_in boolean NOT NULL, profile jsonb NOT NULL, notes text""", """
        SELECT g.id, @uuid@, f.first_name, f.last_name,
            lower(f.first_name) || CASE WHEN random() < 0.5 THEN '.' ELSE '_' END || lower(f.last_name)
                || (g.id % 997) || '@' || @pick:domains:2@,
            CASE WHEN random() < 0.8 THEN '+' || (1 + @int:98@) || ' ' || lpad(@int:999999999@::text, 9, '0') END,
            @pick:countries:2@, @pick:cities@, @ts@, random() < 0.35,
            jsonb_build_object('language', @pick:languages:2@, 'segment', @pick:segments@,
                'interests', jsonb_build_array(@word@, @word@, @word@), 'last_login', @ts@,
                'score', round((random() * 100)::numeric, 1), 'newsletter', random() < 0.4),
            CASE WHEN random() < 0.3 THEN @text:5:40@ END
        FROM generate_series(@lo@, @hi@) AS g(id),
            LATERAL (SELECT @pick:first_names:1.5@ || left(g.id::text, 0) AS first_name,
                            @pick:last_names:1.5@ AS last_name OFFSET 0) AS f""", 8_500, [
        "ALTER TABLE customers ADD PRIMARY KEY (id)",
        "CREATE UNIQUE INDEX customers_public_id ON customers (public_id)",
        "CREATE INDEX customers_email ON customers (lower(email))",
        "CREATE INDEX customers_last_name_trgm ON customers USING gin (last_name gin_trgm_ops)",
    ]),
    Table("products", """
        id bigint NOT NULL, sku text NOT NULL, title text NOT NULL, description text NOT NULL,
        price numeric(10,2) NOT NULL, currency char(3) NOT NULL, attributes jsonb NOT NULL,
        created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL""", """
        SELECT g.id, 'SKU-' || upper(substr(md5(random()::text), 1, 10)), initcap(@text:2:6@), @text:30:220@,
            @money:7@, @pick:currencies:2@,
            jsonb_build_object('color', @pick:colors@, 'size', @pick:sizes@, 'material', @pick:materials@,
                'weight_g', @int:5000:2@, 'tags', jsonb_build_array(@word@, @word@, @word@),
                'dimensions', jsonb_build_object('w', round((random() * 200)::numeric, 1),
                    'h', round((random() * 200)::numeric, 1), 'd', round((random() * 80)::numeric, 1)),
                'in_stock', random() < 0.8),
            t.created, t.created + random() * interval '400 days'
        FROM generate_series(@lo@, @hi@) AS g(id), LATERAL (SELECT @ts@ + 0 * g.id * interval '1s' AS created
                                                           OFFSET 0) AS t""", 1_700, [
        "ALTER TABLE products ADD PRIMARY KEY (id)",
        "CREATE UNIQUE INDEX products_sku ON products (sku)",
        "CREATE INDEX products_attributes ON products USING gin (attributes jsonb_path_ops)",
        "CREATE INDEX products_title_trgm ON products USING gin (title gin_trgm_ops)",
    ]),
    Table("orders", """
        id bigint NOT NULL, customer_id bigint NOT NULL, status text NOT NULL, ordered_at timestamptz NOT NULL,
        shipped_at timestamptz, total numeric(12,2) NOT NULL, currency char(3) NOT NULL, shipping_address text,
        meta jsonb NOT NULL""", """
        SELECT g.id, @ref:customers:1.5@, t.status, t.ordered,
            CASE WHEN t.status IN ('delivered', 'shipped', 'returned') THEN t.ordered + random() * interval '5 days'
            END,
            @money:6.5@, @pick:currencies:2@,
            (1 + @int:300:2@) || ' ' || initcap(@word@) || ' ' || @pick:streets@ || E'\\n'
                || lpad(@int:99999@::text, 5, '0') || ' ' || @pick:cities@,
            jsonb_build_object('channel', @pick:channels@, 'device', @pick:devices@,
                'coupon', CASE WHEN random() < 0.15 THEN 'SAVE' || (5 * (1 + @int:6@)) END,
                'utm', jsonb_build_object('source', @pick:utm_sources@, 'campaign', @text:1:3@),
                'gift', random() < 0.08)
        FROM generate_series(@lo@, @hi@) AS g(id),
            LATERAL (SELECT @pick:order_status@ || left(g.id::text, 0) AS status, @ts@ AS ordered OFFSET 0) AS t""",
          28_000, [
        "ALTER TABLE orders ADD PRIMARY KEY (id)",
        "ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id)",
        "CREATE INDEX orders_customer_id ON orders (customer_id)",
        "CREATE INDEX orders_ordered_at ON orders (ordered_at)",
    ]),
    Table("order_items", """
        order_id bigint NOT NULL, line int NOT NULL, product_id bigint NOT NULL, quantity int NOT NULL,
        unit_price numeric(10,2) NOT NULL, discount numeric(5,2) NOT NULL""", """
        SELECT g.id, l.line, @ref:products:2@, 1 + @int:10:3@, @money:6@,
            CASE WHEN random() < 0.2 THEN round((random() * 30)::numeric, 2) ELSE 0 END
        FROM generate_series(@lo@, @hi@) AS g(id),
            LATERAL generate_series(1, 1 + (g.id::bigint * 7919) % 5) AS l(line)""",
          28_000, [  # ids are orders: keep = orders
        "ALTER TABLE order_items ADD PRIMARY KEY (order_id, line)",
        "ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders (id)",
        "ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products (id)",
        "CREATE INDEX order_items_product_id ON order_items (product_id)",
    ]),
    Table("reviews", """
        id bigint NOT NULL, product_id bigint NOT NULL, customer_id bigint NOT NULL, rating smallint NOT NULL,
        title text NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL, helpful_votes int NOT NULL""", """
        SELECT g.id, @ref:products:2@, @ref:customers@, 1 + floor(5 * random() ^ 0.5)::int, initcap(@text:2:8@),
            @text:10:160@, @ts@, @int:200:4@
        FROM generate_series(@lo@, @hi@) AS g(id)""", 6_800, [
        "ALTER TABLE reviews ADD PRIMARY KEY (id)",
        "ALTER TABLE reviews ADD FOREIGN KEY (product_id) REFERENCES products (id)",
        "ALTER TABLE reviews ADD FOREIGN KEY (customer_id) REFERENCES customers (id)",
        "CREATE INDEX reviews_product_id ON reviews (product_id)",
    ]),
]
EVENTS = [
    Table("sessions", """
        id uuid NOT NULL, user_id bigint, started_at timestamptz NOT NULL, ended_at timestamptz,
        ip inet NOT NULL, user_agent text NOT NULL, country char(2), referrer text""", """
        SELECT md5('@seed@:session:' || g.id)::uuid, CASE WHEN random() < 0.7 THEN 1 + @int:200000@ END,
            t.started, t.started + random() ^ 2 * interval '2 hours',
            ((1 + @int:222@) || '.' || @int:256@ || '.' || @int:256@ || '.' || (1 + @int:254@))::inet,
            @pick:user_agents:1.5@, @pick:countries:2@,
            CASE WHEN random() < 0.5 THEN 'https://' || @word@ || '.' || @pick:tlds:2@ || '/' || @word@ END
        FROM generate_series(@lo@, @hi@) AS g(id),
            LATERAL (SELECT @ts@ + 0 * g.id * interval '1s' AS started OFFSET 0) AS t""", 17_000, [
        "ALTER TABLE sessions ADD PRIMARY KEY (id)",
        "CREATE INDEX sessions_started_at ON sessions (started_at)",
    ]),
    Table("events", """
        id bigint NOT NULL, session_id uuid NOT NULL, occurred_at timestamptz NOT NULL, kind text NOT NULL,
        path text NOT NULL, payload jsonb NOT NULL, trace_id bytea NOT NULL, duration_ms int""", """
        SELECT g.id, md5('@seed@:session:' || @ref:sessions@)::uuid, @ts@, k.kind,
            '/' || @pick:sections@ || '/' || @word@ || CASE WHEN random() < 0.3 THEN '?page=' || (1 + @int:20:2@)
                                                         ELSE '' END,
            jsonb_build_object('x', @int:1920@, 'y', @int:4000:2@, 'viewport', @pick:devices@,
                'element', CASE WHEN k.kind = 'click' THEN 'button#' || @word@ END) ||
            CASE k.kind
                WHEN 'search' THEN jsonb_build_object('query', @text:1:4@, 'results', @int:500:2@)
                WHEN 'purchase' THEN jsonb_build_object('order_total', @money:6@, 'currency', @pick:currencies@,
                                                        'items', 1 + @int:8:2@)
                WHEN 'error' THEN jsonb_build_object('message', @text:4:14@, 'code', 400 + @int:120@)
                WHEN 'add_to_cart' THEN jsonb_build_object('product', @int:100000@, 'quantity', 1 + @int:3:3@)
                ELSE '{}'::jsonb END,
            decode(md5(random()::text), 'hex'), CASE WHEN random() < 0.9 THEN @int:5000:3@ END
        FROM generate_series(@lo@, @hi@) AS g(id),
            LATERAL (SELECT @pick:event_kinds@ || left(g.id::text, 0) AS kind OFFSET 0) AS k""", 114_000, [
        "ALTER TABLE events ADD PRIMARY KEY (id)",
        "ALTER TABLE events ADD FOREIGN KEY (session_id) REFERENCES sessions (id)",
        "CREATE INDEX events_session_id ON events (session_id)",
        "CREATE INDEX events_occurred_at ON events (occurred_at)",
        "CREATE INDEX events_payload ON events USING gin (payload jsonb_path_ops)",
    ]),
]
CRM = [
    Table("accounts", """
        id bigint NOT NULL, name text NOT NULL, industry text NOT NULL, website text, annual_revenue numeric(14,2),
        employees int, address text, description text, created_at timestamptz NOT NULL""", """
        SELECT g.id, initcap(@word@) || ' ' || initcap(@word@) || ' ' || @pick:company_suffixes@,
            @pick:industries@, 'https://www.' || @word@ || @word@ || '.' || @pick:tlds:2@, @money:18@,
            floor(exp(random() * 10))::int,
            (1 + @int:300:2@) || ' ' || initcap(@word@) || ' ' || @pick:streets@ || ', ' || @pick:cities@,
            @text:10:80@, @ts@
        FROM generate_series(@lo@, @hi@) AS g(id)""", 2_800, [
        "ALTER TABLE accounts ADD PRIMARY KEY (id)",
        "CREATE INDEX accounts_name ON accounts (lower(name))",
    ]),
    Table("contacts", """
        id bigint NOT NULL, account_id bigint NOT NULL, first_name text NOT NULL, last_name text NOT NULL,
        email text, phone text, job_title text, tags text[] NOT NULL, created_at timestamptz NOT NULL""", """
        SELECT g.id, @ref:accounts:1.5@, f.first_name, f.last_name,
            lower(left(f.first_name, 1) || f.last_name) || '@' || @word@ || '.' || @pick:tlds:2@,
            '+' || (1 + @int:98@) || ' ' || lpad(@int:999999999@::text, 9, '0'), @pick:job_titles@,
            ARRAY[@pick:segments@, @word@], @ts@
        FROM generate_series(@lo@, @hi@) AS g(id),
            LATERAL (SELECT @pick:first_names:1.5@ || left(g.id::text, 0) AS first_name,
                            @pick:last_names:1.5@ AS last_name OFFSET 0) AS f""", 14_000, [
        "ALTER TABLE contacts ADD PRIMARY KEY (id)",
        "ALTER TABLE contacts ADD FOREIGN KEY (account_id) REFERENCES accounts (id)",
        "CREATE INDEX contacts_account_id ON contacts (account_id)",
        "CREATE INDEX contacts_last_name_trgm ON contacts USING gin (last_name gin_trgm_ops)",
    ]),
    Table("activities", """
        id bigint NOT NULL, contact_id bigint NOT NULL, kind text NOT NULL, subject text NOT NULL, body text,
        happened_at timestamptz NOT NULL, attachment bytea, metadata jsonb NOT NULL""", """
        SELECT g.id, @ref:contacts:1.3@, @pick:activity_kinds@, initcap(@text:3:9@), @text:15:220@, @ts@,
            CASE WHEN random() < 0.06 THEN (SELECT decode(string_agg(md5(random()::text), ''), 'hex')
                                            FROM generate_series(1, 2 + 0 * g.id + @int:60@)) END,
            jsonb_build_object('duration_min', @int:120:2@, 'outcome', @pick:outcomes@,
                'next_step_at', CASE WHEN random() < 0.4 THEN @ts@ END, 'owner', @pick:first_names@)
        FROM generate_series(@lo@, @hi@) AS g(id)""", 23_000, [
        "ALTER TABLE activities ADD PRIMARY KEY (id)",
        "ALTER TABLE activities ADD FOREIGN KEY (contact_id) REFERENCES contacts (id)",
        "CREATE INDEX activities_contact_id ON activities (contact_id)",
        "CREATE INDEX activities_happened_at ON activities (happened_at)",
        "CREATE INDEX activities_metadata ON activities USING gin (metadata)",
    ]),
]
DATABASES = {"shop": SHOP, "events": EVENTS, "crm": CRM}
EXTENSIONS = {"shop": ["pg_trgm"], "events": [], "crm": ["pg_trgm"]}


# --- running it ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    password: str

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=database, autocommit=True, connect_timeout=10)


def parse_size(text: str) -> int:
    """'100MB' -> 100_000_000, '1GB', '5GB', also '300MB' or '2.5GB'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use 100MB, 1GB, 5GB)")
    return int(float(match[1]) * 1000 ** "BKMGT".index(match[2][0]))


def row_counts(size: int) -> dict[str, int]:
    """Rows of every table for a cluster of `size` bytes (the three databases together)."""
    return scaled_counts(max(size - FIXED, UNIT // 10) / UNIT)


def scaled_counts(scale: float) -> dict[str, int]:
    """Rows of every table at `scale` times the rows per 100 MB (at least one row each)."""
    return {table.name: max(1, round(table.per_unit * scale)) for tables in DATABASES.values() for table in tables}


def marker(size: int, seed: int) -> str:
    return f"{MARKER} size={size} seed={seed}"


def seed_value(seed: int, *parts: object) -> float:
    """A setseed() argument in [-1, 1) derived from the seed and the table and batch."""
    return zlib.crc32(":".join(map(str, (seed, *parts))).encode()) / 2**31 - 1


def batches(total: int) -> Iterator[tuple[int, int]]:
    for low in range(1, total + 1, BATCH_ROWS):
        yield low, min(total, low + BATCH_ROWS - 1)


def is_current(target: Target, database: str, size: int, seed: int) -> bool:
    with target.connect() as connection:
        row = connection.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
    return row is not None and row[0] == marker(size, seed)


def prepare_database(target: Target, database: str) -> None:
    """Create the database if missing (an existing one keeps its owner and grants) and clear its marker."""
    with target.connect() as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{database}"')
        connection.execute(f'COMMENT ON DATABASE "{database}" IS NULL')


@dataclass(frozen=True)
class Planned:
    """One database to generate: its name, its schema (shop, events or crm) and the rows of that schema's tables.
    size is what its marker records (with the seed): the same plan regenerates nothing under --reuse."""

    name: str
    kind: str
    size: int
    rows: dict[str, int]


def cluster_plan(size: int) -> list[Planned]:
    """The three databases of a cluster of `size` bytes."""
    return [Planned(database, database, size, row_counts(size)) for database in DATABASES]


def load_database(target: Target, planned: Planned, seed: int, log: Callable[[str], None],
                  running: list[psycopg.Connection], per_table: bool = True) -> None:
    """running: connections in use, so an interrupt can cancel their queries; per_table: a line per table (else
    one per database)."""
    database, schema = planned.name, DATABASES[planned.kind]
    counts = {f"n_{name}": rows for name, rows in planned.rows.items()} | {"seed": seed}
    with target.connect(database) as connection:
        running.append(connection)
        for setting in ("max_parallel_workers_per_gather = 0", "maintenance_work_mem = '256MB'",
                        "synchronous_commit = off"):
            connection.execute(f"SET {setting}")
        for extension in EXTENSIONS[planned.kind]:
            connection.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
        for table in reversed(schema):
            connection.execute(f"DROP TABLE IF EXISTS {table.name} CASCADE")
        for table in schema:
            clock = time.monotonic()
            connection.execute(f"CREATE TABLE {table.name} ({table.columns})")
            rows = 0
            for batch, (low, high) in enumerate(batches(counts[f"n_{table.name}"])):
                connection.execute(f"SELECT setseed({seed_value(seed, database, table.name, batch)})")
                select = render(table.select, counts | {"lo": low, "hi": high})
                rows += connection.execute(f"INSERT INTO {table.name} {select}").rowcount
            for statement in table.after:
                connection.execute(statement)
            if per_table:
                log(f"  {database}.{table.name}: {rows:,} rows in {time.monotonic() - clock:.1f} s")
        connection.execute("VACUUM (ANALYZE)")
    with target.connect() as connection:
        connection.execute(f"COMMENT ON DATABASE \"{database}\" IS '{marker(planned.size, seed)}'")
    if not per_table:
        log(f"  {database} ({planned.kind}): {sum(planned.rows[table.name] for table in schema):,} rows")


def generate(target: Target, size: int, seed: int = DEFAULT_SEED, jobs: int = 0, force: bool = False,
             log: Callable[[str], None] = print) -> list[str]:
    """Create and fill every benchmark database not already generated with this size and seed; returns those."""
    return generate_plan(target, cluster_plan(size), seed, jobs, force, log, f"{size / 1000**2:,.0f} MB")


def generate_plan(target: Target, plan: list[Planned], seed: int = DEFAULT_SEED, jobs: int = 0, force: bool = False,
                  log: Callable[[str], None] = print, label: str = "") -> list[str]:
    """Create and fill every planned database not already generated with its size and seed; returns those."""
    todo = [planned for planned in plan if force or not is_current(target, planned.name, planned.size, seed)]
    for planned in todo:
        prepare_database(target, planned.name)
    names = ", ".join(planned.name for planned in todo) if len(todo) <= 5 else f"{len(todo)} databases"
    log(f"Generating {names or 'nothing (data is current)'}{f' for {label}' if label else ''}, seed {seed}")
    pool, running = ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2), list[psycopg.Connection]()
    try:
        for future in [pool.submit(load_database, target, planned, seed, log, running, len(plan) <= 5)
                       for planned in todo]:
            future.result()
    except BaseException:  # Ctrl-C or a failed database: stop the others now rather than after their last table
        pool.shutdown(wait=False, cancel_futures=True)
        for connection in running:
            if not connection.closed:
                connection.cancel()
        raise
    pool.shutdown()
    return [planned.name for planned in todo]


# --- report --------------------------------------------------------------------------------------------------------
@contextmanager
def passfile(target: Target) -> Iterator[str]:
    """A 0600 PGPASSFILE for child processes (the password stays out of argv and the environment)."""
    descriptor, path = tempfile.mkstemp(prefix="pgdr-bench-pgpass-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{target.host}:{target.port}:*:{target.user}:{target.password}\n")
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


def client_env(target: Target, pgpassfile: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    return environment | {"PGHOST": target.host, "PGPORT": str(target.port), "PGUSER": target.user,
                          "PGPASSFILE": pgpassfile, "PGDATABASE": "postgres"}


def cluster_size(target: Target) -> dict[str, int]:
    with target.connect() as connection:
        rows = connection.execute("SELECT datname, pg_database_size(oid) FROM pg_database ORDER BY 1").fetchall()
    return {name: int(size) for name, size in rows}


def dump_report(target: Target, pg_dumpall: str, timeout: float = 3600) -> dict[str, float]:
    """Size of pg_dumpall's output and what gzip -6 (zlib level 6, same algorithm) makes of it."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    raw = compressed = 0
    clock = time.monotonic()
    with passfile(target) as pgpass, subprocess.Popen(
        [pg_dumpall, "--no-role-passwords", "--no-password"], stdout=subprocess.PIPE, env=client_env(target, pgpass)
    ) as dump:
        assert dump.stdout is not None
        while chunk := dump.stdout.read(CHUNK):
            raw += len(chunk)
            compressed += len(compressor.compress(chunk))
            if time.monotonic() - clock > timeout:
                dump.kill()
                raise TimeoutError(f"pg_dumpall took more than {timeout} s")
        compressed += len(compressor.flush())
    if dump.returncode != 0:
        raise RuntimeError(f"pg_dumpall exited {dump.returncode}")
    return {"dump_bytes": raw, "gzip6_bytes": compressed, "gzip6_ratio": round(raw / max(1, compressed), 2),
            "seconds": round(time.monotonic() - clock, 1)}


def report(target: Target, pg_dumpall: str, log: Callable[[str], None] = print) -> dict[str, object]:
    sizes = cluster_size(target)
    bench = sum(sizes.get(database, 0) for database in DATABASES)
    dump = dump_report(target, pg_dumpall)
    log(f"Cluster: {sum(sizes.values()) / 1e6:,.0f} MB in {len(sizes)} databases "
        f"({bench / 1e6:,.0f} MB in {', '.join(DATABASES)})")
    log(f"pg_dumpall --no-role-passwords: {dump['dump_bytes'] / 1e6:,.0f} MB; gzip -6: "
        f"{dump['gzip6_bytes'] / 1e6:,.0f} MB, ratio {dump['gzip6_ratio']}x")
    return {"database_bytes": sizes, "bench_database_bytes": bench, **dump}


def find_pg_dumpall(bin_dir: str) -> str:
    candidates = [Path(bin_dir) / "pg_dumpall"] if bin_dir else sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dumpall"), key=lambda path: int(path.parts[-3]), reverse=True)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit("pg_dumpall not found: pass --bin-dir")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default="100MB", help="100MB, 1GB, 5GB (approximate)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    parser.add_argument("--user", default=os.environ.get("PGUSER", "postgres"))
    parser.add_argument("--jobs", type=int, default=0, help="databases generated concurrently (default: cores)")
    parser.add_argument("--force", action="store_true", help="regenerate even when the data is current")
    parser.add_argument("--no-report", action="store_true", help="skip the dump size and gzip ratio report")
    parser.add_argument("--bin-dir", default="", help="folder with pg_dumpall (default: newest installed)")
    args = parser.parse_args(argv)
    target = Target(args.host, args.port, args.user, os.environ.get("PGPASSWORD", ""))
    clock = time.monotonic()
    generate(target, args.size, args.seed, args.jobs, args.force)
    print(f"Generated in {time.monotonic() - clock:.0f} s")
    if not args.no_report:
        report(target, find_pg_dumpall(args.bin_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
