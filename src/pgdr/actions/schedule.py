"""pgdr schedule print: systemd units and timers, or crontab lines, for this install and this config.

Jobs (UTC is not assumed: systemd timers and cron use the machine's time zone):
    backup  daily at 02:00          pgdr backup (waits up to an hour for another pgdr on the cluster)
    prune   daily at 03:00          only when [retention] is enabled and does not already prune after each backup
    drill   monthly, the 1st 04:00  from s3 when it is a target (proves the off-site copy), else local
    check   hourly at :15           --max-age 26h --max-drill-age 35d: alerts within a day of a missed backup
    wal     always running          pgdr wal stream, a systemd service (Restart=always), only when backup.format is
                                    physical: the WAL archive serves point-in-time recovery from base backups

Commands use absolute paths: the pgdr executable that is running (or `python -m pgdr` with this interpreter)
and the config file, so the jobs run the same install with the same config whatever the job's PATH and cwd.
The builders are pure; only `invocation()` looks at the running process.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pgdr.config import Settings


@dataclass(frozen=True)
class Job:
    name: str
    args: tuple[str, ...]
    on_calendar: str  # systemd
    cron: str  # five fields
    description: str


def jobs(settings: Settings) -> list[Job]:
    drill_source = "s3" if "s3" in settings.backup.targets else "local"
    planned = [Job("backup", ("--wait", "3600", "backup"), "*-*-* 02:00:00", "0 2 * * *",
                   "pgdr backup: pg_dumpall to every target")]
    if settings.retention.enabled and not settings.retention.prune_after_backup:
        planned.append(Job("prune", ("--wait", "3600", "prune", "--yes"), "*-*-* 03:00:00", "0 3 * * *",
                           "pgdr prune: delete backups outside the retention rules"))
    planned += [
        Job("drill", ("drill", "--from", drill_source), "*-*-01 04:00:00", "0 4 1 * *",
            "pgdr drill: monthly recovery rehearsal in a scratch cluster"),
        Job("check", ("check", "--max-age", "26h", "--max-drill-age", "35d"), "*-*-* *:15:00", "15 * * * *",
            "pgdr check: backups fresh, sound, and drilled"),
    ]
    return planned


def invocation(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """The running pgdr as an absolute command: the console script when run as one, else `python -m pgdr`."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    program = Path(argv0)
    if program.name == "pgdr":
        found = program if program.is_absolute() or "/" in argv0 else Path(shutil.which(argv0) or argv0)
        if found.exists():
            return [str(found.resolve())]
    return [str(Path(executable or sys.executable).resolve()), "-m", "pgdr"]


def command(base: list[str], config: Path, job: Job) -> list[str]:
    return [*base, "--config", str(config), *job.args]


def systemd_quote(argument: str) -> str:
    """ExecStart= words: double-quote when needed; '%' is a specifier, '$' an environment reference."""
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if not escaped or any(character in escaped for character in ' \t"\'\\;'):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def cron_quote(argument: str) -> str:
    """cron hands the line to /bin/sh, and an unescaped '%' ends the command."""
    return shlex.quote(argument).replace("%", "\\%")


def systemd_units(settings: Settings, base: list[str], config: Path) -> dict[str, str]:
    """unit file name -> text, a .service and a .timer per job."""
    units = {}
    for job in jobs(settings):
        exec_start = " ".join(systemd_quote(word) for word in command(base, config, job))
        units[f"pgdr-{job.name}.service"] = (
            f"[Unit]\nDescription={job.description}\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            f"[Service]\nType=oneshot\nExecStart={exec_start}\n"
            f"WorkingDirectory={str(config.parent).replace('%', '%%')}\n"
            "Nice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n"
        )
        units[f"pgdr-{job.name}.timer"] = (
            f"[Unit]\nDescription=Schedule of {job.description}\n\n"
            f"[Timer]\nOnCalendar={job.on_calendar}\nPersistent=true\nRandomizedDelaySec=120\n"
            f"Unit=pgdr-{job.name}.service\n\n"
            "[Install]\nWantedBy=timers.target\n"
        )
    if streams_wal(settings):
        units["pgdr-wal.service"] = wal_service(base, config)
    return units


def streams_wal(settings: Settings) -> bool:
    """The WAL archive serves physical base backups; with logical dumps nothing would read it."""
    return settings.backup.format == "physical"


def wal_service(base: list[str], config: Path) -> str:
    """pgdr wal stream as a long-running service: restarted whatever its exit, SIGTERM to stop (it stores what it
    holds first, within TimeoutStopSec)."""
    exec_start = " ".join(systemd_quote(word) for word in [*base, "--config", str(config), "wal", "stream"])
    return ("[Unit]\nDescription=pgdr wal stream: the WAL archive behind point-in-time recovery\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            f"[Service]\nType=simple\nExecStart={exec_start}\n"
            f"WorkingDirectory={str(config.parent).replace('%', '%%')}\n"
            "Restart=always\nRestartSec=10\nKillSignal=SIGTERM\nTimeoutStopSec=120\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def systemd_text(settings: Settings, base: list[str], config: Path) -> str:
    units = systemd_units(settings, base, config)
    timers = " ".join(name for name in units if name.endswith((".timer", "-wal.service")))
    header = (f"# pgdr schedule for {config} (systemd). Install as root:\n"
              f"#   {' '.join(base)} --config {config} schedule print --systemd --dir /etc/systemd/system\n"
              f"#   systemctl daemon-reload && systemctl enable --now {timers}\n")
    return header + "".join(f"\n# ---- {name} ----\n{text}" for name, text in units.items())


def crontab_text(settings: Settings, base: list[str], config: Path) -> str:
    lines = [f"# pgdr schedule for {config} (crontab -e as root; for /etc/cron.d add a user column).",
             "# --quiet: cron mails only warnings and errors. Times are the machine's time zone."]
    if streams_wal(settings):
        lines.append("# pgdr wal stream runs all the time, not from cron: see `pgdr schedule print --systemd`.")
    for job in jobs(settings):
        words = command(base, config, job)
        words.insert(len(base), "--quiet")
        lines.append(f"{job.cron} {' '.join(cron_quote(word) for word in words)}")
    return "\n".join(lines) + "\n"


def write_units(units: dict[str, str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
        written.append(path)
    return written
