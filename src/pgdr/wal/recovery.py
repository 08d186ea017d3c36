"""Point-in-time recovery, the pure parts: the target, the base backup it starts from, the server settings that
recover to it, and reading the server's log for how the recovery ended.

The recovery itself (pgdr.runbooks.point_in_time) restores a base backup into the data directory, serves the WAL
through pgdr.wal.fetch and starts the server with these settings; PostgreSQL replays and stops at the target.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pgdr.artifact import Manifest
from pgdr.errors import UsageError
from pgdr.wal.archive import format_lsn, parse_lsn

RESTORE_POINT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,63}\Z")
TIME_FORMATS_HINT = "e.g. --to \"2026-12-01 10:42:00+00\" (with a UTC offset; ISO 8601)"
# PostgreSQL's own words, which the log of the recovering server is searched for
NOT_REACHED = "recovery ended before configured recovery target was reached"
LAST_TRANSACTION = re.compile(r"last completed transaction was at log time (?P<time>[0-9-]+ [0-9:.]+[+-][0-9:]+)")


@dataclass(frozen=True)
class RecoveryTarget:
    """Where to stop: kind is "time", "lsn", "xid", "name" or "end" (all the WAL there is)."""

    kind: str = "end"
    value: str = ""
    time: datetime | None = None  # kind "time", parsed
    lsn: int | None = None  # kind "lsn", or "name" once its mark is read
    timeline: int | None = None  # None: the newest timeline the archive holds ("latest")

    def describe(self) -> str:
        return {"end": "the end of the archived WAL", "time": f"{self.value}", "lsn": f"LSN {self.value}",
                "xid": f"just before transaction {self.value} ends",
                "name": f"restore point {self.value!r}"}[self.kind]


def parse_target(to: str | None = None, to_lsn: str | None = None, to_xid: str | None = None,
                 to_name: str | None = None, timeline: str | None = None) -> RecoveryTarget:
    """At most one of --to, --to-lsn, --to-xid, --to-name; none: the end of the archive. --timeline picks the
    timeline to follow (after an earlier point-in-time recovery, the old one holds the points the new one
    branched away from)."""
    target = parse_point(to, to_lsn, to_xid, to_name)
    if timeline in (None, "latest"):
        return target
    assert timeline is not None
    if not timeline.isdigit() or not 1 <= int(timeline) < 2**32:
        raise UsageError(f"not a timeline: {timeline!r}", "e.g. --timeline 1, or latest (the default)")
    return replace(target, timeline=int(timeline))


def parse_point(to: str | None, to_lsn: str | None, to_xid: str | None, to_name: str | None) -> RecoveryTarget:
    given = [(kind, value) for kind, value in (("time", to), ("lsn", to_lsn), ("xid", to_xid), ("name", to_name))
             if value is not None]
    if len(given) > 1:
        raise UsageError("give one recovery target: --to, --to-lsn, --to-xid or --to-name",
                         "drop all but one of them")
    if not given:
        return RecoveryTarget()
    kind, value = given[0]
    if kind == "time":
        return RecoveryTarget("time", value, time=parse_target_time(value))
    if kind == "lsn":
        try:
            return RecoveryTarget("lsn", format_lsn(parse_lsn(value)), lsn=parse_lsn(value))
        except ValueError as error:
            raise UsageError(str(error), "e.g. --to-lsn 0/3000028 (see pg_current_wal_lsn())") from None
    if kind == "xid":
        if not value.isdigit() or not 3 <= int(value) < 2**63:
            raise UsageError(f"not a transaction id: {value!r}",
                             "e.g. --to-xid 1234 (the mistake's xid: txid_current() in its session, or the log)")
        return RecoveryTarget("xid", str(int(value)))
    if not RESTORE_POINT_NAME.match(value):
        raise UsageError(f"not a restore point name: {value!r}", "names made by `pgdr wal mark NAME`: letters, "
                         "digits, _ . : - (63 at most)")
    return RecoveryTarget("name", value)


def parse_target_time(text: str) -> datetime:
    """An ISO 8601 moment; without an offset it is refused rather than guessed (the server's zone and the
    operator's may differ, and a recovery to the wrong hour loses data)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {text!r}", TIME_FORMATS_HINT) from None
    if moment.tzinfo is None:
        raise UsageError(f"the time {text!r} has no UTC offset", TIME_FORMATS_HINT)
    return moment.astimezone(UTC)


def consistent_from(manifest: Manifest) -> datetime:
    """The first moment a physical base backup can be recovered to: when it ended."""
    assert manifest.physical is not None
    return manifest.physical.stop_time


def choose_base_backup(manifests: list[Manifest], target: RecoveryTarget) -> Manifest | None:
    """The newest physical base backup the target can be reached from: consistent (stop) before the target time
    or LSN; for an xid, the oldest (which transactions a backup already holds is not known without reading WAL);
    for the end of the archive, the newest. None when every base backup ends after the target."""
    physical = sorted((manifest for manifest in manifests if manifest.physical is not None),
                      key=lambda manifest: consistent_from(manifest))
    if target.kind == "time" and target.time is not None:
        moment = target.time
        physical = [manifest for manifest in physical if consistent_from(manifest) <= moment]
    elif target.lsn is not None:
        physical = [manifest for manifest in physical
                    if parse_lsn(manifest.physical.stop_lsn) <= target.lsn]  # type: ignore[union-attr]
    elif target.kind == "xid":
        physical = physical[:1]
    return physical[-1] if physical else None


def restore_command(fetch_dir: Path, watcher_pid: int) -> str:
    """The server's restore_command: ask pgdr's fetcher (pgdr.wal.fetch) for %f and wait for its answer, in shell,
    so no Python starts per segment. It gives up when the fetcher's process is gone, so a killed pgdr never leaves
    a server waiting forever."""
    folder = shlex.quote(str(fetch_dir))
    script = (f"d={folder}; f=%f; : > \"$d/$f.want\" || exit 1; "
              f"while [ ! -e \"$d/$f.ready\" ] && [ ! -e \"$d/$f.missing\" ]; do "
              f"[ -d /proc/{watcher_pid} ] || exit 1; sleep 0.05; done; "
              f"[ -e \"$d/$f.ready\" ] && cp \"$d/$f\" \"%p\"")
    return script


def recovery_settings(target: RecoveryTarget, command: str) -> dict[str, object]:
    """Settings for the recovering server: fetch WAL with `command`, stop at the target, then promote (a new
    timeline begins). hot_standby lets pgdr watch the replay; the target is inclusive like PostgreSQL's default,
    except for an xid, where the transaction named is the mistake to stop before."""
    settings: dict[str, object] = {"restore_command": command, "hot_standby": "on",
                                   "recovery_target_timeline": str(target.timeline or "latest")}
    if target.kind == "end":
        return settings
    settings["recovery_target_action"] = "promote"
    if target.kind == "time" and target.time is not None:
        settings["recovery_target_time"] = target.time.isoformat(sep=" ")
    elif target.kind == "lsn":
        settings["recovery_target_lsn"] = format_lsn(target.lsn)  # type: ignore[arg-type]
    elif target.kind == "xid":
        settings["recovery_target_xid"] = target.value
        settings["recovery_target_inclusive"] = "off"
    else:
        settings["recovery_target_name"] = target.value
    return settings


def last_transaction_time(log_text: str) -> str:
    """The time of the last transaction the server replayed, as its log says; "" when it does not say."""
    found = LAST_TRANSACTION.findall(log_text)
    return found[-1] if found else ""


def target_not_reached(log_text: str) -> bool:
    return NOT_REACHED in log_text
