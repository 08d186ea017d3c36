"""Pure parts of the operations features: periods, their config, metrics format, check rules, schedule text."""

from __future__ import annotations

import configparser
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pgdr import metrics
from pgdr.actions import schedule
from pgdr.actions.check import backup_problems, drill_problems
from pgdr.artifact import make_key
from pgdr.catalog import BackupRecord
from pgdr.config import parse_settings
from pgdr.errors import ConfigError
from pgdr.notify import ping_url, where
from pgdr.periods import format_period, parse_period

NOW = datetime(2025, 11, 16, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("26h", 93600), ("35d", 35 * 86400), ("1d12h", 129600),
                                               ("90m", 5400), ("2w", 14 * 86400), ("45", 45), (30, 30)])
def test_periods_parse(text, seconds):
    assert parse_period(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "26 hours", "-1h", "1y"])
def test_bad_periods_are_refused(text):
    with pytest.raises(ValueError, match="not a length of time"):
        parse_period(text)


@given(st.integers(0, 10**8))
def test_format_period_round_trips(seconds):
    assert parse_period(format_period(seconds)) == seconds


def test_retention_overrides_per_target_and_errors_name_the_key():
    settings = parse_settings({"retention": {"enabled": True, "keep_last": 5, "s3": {"keep_monthly": 24}}})
    assert settings.retention.rules_for("s3") == {"keep_last": 5, "keep_daily": 7, "keep_weekly": 4,
                                                  "keep_monthly": 24, "keep_safety": 3}
    assert settings.retention.rules_for("local")["keep_monthly"] == 12
    with pytest.raises(ConfigError, match=r"\[retention\]\.keep_last"):
        parse_settings({"retention": {"keep_last": 0}})
    with pytest.raises(ConfigError, match=r"\[retention\]\.s3\.keep_dayly: unknown key"):
        parse_settings({"retention": {"s3": {"keep_dayly": 3}}})
    with pytest.raises(ConfigError, match="prune_after_backup = true needs enabled = true"):
        parse_settings({"retention": {"prune_after_backup": True}})


def test_notify_config():
    settings = parse_settings({"notify": {"healthchecks": "https://hc-ping.com/abc"}})
    assert settings.notify.healthchecks_url("backup") == "https://hc-ping.com/abc"
    assert settings.notify.healthchecks_url("check") == ""
    table = parse_settings({"notify": {"healthchecks": {"drill": "https://hc-ping.com/d"}}}).notify
    assert table.healthchecks_url("drill") == "https://hc-ping.com/d" and table.healthchecks_url("backup") == ""
    with pytest.raises(ConfigError, match=r"\[notify\]\.webhook: must be an http"):
        parse_settings({"notify": {"webhook": "hooks.slack.com/x"}})
    with pytest.raises(ConfigError, match=r"\[notify\]\.on"):
        parse_settings({"notify": {"on": ["always"]}})
    with pytest.raises(ConfigError, match="unknown operation 'bakup'"):
        parse_settings({"notify": {"healthchecks": {"bakup": "https://hc-ping.com/x"}}})


def test_notification_urls_are_shown_without_their_tokens():
    assert where("https://hooks.slack.com/services/T000/B000/XXXXSECRET") == "https://hooks.slack.com"
    assert where("https://user:token@example.com:8443/x?key=y") == "https://example.com:8443"
    assert ping_url("https://hc-ping.com/uuid/", "start") == "https://hc-ping.com/uuid/start"
    assert ping_url("https://hc-ping.com/uuid", "success") == "https://hc-ping.com/uuid"
    assert ping_url("https://hc-ping.com/uuid", "failure") == "https://hc-ping.com/uuid/fail"


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_keep_other_operations_and_the_last_success():
    samples = metrics.updated({}, "backup", True, 4.25, 1000.0, {"pgdr_backup_size_bytes": 123456})
    samples = metrics.updated(samples, "drill", True, 30.0, 2000.0, {"pgdr_drill_rto_seconds": 29.5})
    samples = metrics.updated(samples, "backup", False, 1.0, 3000.0)
    parsed = families(metrics.render(samples))
    backup = (("operation", "backup"),)
    assert parsed["pgdr_last_outcome"][backup] == 0
    assert parsed["pgdr_last_run_timestamp_seconds"][backup] == 3000
    assert parsed["pgdr_last_success_timestamp_seconds"][backup] == 1000
    assert parsed["pgdr_last_outcome"][(("operation", "drill"),)] == 1
    assert parsed["pgdr_backup_size_bytes"][()] == 123456
    assert parsed["pgdr_drill_rto_seconds"][()] == 29.5
    assert metrics.parse(metrics.render(samples)) == samples


def test_metrics_file_is_replaced_atomically_and_readable(tmp_path):
    path = tmp_path / "textfile" / "pgdr.prom"
    metrics.record(path, "backup", True, 2.0, {"pgdr_backup_size_bytes": 10}, finished=100.0)
    metrics.record(path, "restore", True, 3.0, finished=200.0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pgdr.prom"]
    assert os.stat(path).st_mode & 0o777 == 0o644
    parsed = families(path.read_text())
    assert set(parsed["pgdr_last_outcome"]) == {(("operation", "backup"),), (("operation", "restore"),)}
    lines = metrics.describe(metrics.summary(path), now=190.0)
    assert "Last backup: ok, 90s ago, took 2.0s" in lines


def test_a_damaged_metrics_file_is_rewritten(tmp_path):
    path = tmp_path / "pgdr.prom"
    path.write_text("this is { not prometheus\n")
    metrics.record(path, "check", False, 0.5, finished=100.0)
    assert families(path.read_text())["pgdr_last_outcome"][(("operation", "check"),)] == 0


def record(created: datetime, size: int = 5_000_000, verified: bool = True) -> BackupRecord:
    from pgdr.artifact import Manifest

    key = make_key(created, "gzip")
    manifest = Manifest(key=key.key, compression="gzip", size=size, sha256="0" * 64, uncompressed_size=size,
                        server_version="15", pg_dumpall_version="15", pgdr_version="0", started_at=created,
                        finished_at=created) if verified else None
    return BackupRecord(key, size, created, "local", manifest)


def codes(problems) -> list[str]:
    return [problem.code for problem in problems]


def test_backup_rules_name_each_reason():
    fresh = record(NOW - timedelta(hours=2))
    assert backup_problems([fresh], "local", NOW, 26 * 3600, 1_000_000) == []
    assert codes(backup_problems([], "local", NOW, 26 * 3600, 1)) == ["no_backup"]
    old = backup_problems([record(NOW - timedelta(hours=30))], "local", NOW, 26 * 3600, 1)
    assert codes(old) == ["too_old"] and "is 1d6h old (max 1d2h)" in old[0].message
    assert codes(backup_problems([record(NOW, size=500)], "local", NOW, 3600, 1000)) == ["too_small"]
    shrank = [record(NOW - timedelta(days=1), 10_000_000), record(NOW, 4_000_000)]
    assert codes(backup_problems(shrank, "local", NOW, 3600, 1)) == ["shrank"]
    assert codes(backup_problems([record(NOW, verified=False)], "local", NOW, 3600, 1)) == ["unverified"]


def test_drill_rules():
    recent = {"started_at": (NOW - timedelta(days=3)).isoformat(), "outcome": "ok", "key": "k"}
    assert drill_problems([], "local", NOW, None) == []
    assert drill_problems([recent], "local", NOW, 35 * 86400) == []
    assert codes(drill_problems([], "local", NOW, 35 * 86400)) == ["no_drill"]
    failed = {**recent, "outcome": "failed", "error": "backup is truncated"}
    problems = drill_problems([recent, failed], "local", NOW, None)
    assert codes(problems) == ["drill_failed"] and "backup is truncated" in problems[0].message
    assert codes(drill_problems([recent], "local", NOW, 86400)) == ["drill_too_old"]


def test_systemd_units_parse_and_quote(tmp_path):
    settings = parse_settings({"retention": {"enabled": True}, "backup": {"targets": ["local"]}},
                              tmp_path / "my config" / "pgdr.toml")
    units = schedule.systemd_units(settings, ["/opt/pgdr/bin/pgdr"], tmp_path / "my config" / "pgdr.toml")
    assert sorted(units) == sorted(f"pgdr-{job}.{kind}" for job in ("backup", "prune", "drill", "check")
                                   for kind in ("service", "timer"))
    service = configparser.ConfigParser(interpolation=None)
    service.read_string(units["pgdr-backup.service"])
    assert service["Service"]["ExecStart"] == (f'/opt/pgdr/bin/pgdr --config "{tmp_path}/my config/pgdr.toml" '
                                               "--wait 3600 backup")
    assert schedule.systemd_quote("50%") == "50%%"
    assert schedule.cron_quote("a b%") == "'a b\\%'"


def test_prune_job_only_when_retention_needs_it(tmp_path):
    config = tmp_path / "pgdr.toml"
    names = [job.name for job in schedule.jobs(parse_settings({}, config))]
    assert names == ["backup", "drill", "check"]
    after = parse_settings({"retention": {"enabled": True, "prune_after_backup": True}}, config)
    assert "prune" not in [job.name for job in schedule.jobs(after)]


def test_invocation_is_the_console_script_or_this_python(tmp_path):
    script = tmp_path / "bin" / "pgdr"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    assert schedule.invocation(str(script)) == [str(script.resolve())]
    module = schedule.invocation("/somewhere/pgdr/__main__.py")
    assert module == [str(Path(sys.executable).resolve()), "-m", "pgdr"]
