"""The operations sections of pgdr.toml: [retention], [metrics], [notify].

Kept beside config.py (which holds them in `Settings`) so the core config stays readable; same rules: every
option typed, with a default and a description, unknown keys refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pgdr.periods import parse_period


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RetentionOverride(_Section):
    """[retention.local] / [retention.s3]: any key set here replaces the [retention] value for that target."""

    keep_last: int | None = Field(None, ge=1)
    keep_daily: int | None = Field(None, ge=0)
    keep_weekly: int | None = Field(None, ge=0)
    keep_monthly: int | None = Field(None, ge=0)
    keep_safety: int | None = Field(None, ge=0)


class RetentionSettings(_Section):
    enabled: bool = Field(False, description="pgdr prune deletes only when true (--dry-run always works)")
    prune_after_backup: bool = Field(False, description="prune every target right after each successful backup")
    keep_last: int = Field(7, ge=1, description="keep the newest N backups")
    keep_daily: int = Field(7, ge=0, description="keep the newest backup of each of the last N days with backups")
    keep_weekly: int = Field(4, ge=0, description="... of each of the last N ISO weeks with backups")
    keep_monthly: int = Field(12, ge=0, description="... of each of the last N months with backups")
    keep_safety: int = Field(3, ge=0, description="keep the newest N safety backups (restore --clean)")
    drill_lock_max_age: float = Field(86400.0, gt=0, description="a drill's lock marker older than this is stale")
    local: RetentionOverride = Field(default_factory=RetentionOverride)  # type: ignore[arg-type]
    s3: RetentionOverride = Field(default_factory=RetentionOverride)  # type: ignore[arg-type]

    @field_validator("drill_lock_max_age", mode="before")
    @classmethod
    def _parse_age(cls, value: Any) -> float:
        return parse_period(value)

    @model_validator(mode="after")
    def _after_backup_needs_enabled(self) -> RetentionSettings:
        if self.prune_after_backup and not self.enabled:
            raise ValueError("prune_after_backup = true needs enabled = true")
        return self

    def rules_for(self, target: str) -> dict[str, int]:
        """The keep_* counts for one target: [retention] with [retention.<target>] laid over it."""
        names = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_safety")
        override = getattr(self, target, None)
        rules = {name: getattr(self, name) for name in names}
        if isinstance(override, RetentionOverride):
            rules.update({name: value for name in names if (value := getattr(override, name)) is not None})
        return rules


class MetricsSettings(_Section):
    textfile: Path | None = Field(
        None, description="Prometheus text file for node_exporter's textfile collector, e.g. "
                          "/var/lib/node_exporter/textfile_collector/pgdr.prom; unset: no metrics"
    )

    @field_validator("textfile", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class NotifySettings(_Section):
    on: list[Literal["failure", "success"]] = Field(
        default_factory=lambda: ["failure"],  # type: ignore[arg-type]
        description="outcomes that trigger the webhook and apprise",
    )
    webhook: str = Field("", description="URL that gets a JSON POST per notified outcome")
    apprise: list[str] = Field(default_factory=list, description="apprise URLs (pip install 'pgdr[apprise]')")
    healthchecks: str | dict[str, str] = Field(
        "", description="healthchecks.io ping URL for backup runs, or a table operation -> URL"
    )
    timeout: float = Field(10.0, gt=0, description="seconds per notification request")

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("healthchecks")
    @classmethod
    def _ping_urls(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        urls = value.values() if isinstance(value, dict) else [value] if value else []
        if any(not url.startswith(("http://", "https://")) for url in urls):
            raise ValueError("must be an http:// or https:// URL (or a table of them per operation)")
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(NOTIFIED_OPERATIONS))
            if unknown:
                raise ValueError(f"unknown operation {unknown[0]!r}; use {', '.join(NOTIFIED_OPERATIONS)}")
        return value

    def healthchecks_url(self, operation: str) -> str:
        """A plain URL belongs to the backup job (what healthchecks watches); a table names one per operation."""
        if isinstance(self.healthchecks, dict):
            return self.healthchecks.get(operation, "")
        return self.healthchecks if operation == "backup" else ""


NOTIFIED_OPERATIONS = ("backup", "prune", "drill", "check", "restore", "recover")
