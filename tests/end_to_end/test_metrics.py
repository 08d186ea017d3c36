"""Metrics: backup, drill and restore write Prometheus text format to the configured file (parsed here by
prometheus_client's own parser), other operations' series survive each update, and `pgdr status` shows them.

Times are checked by order, not against a clock: each run starts (its finish time minus its duration) after the
previous run finished, and a backup's run spans the start and end its manifest records.
"""

from __future__ import annotations

import json
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from end_to_end.ops_helpers import set_config
from harness import Project
from pgdr.artifact import MANIFEST_SUFFIX


def read_metrics(project: Project) -> dict[str, dict[str, float]]:
    """metric name -> {operation label or '': value}, every family a gauge."""
    found: dict[str, dict[str, float]] = {}
    text = (project.root / "textfile" / "pgdr.prom").read_text()
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels.get("operation", "")] = sample.value
    return found


def run_started(values: dict[str, dict[str, float]], operation: str) -> float:
    """When the operation's last run began: its finish time minus its duration (rounded to the millisecond)."""
    return values["pgdr_last_run_timestamp_seconds"][operation] - values["pgdr_duration_seconds"][operation] - 0.001


def test_backup_drill_restore_write_metrics_and_status_shows_them(running_project: Project):
    project = running_project
    set_config(project, '[metrics]\ntextfile = "textfile/pgdr.prom"\n')
    project.ok("backup")
    values = read_metrics(project)
    manifest = json.loads(next(project.backups.rglob("*" + MANIFEST_SUFFIX)).read_text())
    assert values["pgdr_last_outcome"] == {"backup": 1}
    assert values["pgdr_backup_size_bytes"][""] == manifest["size"]
    succeeded_at = values["pgdr_last_success_timestamp_seconds"]["backup"]
    assert succeeded_at == values["pgdr_last_run_timestamp_seconds"]["backup"]
    assert values["pgdr_duration_seconds"]["backup"] > 0
    dump_started = datetime.fromisoformat(manifest["started_at"]).timestamp()
    dump_finished = datetime.fromisoformat(manifest["finished_at"]).timestamp()
    assert run_started(values, "backup") <= dump_started <= dump_finished <= succeeded_at, "not the run's times"

    project.ok("drill")
    values = read_metrics(project)
    assert values["pgdr_last_outcome"] == {"backup": 1, "drill": 1}
    assert succeeded_at <= run_started(values, "drill"), "the drill's run does not follow the backup's"
    assert 0 < values["pgdr_drill_rto_seconds"][""] <= values["pgdr_duration_seconds"]["drill"]
    assert values["pgdr_backup_size_bytes"][""] == manifest["size"], "the backup's series are kept"
    assert values["pgdr_last_success_timestamp_seconds"]["backup"] == succeeded_at

    project.ok("restore", "latest", "--clean", "--yes")
    restored = read_metrics(project)
    assert restored["pgdr_last_outcome"]["restore"] == 1
    assert values["pgdr_last_run_timestamp_seconds"]["drill"] <= run_started(restored, "restore")

    project.ok("down")
    assert project.pgdr("backup").returncode != 0
    values = read_metrics(project)
    assert values["pgdr_last_outcome"]["backup"] == 0
    assert values["pgdr_last_success_timestamp_seconds"]["backup"] == succeeded_at
    assert values["pgdr_last_run_timestamp_seconds"]["backup"] > succeeded_at
    assert sorted(path.name for path in (project.root / "textfile").iterdir()) == ["pgdr.prom"]

    status = project.pgdr("status")
    assert "Last backup: FAILED" in status.stdout and "(last success" in status.stdout
    assert "Last drill: ok" in status.stdout and "Last drill RTO: " in status.stdout
    report = json.loads(project.pgdr("status", "--json").stdout)
    assert report["metrics"]["operations"]["backup"]["last_outcome"] == 0
