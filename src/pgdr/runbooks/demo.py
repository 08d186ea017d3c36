"""pgdr demo: the whole runbook on the embedded default, as a newcomer's first run.

Generates any missing secret into the 0600 dotenv file, creates the local cluster, provisions it, writes
sample data as the application user, backs up, destroys the cluster (clean hard), and recovers:
up -> restore latest -> init -> verify. Refuses external mode: it destroys the cluster it works on.
"""

from __future__ import annotations

import time

from pgdr.actions import backup, clean, provision, server, verify
from pgdr.context import Context
from pgdr.errors import Refused
from pgdr.postgres.connect import session
from pgdr.runbooks import restore
from pgdr.secrets import generate_password, write_dotenv

SAMPLE_ROWS = 50_000


def ensure_demo_secrets(context: Context) -> None:
    missing = [name for name in context.settings.secret_names() if context.secrets.lookup(name) is None]
    if not missing:
        return
    values = {name: generate_password() for name in missing}
    write_dotenv(context.settings.secrets.dotenv, values)
    for name, value in values.items():
        context.secrets.remember(name, value, "dotenv")
    context.output.info(f"Generated {', '.join(missing)} into {context.settings.secrets.dotenv} (0600)")


def write_sample_data(context: Context) -> int:
    database = context.settings.databases[0]
    endpoint = context.superuser_endpoint(database.name).as_user(
        database.readwrite_user.name, context.secrets.get(database.readwrite_user.password))
    with session(endpoint) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS public.orders (id bigserial PRIMARY KEY, customer text NOT NULL, "
            "amount numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL DEFAULT now(), details jsonb)"
        )
        connection.execute(
            "INSERT INTO public.orders (customer, amount, details) "
            "SELECT 'customer-' || (g %% 977), round((random() * 1000)::numeric, 2), "
            "jsonb_build_object('items', g %% 7, 'note', md5(g::text)) FROM generate_series(1, %s) AS g",
            (SAMPLE_ROWS,),
        )
        row = connection.execute("SELECT count(*) FROM public.orders").fetchone()
    return int(row[0]) if row else 0


def run_demo(context: Context) -> None:
    if not context.is_local:
        raise Refused("the demo destroys the cluster it runs on, so it only runs in local mode",
                      "use examples/demo/pgdr.toml (postgres.mode = \"local\")")
    if not context.settings.databases:
        raise Refused("the demo needs at least one [[databases]] entry", "use examples/demo/pgdr.toml")
    ensure_demo_secrets(context)
    context.output.step("1/4 Set up: start a local cluster, provision it, write sample data")
    server.up(context)
    provision.init(context)
    rows = write_sample_data(context)
    context.output.success(f"Sample data written ({rows} rows in {context.settings.databases[0].name}.orders)")
    context.output.step("2/4 Back up")
    backup.backup(context, targets=["local"])
    context.output.step("3/4 Disaster: delete the whole cluster (clean hard)")
    clean.clean_hard(context)
    context.output.step("4/4 Recover: up, restore latest, init, verify")
    started = time.monotonic()
    server.up(context)
    restore.restore(context, source="local")
    provision.init(context)
    verify.verify(context)
    context.output.success(f"Demo complete: recovered in {time.monotonic() - started:.1f}s (RTO of this demo)")
