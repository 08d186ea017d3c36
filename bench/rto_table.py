"""Measure the RTO that docs/RUNBOOK.md quotes: `pgdr drill` on realistic data of a stated size.

For each size: a throw-away local project under the temp dir (default server settings, fsync on), `pgdr up` +
`pgdr init`, application-like tables (text, jsonb, numerics, timestamps, indexes) filled with generate_series
until the demo database reaches the size, `pgdr backup`, then `pgdr drill --json`. Prints the machine, then one
markdown row per size. The project is removed afterwards unless --keep.

    python3 bench/rto_table.py 10MB 100MB 1GB
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from pgdr.config import parse_size
from pgdr.ui import human_size

STEPS = ("up", "restore", "secrets", "init", "verify")
SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id bigserial PRIMARY KEY, name text NOT NULL, email text NOT NULL, country char(2) NOT NULL,
    created_at timestamptz NOT NULL, profile jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, status text NOT NULL,
    amount numeric(12, 2) NOT NULL, tax numeric(12, 2) NOT NULL, placed_at timestamptz NOT NULL,
    items jsonb NOT NULL, note text);
CREATE INDEX IF NOT EXISTS customers_email ON customers (email);
CREATE INDEX IF NOT EXISTS orders_customer ON orders (customer_id);
CREATE INDEX IF NOT EXISTS orders_placed_at ON orders (placed_at);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status, placed_at);
"""
CUSTOMERS = """
INSERT INTO customers (name, email, country, created_at, profile)
SELECT 'Customer ' || g, 'user' || g || '@example.' || (ARRAY['com', 'org', 'de', 'fr'])[1 + g %% 4],
       (ARRAY['DE', 'FR', 'US', 'GB', 'NL'])[1 + g %% 5], now() - g * interval '1 minute',
       jsonb_build_object('newsletter', g %% 3 = 0, 'tier', (ARRAY['free', 'pro', 'team'])[1 + g %% 3],
                          'tags', jsonb_build_array(md5(g::text), g %% 97))
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""
ORDERS = """
INSERT INTO orders (customer_id, status, amount, tax, placed_at, items, note)
SELECT 1 + (g * 7919) %% %(customers)s, (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + g %% 4],
       round((random() * 500)::numeric, 2), round((random() * 95)::numeric, 2),
       now() - g * interval '37 seconds',
       jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (g %% 5000), 'qty', 1 + g %% 5,
                                            'price', round((random() * 100)::numeric, 2)),
                         jsonb_build_object('sku', 'SKU-' || (g %% 733), 'qty', 1)),
       CASE WHEN g %% 3 = 0 THEN 'Deliver to ' || md5(g::text) || E'\\nring twice' END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_project(root: Path, port: int) -> dict[str, str]:
    passwords = {name: secrets.token_urlsafe(24) for name in
                 ("POSTGRES_PASSWORD", "POSTGRES_DEMO_USER_PASSWORD", "POSTGRES_DEMO_READONLY_PASSWORD")}
    (root / "pgdr.toml").write_text(f"""
[postgres]
mode = "local"
data_dir = ".pgdr/pgdata"
port = {port}
password = "POSTGRES_PASSWORD"

[backup]
dir = ".pgdr/backups"
compression = "gzip"
min_size = "1kB"

[secrets]
sources = ["dotenv"]
dotenv = ".env"

[[databases]]
name = "demo"
readwrite_user = {{ name = "demo_user", password = "POSTGRES_DEMO_USER_PASSWORD", connection_limit = 50 }}
readonly_user  = {{ name = "demo_readonly_user", password = "POSTGRES_DEMO_READONLY_PASSWORD", connection_limit = 20 }}
""")
    descriptor = os.open(root / ".env", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.writelines(f"{name}={value}\n" for name, value in passwords.items())
    return passwords


def pgdr(root: Path, *args: str) -> str:
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("PG", "POSTGRES_"))}
    result = subprocess.run([sys.executable, "-m", "pgdr", *args], cwd=root, env=environment, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"pgdr {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def load(connection: psycopg.Connection, target: int) -> tuple[int, int]:
    """Fill customers (1 per 20 orders) and orders in batches until tables and indexes reach target bytes."""
    connection.execute(SCHEMA)  # type: ignore[arg-type]
    orders = customers = 0
    batch = 2_000
    while data_size(connection) < target:
        connection.execute(CUSTOMERS, {"first": customers + 1, "last": customers + batch // 20})
        customers += batch // 20
        connection.execute(ORDERS, {"first": orders + 1, "last": orders + batch, "customers": customers})
        orders += batch
        batch = min(int(batch * 1.5), max(2_000, (target - data_size(connection)) // 700), 200_000)
    connection.execute("ANALYZE")
    return customers, orders


def data_size(connection: psycopg.Connection) -> int:
    """Bytes of the application's tables with their indexes and TOAST (the database's catalog not counted)."""
    row = connection.execute("SELECT pg_total_relation_size('customers') + pg_total_relation_size('orders')"
                             ).fetchone()
    assert row is not None
    return int(row[0])


def measure(size: str, keep: bool) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="pgdr-bench-"))
    root.chmod(0o755)  # the postgres OS user must reach the data dir inside
    port = free_port()
    try:
        passwords = write_project(root, port)
        pgdr(root, "up")
        pgdr(root, "init")
        with psycopg.connect(host="127.0.0.1", port=port, dbname="demo", user="demo_user",
                             password=passwords["POSTGRES_DEMO_USER_PASSWORD"], autocommit=True) as connection:
            customers, orders = load(connection, parse_size(size))
            data_bytes = data_size(connection)
            server = str(connection.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        started = time.monotonic()
        pgdr(root, "backup")
        backup_seconds = time.monotonic() - started
        [record] = json.loads(pgdr(root, "list", "--json"))
        report = json.loads(pgdr(root, "drill", "--json"))
        return {"size": size, "data_bytes": data_bytes, "rows": customers + orders, "backup_bytes": record["size"],
                "backup_seconds": round(backup_seconds, 1), "steps": report["steps"], "rto": report["rto_seconds"],
                "outcome": report["outcome"], "server": server}
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            subprocess.run([sys.executable, "-m", "pgdr", "clean", "hard", "--yes"], cwd=root, capture_output=True,
                           check=False)
            shutil.rmtree(root, ignore_errors=True)


def machine() -> str:
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs, {int(memory) / 1024 / 1024:.0f} GiB RAM, {platform.system()} {platform.release()}"


def row(result: dict[str, object]) -> str:
    steps: dict[str, float] = result["steps"]  # type: ignore[assignment]
    cells = [f"{result['size']}", human_size(result["data_bytes"]), f"{result['rows']:,}",  # type: ignore[arg-type]
             human_size(result["backup_bytes"]), f"{result['backup_seconds']:.1f}",  # type: ignore[arg-type]
             *(f"{steps.get(step, 0.0):.1f}" for step in STEPS), f"**{result['rto']:.1f}**"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="+", help="database sizes, e.g. 10MB 100MB 1GB")
    parser.add_argument("--keep", action="store_true", help="keep the project folders")
    options = parser.parse_args()
    results = [measure(size, options.keep) for size in options.sizes]
    print(f"Machine: {machine()}; PostgreSQL {results[0]['server']}; {datetime.now(UTC):%Y-%m-%d} (UTC)\n")
    print("| target | table data | rows | backup (gzip) | backup s | up s | restore s | secrets s | init s | "
          "verify s | RTO s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(row(result))
    failed = [result["size"] for result in results if result["outcome"] != "ok"]
    if failed:
        raise SystemExit(f"drill failed for {failed}")


if __name__ == "__main__":
    main()
