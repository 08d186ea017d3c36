"""pgdr schedule print: systemd units that parse (and pass `systemd-analyze verify` where it exists) and crontab
lines with five time fields, both with the absolute paths of this install and config."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from end_to_end.ops_helpers import set_config
from harness import Project

CALENDARS = {"backup": "*-*-* 02:00:00", "prune": "*-*-* 03:00:00", "drill": "*-*-01 04:00:00",
             "check": "*-*-* *:15:00"}


def split_units(text: str) -> dict[str, str]:
    parts = re.split(r"^# ---- (\S+) ----$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def assert_runs_this_install(words: list[str], project: Project) -> None:
    program = Path(words[0])
    assert program.is_absolute() and os.access(program, os.X_OK), words
    if program.name != "pgdr":
        assert words[1:3] == ["-m", "pgdr"], words
    config = words[words.index("--config") + 1]
    assert config == str(project.config.resolve())


def test_systemd_units_parse_and_verify(project: Project, workdir: Path):
    set_config(project, "[retention]\nenabled = true\n")
    text = project.ok("schedule", "print", "--systemd").stdout
    units = split_units(text)
    assert sorted(units) == sorted(f"pgdr-{job}.{kind}" for job in CALENDARS for kind in ("service", "timer"))
    for job, calendar in CALENDARS.items():
        service, timer = parse_unit(units[f"pgdr-{job}.service"]), parse_unit(units[f"pgdr-{job}.timer"])
        assert service.sections() == ["Unit", "Service"]
        assert service["Service"]["Type"] == "oneshot"
        words = service["Service"]["ExecStart"].split()
        assert_runs_this_install(words, project)
        assert job in words
        assert timer.sections() == ["Unit", "Timer", "Install"]
        assert timer["Timer"]["OnCalendar"] == calendar
        assert timer["Timer"]["Unit"] == f"pgdr-{job}.service"
        assert timer["Install"]["WantedBy"] == "timers.target"
    assert "--max-age 26h --max-drill-age 35d" in units["pgdr-check.service"]

    folder = workdir / "units"
    project.ok("schedule", "print", "--systemd", "--dir", str(folder))
    assert sorted(path.name for path in folder.iterdir()) == sorted(units)
    for name, body in units.items():
        assert (folder / name).read_text().strip() == body.strip()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: unit files were parsed, not verified by systemd "
                    "(apt-get install systemd)")
    for calendar in CALENDARS.values():
        subprocess.run([analyze, "calendar", calendar], check=True, capture_output=True)
    verified = subprocess.run([analyze, "verify", *sorted(str(path) for path in folder.iterdir())],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_crontab_lines_have_five_time_fields_and_absolute_paths(project: Project):
    lines = [line for line in project.ok("schedule", "print", "--cron").stdout.splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == 3, "no prune line while retention is not enabled"
    for line in lines:
        fields = line.split()
        minute, hour, day, month, weekday = fields[:5]
        assert all(re.fullmatch(r"[\d*]+", value) for value in (minute, hour, day, month, weekday)), line
        assert_runs_this_install(fields[5:], project)
        assert "--quiet" in fields
    assert lines[0].startswith("0 2 * * * ") and lines[0].endswith(" backup")
    assert lines[1].startswith("0 4 1 * * ") and "drill --from local" in lines[1]
    assert lines[2].startswith("15 * * * * ") and " check --max-age 26h" in lines[2]


def test_the_console_script_names_itself(project: Project):
    installed = Path(sysconfig.get_path("scripts")) / "pgdr"  # the venv's bin, which tests/run.sh does not put on PATH
    script = str(installed) if os.access(installed, os.X_OK) else shutil.which("pgdr")
    if script is None:
        pytest.skip("no pgdr console script on PATH: the program path written into crontab lines is untested "
                    "(pip install -e .)")
    result = subprocess.run([script, "--config", str(project.config), "schedule", "print", "--cron"],
                            capture_output=True, text=True, env=project.environment, cwd=project.root)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line and not line.startswith("#"))
    program = Path(line.split()[5])
    assert program.name == "pgdr" and program.is_absolute() and os.access(program, os.X_OK)


def test_one_format_must_be_chosen(project: Project):
    assert project.pgdr("schedule", "print").returncode == 2
    assert project.pgdr("schedule", "print", "--systemd", "--cron").returncode == 2
