"""The split restore's pure parts: the archive's table of contents read from `pg_restore --list`, the passes
planned from it, the pg_restore argv of each pass, which failures are a parallel race, how a failure is described,
and run_each (a failed task stops no other).

The listing below is trimmed from `pg_restore --list --verbose` of a real archive (PostgreSQL 15): two extension
configuration tables (their TABLE entries are not in the archive: CREATE EXTENSION makes them), a partitioned
table with an index attached to its partition's index, a foreign key and a comment on it. Two lines are shaped
the way hostile names make them: an INDEX in a schema named ATTACH, and a TABLE in a schema named DATA.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgdr.concurrency import Sessions, run_each
from pgdr.errors import RestoreFailed, StageFailed
from pgdr.formats.psql_feed import describe_psql_error
from pgdr.formats.split import (
    RestorePass,
    conninfo_dbname,
    drop_statements,
    failure_message,
    is_race,
    listed_ids,
    parse_toc,
    pass_argv,
    pg_restore_argv,
    plan_passes,
    read_plan,
    toc_argv,
)
from pgdr.run import stream

pytestmark = pytest.mark.timeout(60)

VERBOSE_LISTING = """;
; Archive created at 2026-12-02 15:50:14 UTC
;     dbname: d1
;     TOC Entries: 110
;
; Selected TOC Entries:
;
3508; 0 0 ENCODING - ENCODING
7; 2615 16385 SCHEMA - pgdr_exp postgres
2; 3079 16386 EXTENSION - pgdr_exp_cfg
;\tdepends on: 7
225; 1259 16447 TABLE public orders postgres
226; 1259 16475 TABLE public orders_1 postgres
;\tdepends on: 225
227; 1259 16483 TABLE public orders_1a postgres
;\tdepends on: 226
228; 1259 16490 TABLE DATA odd postgres
3267; 0 0 TABLE ATTACH public orders_1a postgres
;\tdepends on: 227 226
3258; 0 16387 TABLE DATA pgdr_exp topology postgres
;\tdepends on: 216
3259; 0 16394 TABLE DATA pgdr_exp layer postgres
;\tdepends on: 217
3502; 0 16483 TABLE DATA public orders_1a postgres
;\tdepends on: 227
3506; 0 16490 TABLE DATA DATA odd postgres
;\tdepends on: 228
3300; 2606 16451 CONSTRAINT public orders orders_pkey postgres
;\tdepends on: 225 225
3297; 1259 16530 INDEX public orders_amount_idx postgres
;\tdepends on: 225
3301; 1259 16531 INDEX public orders_1_amount_idx postgres
;\tdepends on: 226 3297 226
3337; 0 0 INDEX ATTACH public orders_1_amount_idx postgres
;\tdepends on: 3301 3297 226 225
3400; 1259 16700 INDEX ATTACH weird postgres
;\tdepends on: 228
3401; 0 0 COMMENT public INDEX weird postgres
;\tdepends on: 3400
3355; 2606 16452 FK CONSTRAINT public orders orders_region_customer_fkey postgres
;\tdepends on: 3300 225
3513; 0 0 COMMENT public CONSTRAINT orders_region_customer_fkey ON orders postgres
;\tdepends on: 3355
3520; 0 0 SECURITY LABEL public something that waits for an attach postgres
;\tdepends on: 3337
"""
DATA_IDS = {3258, 3259, 3502, 3506}
POST_DATA_IDS = {3300, 3297, 3301, 3337, 3400, 3401, 3355, 3513, 3520}

DEADLOCK = """pg_restore: error: could not execute query: ERROR:  deadlock detected
DETAIL:  Process 8050 waits for AccessExclusiveLock on relation 18351 of database 18302; blocked by process 8052.
Process 8052 waits for AccessShareLock on relation 18429 of database 18302; blocked by process 8050.
HINT:  See server log for query details.
Command was: ALTER INDEX public.orders_2_amount_idx ATTACH PARTITION public.orders_2a_amount_idx;


pg_restore: error: a worker process died unexpectedly
"""
EXTENSION_ORDER = """pg_restore: error: COPY failed for table "layer": ERROR:  insert or update on table "layer" \
violates foreign key constraint "layer_topology_id_fkey"
DETAIL:  Key (topology_id)=(1) is not present in table "topology".
pg_restore: error: a worker process died unexpectedly
"""
UNIQUE = ('pg_restore: error: COPY failed for table "t": ERROR:  duplicate key value violates unique constraint '
          '"t_pkey"\npg_restore: error: a worker process died unexpectedly\n')
SEARCH_PATH = """pg_restore: error: could not execute query: ERROR:  function g(integer) does not exist
LINE 1: SELECT g($1)
               ^
HINT:  No function matches the given name and argument types. You might need to add explicit type casts.
QUERY:  SELECT g($1)
CONTEXT:  SQL function "f" during inlining
Command was: CREATE INDEX t_f ON public.t USING btree (public.f(a));


pg_restore: error: a worker process died unexpectedly
"""


def ids(step: RestorePass) -> list[int]:
    return [entry.dump_id for entry in step.entries]


def test_the_listing_is_read_with_dependencies_and_an_id_listed_twice_counts_once() -> None:
    toc = parse_toc(VERBOSE_LISTING + "3337; 0 0 INDEX ATTACH public again postgres\n")
    by_id = {entry.dump_id: entry for entry in toc}
    assert len(toc) == len(by_id) == 21
    assert by_id[3337].depends_on == (3301, 3297, 226, 225)
    assert by_id[3337].text == "INDEX ATTACH public orders_1_amount_idx postgres"
    assert by_id[7].depends_on == () and by_id[3508].catalog == 0 and by_id[3300].catalog == 2606
    assert listed_ids("3258; 0 16387 TABLE DATA pgdr_exp topology postgres\n;comment\n12; 0 0 X\n") == {3258, 12}


def test_a_description_is_told_from_a_schema_named_like_its_second_word() -> None:
    by_id = {entry.dump_id: entry for entry in parse_toc(VERBOSE_LISTING)}
    assert by_id[3337].is_entry("INDEX ATTACH", 0) and not by_id[3400].is_entry("INDEX ATTACH", 0)
    assert by_id[3400].is_entry("INDEX", 1259)
    assert by_id[3506].is_entry("TABLE DATA", 0) and not by_id[228].is_entry("TABLE DATA", 0)


def test_the_passes_keep_the_racing_steps_apart_and_every_entry_after_what_it_depends_on() -> None:
    plan = plan_passes(parse_toc(VERBOSE_LISTING), DATA_IDS, POST_DATA_IDS)
    assert [(step.name, step.parallel, step.section) for step in plan] == [
        ("pre-data", False, "pre-data"),
        ("extension configuration data", False, None),
        ("data", True, None),
        ("post-data", True, None),
        ("index attach", False, None),
        ("foreign keys", True, None),
    ]
    assert ids(plan[1]) == [3258, 3259]  # the archive's order: pg_dump's foreign-key order of the config tables
    assert ids(plan[2]) == [3502, 3506]
    assert ids(plan[3]) == [3300, 3297, 3301, 3400, 3401]
    assert ids(plan[4]) == [3337, 3520]  # the label waits for the attach it depends on
    assert ids(plan[5]) == [3355, 3513]  # the comment on the key comes with the key
    listed = [dump_id for step in plan for dump_id in ids(step)]
    assert sorted(listed) == sorted(DATA_IDS | POST_DATA_IDS), "an entry left out or restored twice"
    assert plan[4].list_text() == ("3337; 0 0 INDEX ATTACH public orders_1_amount_idx postgres\n"
                                   "3520; 0 0 SECURITY LABEL public something that waits for an attach postgres\n")


def test_a_dependency_chain_moves_every_later_entry_to_the_latest_pass() -> None:
    listing = ("20; 0 0 COMMENT - x postgres\n;\tdepends on: 21\n"  # listed before what it depends on
               "21; 0 0 COMMENT - y postgres\n;\tdepends on: 22\n"
               "22; 2606 1 FK CONSTRAINT public t fk postgres\n;\tdepends on: 5\n"
               "23; 1259 2 INDEX public i postgres\n")
    plan = plan_passes(parse_toc(listing), set(), {20, 21, 22, 23})
    assert [(step.name, ids(step)) for step in plan] == [("pre-data", []), ("post-data", [23]),
                                                         ("foreign keys", [20, 21, 22])]


def test_an_archive_without_extension_data_or_partitions_has_three_passes() -> None:
    listing = "5; 1259 1 TABLE public t postgres\n6; 0 1 TABLE DATA public t postgres\n;\tdepends on: 5\n" \
              "7; 1259 2 INDEX public t_i postgres\n;\tdepends on: 5\n"
    assert [step.name for step in plan_passes(parse_toc(listing), {6}, {7})] == ["pre-data", "data", "post-data"]


def test_one_job_restores_the_whole_archive_in_one_pg_restore() -> None:
    [whole] = read_plan("/nowhere/pg_restore", Path("/nowhere/db-001.dump"), 1)  # no listing is read
    argv = pass_argv("pg_restore", Path("/b/db-001.dump"), "app", whole, 1, None, first=True)
    assert argv == ["pg_restore", "--exit-on-error", "--no-password", "--jobs=1", "--dbname=dbname='postgres'",
                    "--create", "/b/db-001.dump"]


def test_pass_argv_creates_the_database_in_the_first_pass_and_connects_to_it_after() -> None:
    archive = Path("/b/db-002.dump")
    pre, data = RestorePass("pre-data", False, section="pre-data"), RestorePass("data", True, entries=())
    assert pass_argv("pg_restore", archive, "app", pre, 4, None, first=True) == [
        "pg_restore", "--exit-on-error", "--no-password", "--jobs=1", "--dbname=dbname='postgres'", "--create",
        "--section=pre-data", str(archive)]
    assert pass_argv("pg_restore", archive, "app", data, 4, Path("/t/pass-2.list"), first=False) == [
        "pg_restore", "--exit-on-error", "--no-password", "--jobs=4", "--dbname=dbname='app'",
        "--use-list=/t/pass-2.list", str(archive)]
    for existing in ("postgres", "template1"):  # restored into, never created
        argv = pass_argv("pg_restore", archive, existing, pre, 4, None, first=True)
        assert "--create" not in argv and f"--dbname=dbname='{existing}'" in argv


def test_the_serial_redo_recreates_the_database_from_another_one() -> None:
    assert pg_restore_argv("pg_restore", Path("/b/x.dump"), "app", 1) == [
        "pg_restore", "--exit-on-error", "--no-password", "--jobs=1", "--dbname=dbname='postgres'", "--create",
        "/b/x.dump"]
    assert "--dbname=dbname='template1'" in pg_restore_argv("pg_restore", Path("/b/x.dump"), "postgres", 1)
    assert drop_statements("app") == ['ALTER DATABASE "app" IS_TEMPLATE false',
                                      'DROP DATABASE IF EXISTS "app" WITH (FORCE)']
    assert drop_statements("template1") == ['ALTER DATABASE "template1" IS_TEMPLATE false',
                                            'DROP DATABASE IF EXISTS "template1" WITH (FORCE)']


@pytest.mark.parametrize("name", ["app", "host=elsewhere port=1", "it's", "back\\slash", "sp ace", "é'\\'x"])
def test_a_database_name_stays_a_name_in_the_connection_string(name: str) -> None:
    assert conninfo_to_dict(conninfo_dbname(name)) == {"dbname": name}


def test_toc_argv_lists_a_section_or_every_entry_with_its_dependencies() -> None:
    assert toc_argv("pg_restore", Path("/b/x.dump")) == ["pg_restore", "--list", "--verbose", "/b/x.dump"]
    assert toc_argv("pg_restore", Path("/b/x.dump"), "data") == ["pg_restore", "--list", "--section=data", "/b/x.dump"]


def test_only_the_races_of_a_parallel_restore_are_redone_serially() -> None:
    for tail in (DEADLOCK, EXTENSION_ORDER, UNIQUE):
        assert is_race(StageFailed("pg_restore app (data)", "exit status 1", tail))
    assert not is_race(StageFailed("pg_restore app (post-data)", "exit status 1", SEARCH_PATH))
    # the first ERROR decides: a deadlock among the errors the failure causes afterwards is not the cause
    assert not is_race(StageFailed("pg_restore app", "exit status 1", SEARCH_PATH + DEADLOCK))
    assert not is_race(StageFailed("pg_restore app", "exit status 1", "pg_restore: error: could not connect\n"))
    assert not is_race(RestoreFailed("deadlock detected"))


def test_a_failure_shows_its_first_error_and_statement_not_the_dead_worker() -> None:
    assert describe_psql_error(StageFailed("pg_restore app", "exit status 1", DEADLOCK)) == (
        "deadlock detected (statement: ALTER INDEX public.orders_2_amount_idx ATTACH PARTITION "
        "public.orders_2a_amount_idx;)")
    assert describe_psql_error(StageFailed("pg_restore app", "exit status 1", SEARCH_PATH)) == (
        "function g(integer) does not exist (statement: CREATE INDEX t_f ON public.t USING btree (public.f(a));)")
    assert describe_psql_error(StageFailed("pg_restore app", "exit status 1", EXTENSION_ORDER)) == (
        'insert or update on table "layer" violates foreign key constraint "layer_topology_id_fkey"')
    over_lines = ('pg_restore: error: could not execute query: ERROR:  deadlock detected\nDETAIL:  Process 1 waits.\n'
                  'Command was: ALTER TABLE "public"."orders"\n    ADD CONSTRAINT "fk" FOREIGN KEY ("a") REFERENCES '
                  '"public"."c"("a");\n\n\npg_restore: error: a worker process died unexpectedly\n')
    assert describe_psql_error(StageFailed("pg_restore app", "exit status 1", over_lines)) == (
        'deadlock detected (statement: ALTER TABLE "public"."orders" ADD CONSTRAINT "fk" FOREIGN KEY ("a") '
        'REFERENCES "public"."c"("a");)')


def test_the_failure_message_names_the_failed_and_the_complete_databases() -> None:
    message = failure_message({"app": StageFailed("pg_restore app (post-data)", "exit status 1", SEARCH_PATH)},
                              ["other", "postgres"])
    assert message == ("database app failed in pg_restore app (post-data): function g(integer) does not exist "
                       "(statement: CREATE INDEX t_f ON public.t USING btree (public.f(a));). Partially restored: app; "
                       "restored completely: other, postgres")
    assert failure_message({"a": RestoreFailed("gone"), "b": RestoreFailed("too")}, []).endswith(
        "Partially restored: a, b; no database restored completely")


def test_run_each_lets_the_other_tasks_finish_after_one_fails() -> None:
    """jobs=2: `slow` runs a process that reads until its input closes, which happens only once `failing` has
    failed; a stop would kill it (StageFailed: killed by signal). `queued` starts only after one of them ended."""
    failing_done, started = threading.Event(), threading.Event()
    order: list[str] = []

    def failing(sessions: Sessions) -> None:
        started.wait(30)
        order.append("failing")
        failing_done.set()
        raise StageFailed("pg_restore app", "exit status 1", SEARCH_PATH)

    def slow(sessions: Sessions) -> None:
        with stream([sys.executable, "-c", "import sys; sys.stdin.read()"], stage="reader",
                    direction="write") as process:
            sessions.add(process)
            started.set()
            failing_done.wait(30)
            process.write(b"data")
        order.append("slow")

    def queued(sessions: Sessions) -> None:
        order.append("queued")

    outcomes = run_each([failing, slow, queued], jobs=2)
    assert isinstance(outcomes[0], StageFailed) and outcomes[1:] == [None, None]
    assert order[0] == "failing" and sorted(order[1:]) == ["queued", "slow"]


def test_run_each_stops_every_process_on_ctrl_c() -> None:
    """SIGINT (to the process: the main thread gets it) kills the running processes; run_each raises."""
    script = """
import os, signal, sys, threading
from pgdr.concurrency import run_each
from pgdr.run import stream
ready = threading.Event()
def reader(sessions):
    with stream([sys.executable, "-c", "import sys; sys.stdin.read()"], stage="reader", direction="write") as p:
        sessions.add(p)
        print(p.process.pid, flush=True)
        ready.set()
        p.process.wait()
        print("returncode", p.process.returncode, flush=True)
threading.Thread(target=lambda: (ready.wait(30), os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()
try:
    run_each([reader], jobs=1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = result.stdout.split()
    assert "interrupted" in lines and lines[lines.index("returncode") + 1] == "-9", result.stdout + result.stderr
