"""Prometheus metrics in a text file, for node_exporter's textfile collector.

After each backup, restore, recover, drill, prune and check (run from the CLI), the series of that operation
are updated in `[metrics] textfile`; the series of the other operations are read from the file and kept. The
file is replaced atomically (temporary file in the same folder, then rename), under an exclusive lock on the
folder so two pgdr runs cannot lose each other's update. The temporary name does not end in .prom, so the
collector never reads a half-written file.

    pgdr_last_run_timestamp_seconds{operation}      when the operation last finished (Unix time)
    pgdr_last_success_timestamp_seconds{operation}  when it last finished successfully
    pgdr_last_outcome{operation}                    1: the last run succeeded, 0: it failed
    pgdr_duration_seconds{operation}                how long the last run took
    pgdr_backup_size_bytes                          size of the newest backup (compressed)
    pgdr_drill_rto_seconds                          recovery time measured by the last successful drill
    pgdr_wal_lag_seconds{target}                    how far the WAL archive is behind the server (the RPO now)
    pgdr_wal_last_segment_timestamp_seconds{target} when the newest WAL object (segment or partial) was stored
The two WAL series are written by check and status, for the targets with a WAL archive.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

HELP = {
    "pgdr_last_run_timestamp_seconds": "Unix time the operation last finished.",
    "pgdr_last_success_timestamp_seconds": "Unix time the operation last finished successfully.",
    "pgdr_last_outcome": "1 if the last run of the operation succeeded, 0 if it failed.",
    "pgdr_duration_seconds": "Duration of the last run of the operation in seconds.",
    "pgdr_backup_size_bytes": "Size of the newest backup in bytes (compressed).",
    "pgdr_drill_rto_seconds": "Recovery time measured by the last successful drill, in seconds.",
    "pgdr_wal_lag_seconds": "How far the WAL archive of the target is behind the server (the RPO now), in seconds.",
    "pgdr_wal_last_segment_timestamp_seconds": "Unix time the newest WAL object of the target was stored.",
}
Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]


def parse(text: str) -> Samples:
    """pgdr's series from a text-format file (other metrics are dropped); a damaged file raises ValueError."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in HELP:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = float(sample.value)
    return samples


def wal_series(windows: dict[str, dict[str, Any]]) -> Samples:
    """The WAL gauges per target, from recoverable windows as their as_json() writes them."""
    series: Samples = {}
    for target, found in windows.items():
        labels: Labels = (("target", target),)
        if found.get("rpo_seconds") is not None:
            series.setdefault("pgdr_wal_lag_seconds", {})[labels] = float(found["rpo_seconds"])
        if found.get("newest_wal_at"):
            stored = datetime.fromisoformat(found["newest_wal_at"]).timestamp()
            series.setdefault("pgdr_wal_last_segment_timestamp_seconds", {})[labels] = stored
    return series


def with_series(samples: Samples, series: Samples) -> Samples:
    result = {name: dict(values) for name, values in samples.items()}
    for name, values in series.items():
        result.setdefault(name, {}).update(values)
    return result


def updated(samples: Samples, operation: str, ok: bool, duration: float, finished: float,
            values: dict[str, float] | None = None, series: Samples | None = None) -> Samples:
    """A copy of samples with one run of operation recorded (values: unlabelled gauges such as the size; series:
    labelled ones, e.g. per target)."""
    result = with_series(samples, series or {})
    label: Labels = (("operation", operation),)

    def put(name: str, labels: Labels, value: float) -> None:
        result.setdefault(name, {})[labels] = float(value)

    put("pgdr_last_run_timestamp_seconds", label, finished)
    put("pgdr_last_outcome", label, 1.0 if ok else 0.0)
    put("pgdr_duration_seconds", label, round(duration, 3))
    if ok:
        put("pgdr_last_success_timestamp_seconds", label, finished)
    for name, value in (values or {}).items():
        put(name, (), value)
    return result


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(samples: Samples) -> str:
    """Text exposition format 0.0.4: HELP, TYPE gauge, one line per series, in a stable order."""
    lines = []
    for name in HELP:
        if not samples.get(name):
            continue
        lines += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge"]
        for labels, value in sorted(samples[name].items()):
            text = ",".join(f'{key}="{_escape(label)}"' for key, label in labels)
            lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # readable by node_exporter whatever the umask
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read(path: Path) -> Samples:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        return {}  # damaged (written by hand?): start afresh rather than fail the backup's bookkeeping


def record(path: Path, operation: str, ok: bool, duration: float, values: dict[str, float] | None = None,
           finished: float | None = None, series: Samples | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent):
        samples = updated(read(path), operation, ok, duration, time.time() if finished is None else finished, values,
                          series)
        write_atomic(path, render(samples))


def record_series(path: Path, series: Samples) -> None:
    """Labelled gauges seen outside an operation's run (pgdr status), the other series kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent):
        write_atomic(path, render(with_series(read(path), series)))


def summary(path: Path) -> dict[str, Any]:
    """What `pgdr status` shows: per operation its last outcome, times and duration, and the gauges."""
    samples = read(path)
    operations: dict[str, dict[str, float]] = {}
    for name, series in samples.items():
        for labels, value in series.items():
            operation = dict(labels).get("operation")
            if operation:
                operations.setdefault(operation, {})[name.removeprefix("pgdr_")] = value
    return {"file": str(path), "operations": operations,
            "backup_size_bytes": samples.get("pgdr_backup_size_bytes", {}).get(()),
            "drill_rto_seconds": samples.get("pgdr_drill_rto_seconds", {}).get(())}


def describe(data: dict[str, Any], now: float | None = None) -> list[str]:
    """Human lines for `pgdr status`, e.g. 'Last backup: ok, 3.2h ago, took 4.1s (last success 3.2h ago)'."""
    from pgdr.ui import human_age, human_size

    now = time.time() if now is None else now
    lines = []
    for operation, values in sorted(data.get("operations", {}).items()):
        outcome = "ok" if values.get("last_outcome") == 1 else "FAILED"
        line = f"Last {operation}: {outcome}"
        if "last_run_timestamp_seconds" in values:
            line += f", {human_age(now - values['last_run_timestamp_seconds'])} ago"
        if "duration_seconds" in values:
            line += f", took {values['duration_seconds']:.1f}s"
        success = values.get("last_success_timestamp_seconds")
        if outcome != "ok":
            line += f" (last success {human_age(now - success) + ' ago' if success else 'never'})"
        lines.append(line)
    if data.get("backup_size_bytes") is not None:
        lines.append(f"Newest backup size (metrics): {human_size(data['backup_size_bytes'])}")
    if data.get("drill_rto_seconds") is not None:
        lines.append(f"Last drill RTO: {data['drill_rto_seconds']:.1f}s")
    return lines
