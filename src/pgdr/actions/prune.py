"""pgdr prune: delete the backups that [retention] does not keep, per target, showing what goes and why.

The choice is retention.select (pure); this module lists each storage, asks before deleting (unless --yes or
configured to run after each backup), and deletes.

Order of deletion, per plain backup (pgdr.formats gives each format's order): the backup object first, then its
manifest. A crash in between leaves a manifest without its backup, which `pgdr list`, `restore latest` and
retention all ignore (they start from the backup objects), and which the next prune removes as an orphan. The
other order would leave, for a while, an intact backup without its manifest: listed as "unverified", a state that
`pgdr check` treats as a problem. Either way no crash leaves a listed backup that cannot be restored.

A target with a WAL archive (wal/) also loses the WAL no kept base backup reads (pgdr.wal.window.deletable_wal:
segments before the oldest kept base backup's start, partials superseded by their segment; never a history file),
after the backups. A crash in between leaves WAL older than every kept base backup, deleted by the next prune; a
crash among the WAL deletes leaves part of that same unneeded WAL. The WAL is deleted after the backups so that no
listed base backup is ever left without its WAL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pgdr.artifact import MANIFEST_SUFFIX, is_backup_key, parse_key
from pgdr.catalog import based_on, list_backups
from pgdr.context import Context
from pgdr.drill_lock import read_by_drills
from pgdr.errors import ConfigError, Refused
from pgdr.formats.choice import of_key
from pgdr.locking import locked
from pgdr.retention import Candidate, Decision, Policy, select
from pgdr.state import pending_safety_backup
from pgdr.storage import Storage, open_storage
from pgdr.ui import human_size
from pgdr.wal.archive import WAL_PREFIX
from pgdr.wal.reading import base_backups, read_archive
from pgdr.wal.window import deletable_wal


@dataclass
class PrunePlan:
    storage: Storage
    keep: list[Decision]
    delete: list[Decision]
    sizes: dict[str, int]
    orphans: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    wal_delete: list[str] = field(default_factory=list)  # WAL object keys no kept base backup reads
    wal_sizes: dict[str, int] = field(default_factory=dict)
    wal_deleted: int = 0

    @property
    def target(self) -> str:
        return self.storage.name

    def freed(self) -> int:
        return sum(self.sizes.get(key, 0) for key in self.deleted)

    def as_json(self, dry_run: bool) -> dict[str, object]:
        return {"target": self.target, "where": self.storage.describe(), "dry_run": dry_run,
                "keep": [decision.as_json() for decision in self.keep],
                "delete": [{**decision.as_json(), "size": self.sizes.get(decision.key, 0)} for decision in self.delete],
                "deleted": self.deleted, "orphan_manifests": self.orphans, **self.wal_json()}

    def wal_summary(self) -> str:
        """'3 WAL objects (000000010000000000000001 .. 000000010000000000000003, 48.0 MB)'."""
        names = [key.removeprefix(WAL_PREFIX).split(".")[0] for key in self.wal_delete]
        size = human_size(sum(self.wal_sizes.get(key, 0) for key in self.wal_delete))
        return f"{len(names)} WAL objects ({min(names)} .. {max(names)}, {size})" if names else "no WAL"

    def wal_json(self) -> dict[str, object]:
        if not self.wal_delete and not self.wal_sizes:
            return {}  # no WAL archive in this target
        return {"wal_delete": {"count": len(self.wal_delete), "summary": self.wal_summary(),
                               "bytes": sum(self.wal_sizes.get(key, 0) for key in self.wal_delete),
                               "first": self.wal_delete[0] if self.wal_delete else None,
                               "last": self.wal_delete[-1] if self.wal_delete else None},
                "wal_deleted": self.wal_deleted}


def orphan_manifests(keys: set[str]) -> list[str]:
    """Manifests whose backup is gone (an earlier prune stopped between the two deletes). A split backup is a
    folder of parts, not one object: its manifest is an orphan only when no part is left."""
    present = keys | {key.rsplit("/", 1)[0] for key in keys}
    return sorted(key for key in keys if key.endswith(MANIFEST_SUFFIX)
                  and is_backup_key(key[: -len(MANIFEST_SUFFIX)]) and key[: -len(MANIFEST_SUFFIX)] not in present)


def plan(context: Context, target: str, now: datetime | None = None) -> PrunePlan:
    retention = context.settings.retention
    storage = open_storage(context.settings, target, context.output.warn)
    objects = storage.list()  # every object: the orphan manifests are found among them
    records = list_backups(storage, context.settings.backup.min_size, include_safety=True)
    candidates = [Candidate(record.key.key, record.key.created, record.verified, record.key.safety, based_on(record))
                  for record in records]
    protected = read_by_drills(objects, now or datetime.now(UTC), retention.drill_lock_max_age)
    pending = pending_safety_backup(context.settings.state_dir)
    pinned = {pending: "the state from before the incomplete restore"} if pending else {}
    selection = select(candidates, Policy(**retention.rules_for(target)), protected, pinned)
    prune_plan = PrunePlan(storage, selection.keep, selection.delete,
                           {record.key.key: record.size for record in records},
                           orphan_manifests({item.key for item in objects}))
    archive = read_archive(context, storage)
    if archive is not None:
        kept = {decision.key for decision in selection.keep}
        prune_plan.wal_delete = deletable_wal(base_backups([record for record in records if record.key.key in kept]),
                                              archive.listing, archive.segment_size)
        prune_plan.wal_sizes = {item.key: item.size for item in objects if item.key.startswith(WAL_PREFIX)}
    return prune_plan


def show(context: Context, prune_plan: PrunePlan, dry_run: bool) -> None:
    output = context.output
    verb = "would delete" if dry_run else "delete"
    output.step(f"{prune_plan.target} ({prune_plan.storage.describe()}): keep {len(prune_plan.keep)}, "
                f"{verb} {len(prune_plan.delete)}")
    for decision in prune_plan.keep:
        output.info(f"   keep    {decision.key}  ({'; '.join(decision.reasons)})")
    for decision in prune_plan.delete:
        output.info(f"   {verb:<7} {decision.key}  {human_size(prune_plan.sizes.get(decision.key, 0))}  "
                    f"({'; '.join(decision.reasons)})")
    for key in prune_plan.orphans:
        output.info(f"   {verb:<7} {key}  (manifest without its backup)")
    if prune_plan.wal_delete:
        output.info(f"   {verb:<7} {prune_plan.wal_summary()}  (WAL no kept base backup reads)")


def confirm(context: Context, plans: list[PrunePlan]) -> None:
    count = sum(len(prune_plan.delete) for prune_plan in plans)
    if count == 0 or context.assume_yes:
        return
    if context.output.interactive and context.output.confirm(f"Delete {count} backups?"):
        return
    raise Refused(f"refusing to delete {count} backups without confirmation",
                  "re-run with --yes (see the list above), or --dry-run to only look")


def delete_backup(storage: Storage, key: str) -> None:
    """The backup's objects in the order its format gives: see the module docstring for why it matters."""
    parsed = parse_key(key)
    for object_key in of_key(parsed).objects(storage, parsed):
        storage.delete(object_key)  # one by one: the order is the guarantee


def execute(context: Context, prune_plan: PrunePlan) -> None:
    for decision in prune_plan.delete:
        delete_backup(prune_plan.storage, decision.key)
        prune_plan.deleted.append(decision.key)
    for key in prune_plan.orphans:
        prune_plan.storage.delete(key)
    for key in prune_plan.wal_delete:  # after the backups: see the module docstring
        prune_plan.storage.delete(key)
        prune_plan.wal_deleted += 1
    context.output.success(f"Pruned {prune_plan.target}: deleted {len(prune_plan.deleted)} backups "
                           f"({human_size(prune_plan.freed())}), kept {len(prune_plan.keep)}"
                           + (f"; deleted {prune_plan.wal_deleted} WAL objects" if prune_plan.wal_deleted else ""))


@locked("prune")
def prune(context: Context, targets: list[str] | None = None, dry_run: bool = False, confirmed: bool = False
          ) -> list[PrunePlan]:
    """Plan every target first, show the plans, confirm once, then delete. confirmed: after a backup."""
    if not dry_run and not context.settings.retention.enabled:
        raise ConfigError("retention is not enabled: pgdr prune deletes nothing until it is",
                          "set [retention] enabled = true (and the keep_* counts you want), or use --dry-run")
    plans = [plan(context, target) for target in (targets or context.settings.backup.targets)]
    for prune_plan in plans:
        show(context, prune_plan, dry_run)
    if dry_run:
        return plans
    if not confirmed:
        confirm(context, plans)
    for prune_plan in plans:
        execute(context, prune_plan)
    return plans
