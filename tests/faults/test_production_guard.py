"""The production guard: with environment = "production", destructive commands (clean soft/hard, restore --clean,
recover --clean) refuse `--yes` alone (exit 3) and need `--yes --i-mean-production` from automation, or the
cluster name typed at the prompt on a terminal; a wrong name refuses and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from end_to_end.e2e_helpers import run_in_terminal
from faults.fault_helpers import assert_clean_failure, cluster_project, server_state, tree_snapshot
from harness import count_orders, load_sample_data

NAME = "orders-db"
PRODUCTION = f'environment = "production"\nname = "{NAME}"\n'
PROMPT = r"Type the cluster name to confirm: "


@pytest.fixture(scope="module")
def production() -> Iterator:
    with cluster_project(config_prefix=PRODUCTION) as project:
        load_sample_data(project, 300)
        project.ok("backup")
        with project.connect("demo") as connection:
            connection.execute("DELETE FROM orders WHERE id > 100")
        yield project


@pytest.mark.parametrize("command", [("clean", "soft", "--yes"), ("clean", "hard", "--yes"),
                                     ("restore", "latest", "--clean", "--yes"), ("recover", "--clean", "--yes")],
                         ids=" ".join)
def test_yes_alone_is_refused_with_exit_3_on_a_production_cluster(production, command):
    state, tree = server_state(production), tree_snapshot(production.backups)
    result = production.pgdr(*command)
    assert_clean_failure(result, 3, f"on PRODUCTION cluster {NAME} without confirmation")
    assert "--yes --i-mean-production" in result.stderr
    assert server_state(production) == state
    assert tree_snapshot(production.backups) == tree, "a safety backup was taken for a refused restore"


def test_a_wrong_cluster_name_typed_at_the_prompt_is_refused_and_changes_nothing(production):
    state = server_state(production)
    status, screen = run_in_terminal(production, ["clean", "soft"], {PROMPT: "orders-db-staging"})
    assert status == 3, screen
    assert f"PRODUCTION cluster {NAME}" in screen and "Drop databases demo" in screen
    assert server_state(production) == state


def test_the_right_cluster_name_typed_at_the_prompt_lets_restore_clean_run(production):
    status, screen = run_in_terminal(production, ["restore", "latest", "--clean"], {PROMPT: NAME})
    assert status == 0, screen
    assert "Database restored successfully" in screen
    assert count_orders(production) == 300


def test_yes_with_i_mean_production_runs_and_says_so(production):
    with production.connect("demo") as connection:
        connection.execute("DELETE FROM orders WHERE id > 100")
    restored = production.ok("restore", "latest", "--clean", "--yes", "--i-mean-production")
    assert f"PRODUCTION cluster {NAME}" in restored.stderr and "--i-mean-production" in restored.stderr
    assert count_orders(production) == 300
    production.ok("clean", "soft", "--yes", "--i-mean-production")
    assert server_state(production)["databases"] == ["postgres"]
