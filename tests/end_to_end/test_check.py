"""pgdr check: exit 0 with `OK: ...`, or exit 15 with `CRITICAL: <reason>` for each reason, against real backups
and real drills."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from end_to_end.ops_helpers import fabricate, only_backup, path_of, write_history
from harness import Project
from pgdr.artifact import MANIFEST_SUFFIX

CHECK_FAILED = 15


def critical(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Run check expecting failure: (first line of stdout, problem codes from --json)."""
    result = project.pgdr("check", *args, env=env)
    assert result.returncode == CHECK_FAILED, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("CRITICAL: "), result.stdout
    as_json = project.pgdr("check", "--json", *args, env=env)
    assert as_json.returncode == CHECK_FAILED
    report = json.loads(as_json.stdout)
    same = report["summary"].split(" | ")[0] == first.split(" | ")[0]  # the age in the perfdata moves on
    assert report["status"] == "CRITICAL" and same, (report, first)
    return first, [problem["code"] for problem in report["problems"]]


def test_no_backup_is_critical_and_nagios_gets_exit_2(project: Project):
    first, codes = critical(project)
    assert first == "CRITICAL: no backup in local"
    assert codes == ["no_backup"]
    assert project.pgdr("check", "--nagios").returncode == 2
    assert project.pgdr("check", "--max-age", "soon").returncode == 2  # usage error, named
    assert "not a length of time" in project.pgdr("check", "--max-age", "soon").stderr


def test_fresh_backup_is_ok_and_each_backup_problem_is_named(running_project: Project):
    project = running_project
    project.ok("backup")
    newest = only_backup(project)

    ok = project.ok("check", "--max-age", "26h")
    assert ok.stdout.startswith(f"OK: newest backup local {newest} ")
    assert "| local_age=" in ok.stdout.splitlines()[0]
    assert project.ok("-q", "check").stdout == ""  # quiet: silent when all is well (cron mails nothing)
    assert json.loads(project.ok("check", "--json").stdout)["status"] == "OK"

    first, codes = critical(project, env={"PGDR_BACKUP__MIN_SIZE": "100MB"})
    assert codes == ["too_small"]
    assert first.startswith("CRITICAL: newest backup in local is ") and "under backup.min_size 100.0 MB" in first

    size = path_of(project, newest).stat().st_size
    bigger = fabricate(project, newest, datetime.now(UTC) - timedelta(days=1), padding=2 * size)
    first, codes = critical(project)
    assert codes == ["shrank"] and "under half the previous one" in first and newest in first
    path_of(project, bigger).unlink()
    path_of(project, bigger + MANIFEST_SUFFIX).unlink()

    manifest = path_of(project, newest + MANIFEST_SUFFIX)
    saved = manifest.read_bytes()
    manifest.unlink()
    first, codes = critical(project)
    assert codes == ["unverified"]
    assert first.startswith(f"CRITICAL: newest backup in local is unverified (no manifest): {newest} | ")
    manifest.write_bytes(saved)

    old = fabricate(project, newest, datetime.now(UTC) - timedelta(hours=30))
    path_of(project, newest).unlink()
    manifest.unlink()
    first, codes = critical(project, "--max-age", "26h")
    assert codes == ["too_old"]
    assert first.startswith("CRITICAL: newest backup in local is 1d6h") and "(max 1d2h)" in first and old in first


def test_drills_failed_too_old_or_missing_are_critical(running_project: Project):
    project = running_project
    project.ok("backup")
    newest = only_backup(project)

    first, codes = critical(project, "--max-drill-age", "35d")
    assert codes == ["no_drill"] and "no drill recorded in local" in first

    project.ok("drill")
    assert not list(project.backups.rglob("*.drill-lock")), "the drill leaves no marker behind"
    assert project.ok("check", "--max-drill-age", "35d").stdout.startswith("OK: ")

    broken = fabricate(project, newest, datetime.now(UTC) - timedelta(days=2))
    path_of(project, broken).write_bytes(path_of(project, broken).read_bytes()[:200])  # truncated
    assert project.pgdr("drill", "--file", broken).returncode != 0
    first, codes = critical(project)
    assert codes == ["drill_failed"]
    assert first.startswith("CRITICAL: last drill (") and f"{broken}) failed: " in first

    long_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    write_history(project, {"started_at": long_ago, "key": newest, "outcome": "ok", "steps": {}})
    assert project.ok("check").stdout.startswith("OK: ")  # drill age only checked when asked
    first, codes = critical(project, "--max-drill-age", "35d")
    assert codes == ["drill_too_old"] and "last drill in local was 40d" in first and "(max 35d)" in first
