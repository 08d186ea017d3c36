"""Summaries of a benchmark run: medians, ratios within rounds, bottlenecks, pgdr's CPU per GB of SQL, the targets
of issues 6 and 17, the tables.

A ratio is taken inside each round (the case's wall time over its reference's in the same round) and the median
of those is reported, so a burst of load from other processes slows a case and its reference alike.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field

from measure import Result

DUMP = "pg_dumpall > /dev/null"
DUMP_GZIP = "pg_dumpall | gzip > file"
PGDR_STARTUP = "pgdr list (startup cost)"
RESTORE_BASELINE = "gunzip -c | psql"
S3_BACKUP = "pgdr backup gzip -> s3"
S3_UPLOAD = "upload alone (boto3)"
S3_REFERENCE = "max(pg_dumpall, upload)"
SERVER = "postgres server"
MOTO = "moto (S3 server)"
RSS_TARGET_MB = 150
CPU_BOUND = 0.8  # a process using this share of one core is taken as the one limiting the pipeline
CPU_SATURATED = 0.9  # share of all cores busy from which the machine itself is the limit
PGDR = "pgdr"  # the pgdr process itself under rusage_run.py (its children are counted apart)
# issue 17: backup wall / raw dump's by cluster size (100 MB, 1 GB), restores / gunzip | psql, pgdr's CPU per GB
BACKUP_TARGETS = ((300 * 1000**2, 1.25), (None, 1.15))  # (up to this size, limit); None: any larger size
PLAIN_RESTORE_TARGET = 0.6
SPLIT_RESTORE_TARGET = 0.5
CPU_PER_GB_TARGET = 3.5  # half of the ~7 CPU s per GB of SQL the issue measured


def backup_case(variant: str) -> str:
    return f"pgdr backup {variant}"


def restore_case(variant: str) -> str:
    return f"pgdr restore {variant}"


@dataclass
class RoundResults:
    index: int
    results: dict[str, Result] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class CaseSummary:
    name: str
    runs: int
    failures: int
    wall_s: float
    wall_min_s: float
    wall_max_s: float
    ratio: float | None
    reference: str | None
    output_bytes: float | None
    cpu_s: dict[str, float]
    waiting_s: dict[str, float]
    peak_rss_mb: dict[str, float]
    other_cpu_s: float
    machine_busy: float  # share of all cores busy (any process) during the case
    phases_s: dict[str, float]
    rows_match: bool | None
    bottleneck: str = ""
    pgdr_cpu_per_gb: float | None = None  # pgdr's own CPU s per GB of SQL (the plain dump's size)
    pgdr_cpu_per_gb_net: float | None = None  # the same less pgdr's start-up CPU (the `pgdr list` case's)

    @property
    def pgdr_rss_mb(self) -> float | None:
        return self.peak_rss_mb.get("pgdr")

    @property
    def child_rss_mb(self) -> float | None:
        return max((value for name, value in self.peak_rss_mb.items() if name != "pgdr"), default=None)


def reference_of(case: str) -> str | None:
    if case == S3_BACKUP:
        return S3_REFERENCE
    if case.startswith("pgdr restore") and "biggest" not in case:  # one database against all: no ratio
        return RESTORE_BASELINE
    if case.startswith("pgdr backup") or case == DUMP_GZIP:
        return DUMP
    return None


def reference_wall(results: dict[str, Result], case: str) -> float | None:
    """The wall time this case is compared with in the same round."""
    names = [DUMP, S3_UPLOAD] if case == S3_BACKUP else [reference_of(case)]
    walls = [results[name].wall_s for name in names if name in results]
    return max(walls) if walls and len(walls) == len(names) else None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_case(name: str, rounds: list[RoundResults], sql_bytes: int | None = None) -> CaseSummary | None:
    pairs = [(state, state.results[name]) for state in rounds if name in state.results]
    if not pairs:
        return None
    runs = [result for _, result in pairs]
    ratios = [result.wall_s / reference for state, result in pairs
              if (reference := reference_wall(state.results, name))]
    cpu = [result.cpu_s | result.server_cpu_s for result in runs]
    parts = list(dict.fromkeys(part for entry in cpu for part in entry))
    phases = {phase for result in runs for phase in result.extra.get("phases_s", {})}  # type: ignore[attr-defined]
    checked = [result.extra["restored_rows_match"] for result in runs if "restored_rows_match" in result.extra]
    walls = [result.wall_s for result in runs]
    summary = CaseSummary(
        name=name, runs=len(runs), failures=sum(1 for state in rounds if name in state.errors),
        wall_s=statistics.median(walls), wall_min_s=min(walls), wall_max_s=max(walls), ratio=median(ratios),
        reference=reference_of(name),
        output_bytes=median([result.output_bytes for result in runs if result.output_bytes]),  # type: ignore[misc]
        cpu_s={part: statistics.median(entry.get(part, 0.0) for entry in cpu) for part in parts},
        waiting_s={part: statistics.median(result.run_queue_s.get(part, 0.0) for result in runs) for part in parts},
        peak_rss_mb={part: max(result.peak_rss_mb.get(part, 0.0) for result in runs)
                     for part in dict.fromkeys(part for result in runs for part in result.peak_rss_mb)},
        other_cpu_s=statistics.median(result.machine_busy_s - result.our_cpu_s for result in runs),
        machine_busy=statistics.median(result.machine_busy_s / (result.wall_s * (os.cpu_count() or 1))
                                       for result in runs),
        phases_s={phase: statistics.median(result.extra["phases_s"][phase] for result in runs  # type: ignore[index]
                                           if phase in result.extra.get("phases_s", {}))  # type: ignore[operator]
                  for phase in sorted(phases)},
        rows_match=all(checked) if checked else None,
    )
    summary.bottleneck = bottleneck(summary)
    if sql_bytes and PGDR in summary.cpu_s and name.startswith(("pgdr backup", "pgdr restore")):
        summary.pgdr_cpu_per_gb = summary.cpu_s[PGDR] / (sql_bytes / 1e9)
    return summary


def summarize(rounds: list[RoundResults], sql_bytes: int | None = None) -> list[CaseSummary]:
    """sql_bytes: the size of the plain dump, the denominator of pgdr's CPU per GB of SQL in every case."""
    names = dict.fromkeys(name for state in rounds for name in [*state.results, *state.errors])
    summaries = [summary for name in names if (summary := summarize_case(name, rounds, sql_bytes)) is not None]
    start_up = next((entry.cpu_s.get(PGDR) for entry in summaries if entry.name == PGDR_STARTUP), None)
    for entry in summaries:
        if sql_bytes and start_up is not None and entry.pgdr_cpu_per_gb is not None:
            entry.pgdr_cpu_per_gb_net = (entry.cpu_s[PGDR] - start_up) / (sql_bytes / 1e9)
    return summaries


def demand(summary: CaseSummary, part: str) -> float:
    """Share of the wall time a process was running or ready to run (on a core or waiting for one)."""
    return (summary.cpu_s.get(part, 0.0) + summary.waiting_s.get(part, 0.0)) / summary.wall_s


def bottleneck(summary: CaseSummary) -> str:
    """The process that wanted a core for most of the wall time; if none did for 80% of it, the pipeline waited
    on I/O or on a pipe rather than computed. Waiting for a core counts: on a shared machine a CPU-bound stage
    runs less than 100% but is never idle."""
    if not summary.cpu_s or summary.wall_s <= 0:
        return ""
    part = max(summary.cpu_s, key=lambda name: demand(summary, name))
    share, running = demand(summary, part), summary.cpu_s[part] / summary.wall_s
    if share >= CPU_BOUND:
        several = " (over 100%: several processes at once)" if share > 1 else ""
        waiting = share - running
        return (f"{part} is CPU-bound: on a core {running:.0%} + waiting for one {waiting:.0%} of the time{several}; "
                f"{summary.cpu_s[part]:.1f} CPU s in {summary.wall_s:.1f} s")
    if summary.machine_busy >= CPU_SATURATED:
        return (f"no single process (top: {part} wanted a core {share:.0%} of the time), but all cores were "
                f"{summary.machine_busy:.0%} busy: the wall time follows the total CPU of the case and of the others")
    return f"no process CPU-bound (top: {part} wanted a core {share:.0%} of the time): I/O or pipe waits"


def fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def tables(summaries: list[CaseSummary]) -> str:
    lines = [f"{'case':<34} {'wall s':>7} {'min-max':>11} {'ratio':>6}  {'vs':<24} {'size MB':>8} "
             f"{'RSS MB pgdr':>11} {'child':>6} {'pgdr CPU s/GB':>13}"]
    for entry in summaries:
        size = entry.output_bytes / 1e6 if entry.output_bytes else None
        spread = f"{entry.wall_min_s:.1f}-{entry.wall_max_s:.1f}"
        reference = (entry.reference or "").replace(" > /dev/null", "")
        lines.append(f"{entry.name:<34} {entry.wall_s:>7.2f} {spread:>11} {fmt(entry.ratio, '{:.2f}x'):>6}  "
                     f"{reference:<24} {fmt(size, '{:.1f}'):>8} {fmt(entry.pgdr_rss_mb, '{:.0f}'):>11} "
                     f"{fmt(entry.child_rss_mb, '{:.0f}'):>6} {fmt(entry.pgdr_cpu_per_gb, '{:.2f}'):>13}"
                     + (f"  ({entry.failures} failed)" if entry.failures else "")
                     + ("  ROWS DIFFER" if entry.rows_match is False else ""))
    lines += ["", f"{'case':<34} CPU s + s waiting for a core, by process (medians) | other processes' CPU s"]
    for entry in summaries:
        parts = ", ".join(f"{part} {seconds:.1f}+{entry.waiting_s.get(part, 0.0):.1f}"
                          for part, seconds in entry.cpu_s.items())
        phases = f"; check {entry.phases_s['check']:.1f} s before restoring" if "check" in entry.phases_s else ""
        lines.append(f"{entry.name:<34} {parts} | {entry.other_cpu_s:.1f}{phases}")
        lines.append(f"{'':<34} -> {entry.bottleneck}")
    return "\n".join(lines)


def backup_target(size: int) -> float:
    """Issue 17's limit for the backup's ratio to the raw dump at this cluster size (1.25x at 100 MB, 1.15x at 1 GB)."""
    return next(limit for upto, limit in BACKUP_TARGETS if upto is None or size <= upto)


def target_checks(summaries: list[CaseSummary], size: int) -> list[dict[str, object]]:
    """Issue 17's targets, and those of issue 6 it did not restate (output size, S3, memory), each with the measured
    figure, and, when missed, the bottleneck of the case with its figures."""
    by_name = {entry.name: entry for entry in summaries}
    checks: list[dict[str, object]] = []

    def check(issue: int, text: str, measured: float | None, limit: float, case: str) -> None:
        if measured is None:
            return
        item: dict[str, object] = {"issue": issue, "target": text, "measured": round(measured, 3), "limit": limit,
                                   "met": measured <= limit}
        if measured > limit and case in by_name:  # a time or a CPU figure: what limited the case
            item["bottleneck"] = explain(by_name[case])
        checks.append(item)

    def ratio(case: str) -> float | None:
        return by_name[case].ratio if case in by_name else None

    def cpu_per_gb(case: str) -> float | None:
        return by_name[case].pgdr_cpu_per_gb if case in by_name else None

    gzip_backup, split_backup = backup_case("gzip"), backup_case("split")
    limit = backup_target(size)
    check(17, f"pgdr backup gzip: wall <= {limit:.2f}x pg_dumpall", ratio(gzip_backup), limit, gzip_backup)
    check(17, f"pgdr restore gzip (plain): wall <= {PLAIN_RESTORE_TARGET}x gunzip|psql",
          ratio(restore_case("gzip")), PLAIN_RESTORE_TARGET, restore_case("gzip"))
    check(17, f"pgdr restore split: wall <= {SPLIT_RESTORE_TARGET}x gunzip|psql", ratio(restore_case("split")),
          SPLIT_RESTORE_TARGET, restore_case("split"))
    if (split_ratio := ratio(split_backup)) is not None and (gzip_ratio := ratio(gzip_backup)):
        check(17, "pgdr backup split: wall <= pgdr backup gzip's", split_ratio / gzip_ratio, 1.0, split_backup)
    for case in (gzip_backup, restore_case("gzip")):
        check(17, f"{case}: pgdr's own CPU <= {CPU_PER_GB_TARGET} s per GB of SQL", cpu_per_gb(case),
              CPU_PER_GB_TARGET, case)
    pgdr_gzip, old_gzip = by_name.get(gzip_backup), by_name.get(DUMP_GZIP)
    if pgdr_gzip and old_gzip and pgdr_gzip.output_bytes and old_gzip.output_bytes:
        check(6, "pgdr backup gzip: size <= gzip -6's (ratio)", pgdr_gzip.output_bytes / old_gzip.output_bytes, 1.0,
              "")
    check(6, "pgdr backup -> s3: wall <= 1.10x max(dump, upload)", ratio(S3_BACKUP), 1.10, S3_BACKUP)
    for entry in summaries:
        if entry.name.startswith("pgdr") and entry.name != PGDR_STARTUP:
            check(6, f"{entry.name}: pgdr peak RSS MB < {RSS_TARGET_MB}", entry.pgdr_rss_mb, RSS_TARGET_MB, "")
    return checks


def explain(entry: CaseSummary) -> str:
    """The bottleneck of a case and where its CPU went, for a missed target."""
    parts = ", ".join(f"{part} {seconds:.1f}" for part, seconds in
                      sorted(entry.cpu_s.items(), key=lambda item: item[1], reverse=True))
    per_gb = f"; pgdr {entry.pgdr_cpu_per_gb:.2f} CPU s per GB of SQL" if entry.pgdr_cpu_per_gb is not None else ""
    if entry.pgdr_cpu_per_gb_net is not None:
        per_gb += f", {entry.pgdr_cpu_per_gb_net:.2f} less start-up"
    return f"{entry.bottleneck} (CPU s by process: {parts}{per_gb}; wall {entry.wall_s:.1f} s)"


def targets_text(checks: list[dict[str, object]], size: int) -> str:
    lines = [f"Targets (issue 17; issue 6's where 17 did not restate them) at {size / 1e9:g} GB"]
    for item in checks:
        lines.append(f"  {'met ' if item['met'] else 'MISS'}  [{item['issue']}] {item['target']}: {item['measured']}")
        if not item["met"] and item.get("bottleneck"):
            lines.append(f"          -> {item['bottleneck']}")
    return "\n".join(lines)


def as_json(summaries: list[CaseSummary]) -> dict[str, dict[str, object]]:
    return {entry.name: asdict(entry) for entry in summaries}
