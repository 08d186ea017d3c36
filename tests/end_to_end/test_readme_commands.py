"""The README's two commands, run as a newcomer would on a Debian or Ubuntu machine whose system Python refuses
`pip install` (PEP 668, externally managed).

Both run in a copy of this checkout (its tracked and untracked-but-not-ignored files as they are in the working
tree, so uncommitted work is what gets tried), with `python3` on PATH being /usr/bin/python3 and no other Python
reachable. They share the copy's `.venv`, as they would in one checkout: the first command creates it, the second
reuses it. The second is limited to one small test file by appending pytest arguments, as the README documents.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
TRY_IT = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/pgdr --config examples/demo/pgdr.toml demo"
TEST_IT = "bash tests/run.sh"
SMALL_TEST_FILE = "tests/unit/test_doc_links.py"
DEMO_CONFIG = "examples/demo/pgdr.toml"
# What would let the commands reach another Python or its packages, or change what pip and pytest do.
SCRUBBED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYENV_VERSION", "PIP_BREAK_SYSTEM_PACKAGES",
            "PIP_USER", "PIP_REQUIRE_VIRTUALENV", "PIP_NO_CACHE_DIR", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
            "PYTEST_CURRENT_TEST", "PYTEST_TIMEOUT")


def readme_commands() -> list[str]:
    """The first two ```bash blocks of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL)[:2]]


def test_the_readme_opens_with_the_two_commands_tried_here():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_commands() == [TRY_IT, TEST_IT]
    assert text.index(TEST_IT) < text.index("\n## "), "the two commands come before the first section"
    assert "exec bash tests/run.sh" in (ROOT / ".ci" / "run").read_text(), "CI runs the README's test command"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def same_python(folder: str) -> bool:
    """True when the folder has no python3, or the system's itself (not a venv's, whose packages differ)."""
    candidate = Path(folder) / "python3"
    if (Path(folder).parent / "pyvenv.cfg").exists():
        return False
    return not candidate.exists() or candidate.resolve() == SYSTEM_PYTHON.resolve()


def newcomer_environment(bin_dir: Path) -> dict[str, str]:
    """This machine's environment, with /usr/bin/python3 as the only python3 on PATH (pyenv's shims dropped)."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in SCRUBBED and not name.startswith("PGDR_")}
    folders = [folder for folder in os.environ.get("PATH", "").split(os.pathsep) if folder and same_python(folder)]
    environment["PATH"] = os.pathsep.join([str(bin_dir), *folders, "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return environment


@pytest.fixture(scope="module")
def system_python() -> Path:
    """/usr/bin/python3, shown to refuse `pip install` as a stock Debian 12+ or Ubuntu 23.04+ one does."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3: this machine is not the Debian/Ubuntu the README's commands are tried on")
    stdlib = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if not (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
        pytest.skip(f"/usr/bin/python3 is not externally managed (no {stdlib}/EXTERNALLY-MANAGED, PEP 668): the "
                    "README's commands are not tried against a system pip that refuses to install")
    environment = {name: value for name, value in os.environ.items() if name not in SCRUBBED}
    refused = subprocess.run([str(SYSTEM_PYTHON), "-m", "pip", "install", "--dry-run", "six"], capture_output=True,
                             text=True, env=environment, timeout=120)
    if "No module named pip" in refused.stderr:
        pytest.skip("/usr/bin/python3 has no pip, so its PEP 668 refusal cannot be shown (apt-get install python3-pip)")
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stdout + refused.stderr, (
        refused.stdout + refused.stderr)
    return SYSTEM_PYTHON


@pytest.fixture(scope="module")
def checkout(system_python: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the working tree the postgres OS user can traverse, and the newcomer's environment to run in it."""
    folder = Path(tempfile.mkdtemp(prefix="pgdr-readme-"))
    folder.chmod(0o755)
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, folder / name
        if source.is_symlink() or source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    bin_dir = folder.parent / f"{folder.name}-bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(system_python)
    environment = newcomer_environment(bin_dir)
    environment["PGDR_POSTGRES__PORT"] = str(free_port())  # the demo's 54329 may be taken by someone's own demo
    yield folder, environment
    if (folder / ".venv" / "bin" / "pgdr").exists():  # the demo leaves its cluster running
        subprocess.run([str(folder / ".venv" / "bin" / "pgdr"), "--config", DEMO_CONFIG, "down"], cwd=folder,
                       env=environment, capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(bin_dir, ignore_errors=True)


def run_command(command: str, checkout: tuple[Path, dict[str, str]]) -> subprocess.CompletedProcess[str]:
    folder, environment = checkout
    return subprocess.run(["bash", "-c", command], cwd=folder, env=environment, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500)


def tail(output: str, lines: int = 60) -> str:
    return "\n".join(output.splitlines()[-lines:])


@pytest.mark.timeout(1800)
def test_the_try_it_command_installs_into_a_venv_and_runs_the_demo(checkout):
    result = run_command(TRY_IT, checkout)
    assert result.returncode == 0, tail(result.stdout)
    assert "✅ Demo complete: recovered in" in result.stdout, tail(result.stdout)
    assert "externally-managed-environment" not in result.stdout


@pytest.mark.timeout(1800)
def test_the_test_it_command_runs_pytest_in_the_venv_with_arguments_appended(checkout, system_python):
    version = subprocess.run([str(system_python), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    result = run_command(f"{TEST_IT} {SMALL_TEST_FILE}", checkout)
    assert result.returncode == 0, tail(result.stdout)
    passed = re.search(r"=+ (\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 1, tail(result.stdout)
    assert f"Python {version}" in result.stdout, "pytest ran on the system Python's venv"
    assert f"rootdir: {checkout[0]}" in result.stdout
    assert "check_skips:" in result.stdout, "the skip check ran after pytest"
