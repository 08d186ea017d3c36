"""Start-up: every command pays for what it imports before it does anything, so each command imports only what it
uses (issue 17). Asserted on the import graph of a real `python -m pgdr ...` run, not on a time: which modules the
process has loaded when the command ends.

bench/ measures the time these imports cost against `python3 -c pass` (bench/startup.py).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pgdr import VERSION_LINE, __version__, cli
from pgdr.actions.listing import ARCHIVE_FOLDER
from pgdr.wal.archive import WAL_PREFIX

ROOT = Path(__file__).resolve().parents[2]

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
# what reading a WAL archive or talking to the server takes: a local list of plain backups needs none of it
WAL_AND_SERVER = ("pgdr.wal", "pgdr.streams", "pgdr.formats", "pgdr.postgres", "isal", "zstandard", "psycopg",
                  "pyrage")


def loaded_modules(tmp_path: Path, *arguments: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    modules_file = tmp_path / "modules.txt"
    completed = subprocess.run([sys.executable, "-c", PROBE, str(modules_file), *arguments], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
    assert modules_file.exists(), completed.stderr
    return set(modules_file.read_text().split()), completed


def of_package(modules: set[str], package: str) -> set[str]:
    return {name for name in modules if name == package or name.startswith(package + ".")}


def test_version_is_answered_before_typer_or_the_command_line_is_imported(tmp_path: Path) -> None:
    modules, completed = loaded_modules(tmp_path, "--version")
    assert completed.stdout == f"pgdr {__version__}\n"
    assert of_package(modules, "pgdr") == {"pgdr", "pgdr.entry"}
    for package in ("typer", "click", *HEAVY):
        assert not of_package(modules, package), f"pgdr --version imports {package}"


def test_the_console_script_is_the_entry_module_and_the_command_line_answers_the_same_version() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pgdr"] == "pgdr.entry:main"  # pgdr.cli:main would import typer before answering --version
    # a console script written by an older install still calls pgdr.cli:main: it answers the same line
    older_script = "import sys; sys.argv = ['pgdr', '--version']; from pgdr.cli import main; main()"
    completed = subprocess.run([sys.executable, "-c", older_script], capture_output=True, text=True, timeout=60,
                               check=True)
    assert completed.stdout == f"{VERSION_LINE}\n"


def test_the_command_line_annotations_are_objects_not_strings_typer_compiles_at_every_start() -> None:
    for function in (cli.global_options, cli.list_command, cli.restore_latest, cli.wal_timeline):
        annotations = inspect.get_annotations(function)
        assert annotations, function.__name__
        assert not [name for name, value in annotations.items() if isinstance(value, str)], function.__name__


def test_help_loads_no_configuration_database_or_storage_library(tmp_path: Path) -> None:
    modules, completed = loaded_modules(tmp_path, "--help")
    assert "Usage: pgdr" in completed.stdout
    assert "pgdr.cli" in modules
    assert not of_package(modules, "pgdr") - {"pgdr", "pgdr.cli", "pgdr.entry", "pgdr.errors"}
    for package in ("pydantic", "psycopg", "boto3", "botocore", "zstandard", "isal", "pyrage"):
        assert not of_package(modules, package), f"pgdr --help imports {package}"


@pytest.fixture
def project_with_local_backups(tmp_path: Path) -> Path:
    (tmp_path / "pgdr.toml").write_text('[postgres]\nmode = "local"\ndata_dir = "pgdata"\npassword = "PGDR_TEST_PW"\n'
                                        '[backup]\ndir = "backups"\ntargets = ["local"]\n')
    (tmp_path / "backups").mkdir()
    return tmp_path


def test_list_of_a_local_folder_loads_no_database_driver_codec_wal_reader_s3_client_or_progress_bar(
        project_with_local_backups: Path) -> None:
    modules, completed = loaded_modules(project_with_local_backups, "list")
    assert "No backups in local" in completed.stdout  # the command ran to its end
    assert "pgdr.actions.listing" in modules
    for package in ("boto3", "botocore", "rich.progress", "pgdr.storage.s3", "pgdr.runbooks", "pgdr.observe",
                    *WAL_AND_SERVER):
        assert not of_package(modules, package), f"pgdr list (local) imports {package}"


def test_list_of_a_local_folder_with_a_wal_archive_reads_it(project_with_local_backups: Path) -> None:
    """The WAL readers are skipped only when there is no archive: with a wal/ folder, list shows its window."""
    archive = project_with_local_backups / "backups" / "wal"
    archive.mkdir()
    (archive / "000000010000000000000001.gz").write_bytes(b"")
    modules, completed = loaded_modules(project_with_local_backups, "list", "--json")
    assert "pgdr.wal.reading" in modules
    assert json.loads(completed.stdout) == []  # no backups: nothing to carry the window, and no failure
    modules, completed = loaded_modules(project_with_local_backups, "list")
    assert "WAL archive (local):" in completed.stdout


def test_the_folder_list_looks_for_is_the_archive_s_own() -> None:
    assert ARCHIVE_FOLDER + "/" == WAL_PREFIX
