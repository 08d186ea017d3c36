"""Start-up: every command pays for what it imports before it does anything, so each command imports only what it
uses (issue 17). Asserted on the import graph of a real `python -m pgdr ...` run, not on a time: which modules the
process has loaded when the command ends.

bench/ measures the time these imports cost against `python3 -c pass`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs pgdr's entry point as `python -m pgdr` does, then writes the names of every loaded module to a file (stdout
# and stderr belong to the command).
PROBE = """
import runpy, sys
modules_file = sys.argv[1]
sys.argv = ["pgdr", *sys.argv[2:]]
try:
    runpy.run_module("pgdr", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
with open(modules_file, "w") as handle:
    handle.write("\\n".join(sorted(sys.modules)))
"""

HEAVY = ("pydantic", "psycopg", "boto3", "botocore", "rich", "zstandard", "isal", "pyrage", "dotenv", "tenacity",
         "prometheus_client", "importlib.metadata")


def loaded_modules(tmp_path: Path, *arguments: str) -> set[str]:
    modules_file = tmp_path / "modules.txt"
    completed = subprocess.run([sys.executable, "-c", PROBE, str(modules_file), *arguments], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
    assert modules_file.exists(), completed.stderr
    return set(modules_file.read_text().split())


def of_package(modules: set[str], package: str) -> set[str]:
    return {name for name in modules if name == package or name.startswith(package + ".")}


def test_version_loads_only_the_cli_and_its_errors(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, "--version")
    assert of_package(modules, "pgdr") == {"pgdr", "pgdr.cli", "pgdr.errors"}
    assert "typer" in modules  # the probe ran the real command line
    for package in HEAVY:
        assert not of_package(modules, package), f"pgdr --version imports {package}"


def test_help_loads_no_configuration_database_or_storage_library(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, "--help")
    assert "pgdr.cli" in modules
    assert not of_package(modules, "pgdr") - {"pgdr", "pgdr.cli", "pgdr.errors"}
    for package in ("pydantic", "psycopg", "boto3", "botocore", "zstandard", "isal", "pyrage"):
        assert not of_package(modules, package), f"pgdr --help imports {package}"


@pytest.fixture
def project_with_local_backups(tmp_path: Path) -> Path:
    (tmp_path / "pgdr.toml").write_text('[postgres]\nmode = "local"\ndata_dir = "pgdata"\npassword = "PGDR_TEST_PW"\n'
                                        '[backup]\ndir = "backups"\ntargets = ["local"]\n')
    (tmp_path / "backups").mkdir()
    return tmp_path


def test_list_of_a_local_folder_loads_no_database_driver_s3_client_or_progress_bar(
        project_with_local_backups: Path) -> None:
    modules = loaded_modules(project_with_local_backups, "list")
    assert "pgdr.actions.listing" in modules  # the command ran to its action
    for package in ("psycopg", "boto3", "botocore", "rich.progress", "pyrage", "pgdr.storage.s3",
                    "pgdr.postgres.inventory", "pgdr.runbooks"):
        assert not of_package(modules, package), f"pgdr list (local) imports {package}"
