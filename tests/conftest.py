"""What every tier shares: the hypothesis profile, moto's fixtures (registered once, here, as a plugin), and the
fixtures that hand out a real PostgreSQL server or a pgdr project.

tests/ is the one import root of the test helpers: pytest puts it on sys.path for this rootdir conftest, and each
helper module is imported by its path from here, whichever tier imports it (`from harness import Project`,
`from end_to_end.e2e_helpers import fails`, `from faults.fault_helpers import cluster_project`). A fixture is never
imported: one used by a single tier lives in that tier's conftest.py, one used by several lives here or in a
module listed in pytest_plugins (pytest reads pytest_plugins from this rootdir conftest only).
tests/test_code_quality.py checks all three. Nothing is imported from a conftest.py: pytest loads every tier's
conftest.py under the one module name `conftest`, so `from conftest import` would find whichever was loaded last.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from harness import (
    Project,
    TestServer,
    clean_environment,
    free_port,
    project_config,
    run_as_postgres_kwargs,
    server_bin_dir,
    start_test_server,
    write_dotenv,
)

pytest_plugins = ["moto_fixtures"]

# No hypothesis test has a deadline: a busy 2-core CI machine makes any per-example time limit flaky, and a hang is
# caught by pytest-timeout. HYPOTHESIS_PROFILE picks another registered profile.
hypothesis_settings.register_profile("pgdr", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pgdr"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temporary folder the postgres OS user can traverse (pytest's own tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="pgdr-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_server(workdir: Path) -> Iterator[TestServer]:
    """A fresh, running PostgreSQL server for one test."""
    server = start_test_server(workdir)
    yield server
    server.stop()


@pytest.fixture
def project(workdir: Path) -> Iterator[Project]:
    """A local-mode project (cluster not created yet), secrets in a 0600 .env; the cluster is stopped after."""
    port = free_port()
    root = workdir / "project"
    root.mkdir()
    (root / "pgdr.toml").write_text(project_config(port))
    write_dotenv(root / ".env")
    created = Project(root, port, clean_environment())
    yield created
    data_dir = root / ".pgdr" / "pgdata"
    if (data_dir / "PG_VERSION").exists():
        subprocess.run([str(server_bin_dir() / "pg_ctl"), "-D", str(data_dir), "stop", "-m", "immediate", "-w"],
                       capture_output=True, check=False, **run_as_postgres_kwargs())  # type: ignore[arg-type]


@pytest.fixture
def running_project(project: Project) -> Project:
    """A project whose managed cluster is up and provisioned (pgdr up + pgdr init)."""
    project.ok("up")
    project.ok("init")
    return project
