"""Secret sources (env, dotenv file, AWS SSM Parameter Store): names in, values out, never logged.

A secret is looked up in the configured sources in order; the first that has it wins. Values are registered
with the redactor as soon as they are read, so no output can show them.
"""

from __future__ import annotations

import os
import re
import secrets as random_secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dotenv import dotenv_values

from pgdr.config import Settings
from pgdr.errors import ConfigError, SecretMissing, StorageError
from pgdr.redact import register_secret
from pgdr.run import register_secret_name


class SecretSource(Protocol):
    name: str

    def get(self, secret_name: str) -> str | None: ...

    def describe(self, secret_name: str) -> str: ...


@dataclass
class EnvironmentSource:
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    name: str = "env"

    def get(self, secret_name: str) -> str | None:
        return self.environ.get(secret_name) or None

    def describe(self, secret_name: str) -> str:
        return f"environment variable {secret_name}"


@dataclass
class DotenvSource:
    path: Path
    name: str = "dotenv"

    def get(self, secret_name: str) -> str | None:
        if not self.path.exists():
            return None
        return dotenv_values(self.path, interpolate=False).get(secret_name) or None

    def describe(self, secret_name: str) -> str:
        return f"{secret_name} in {self.path}"


@dataclass
class SsmSource:
    """Parameter `<ssm_path><NAME>`, SecureString decrypted. boto3 honours AWS_ENDPOINT_URL_SSM and profiles."""

    path: str
    region: str = ""
    name: str = "ssm"
    _client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            retries = {"mode": "standard", "total_max_attempts": 5}
            self._client = boto3.session.Session().client(
                "ssm", region_name=self.region or None, config=Config(retries=retries))
        return self._client

    def parameter_name(self, secret_name: str) -> str:
        return self.path.rstrip("/") + "/" + secret_name

    def get(self, secret_name: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client().get_parameter(Name=self.parameter_name(secret_name), WithDecryption=True)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "") == "ParameterNotFound":
                return None
            raise ssm_error(error, "ssm:GetParameter and kms:Decrypt", self.parameter_name(secret_name)) from None
        except BotoCoreError as error:
            raise ssm_error(error, "ssm:GetParameter and kms:Decrypt", self.parameter_name(secret_name)) from None
        return str(answer["Parameter"]["Value"]) or None

    def put(self, secret_name: str, value: str, overwrite: bool = True) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().put_parameter(
                Name=self.parameter_name(secret_name), Value=value, Type="SecureString", Overwrite=overwrite
            )
        except (BotoCoreError, ClientError) as error:
            raise ssm_error(error, "ssm:PutParameter and kms:Encrypt", self.parameter_name(secret_name)) from None

    def describe(self, secret_name: str) -> str:
        return f"SSM parameter {self.parameter_name(secret_name)}"


def ssm_error(error: Exception, actions: str, parameter: str) -> StorageError:
    """The SSM failure as one line with its fix; the parameter's value is never part of it."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, PartialCredentialsError

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return StorageError(f"no AWS credentials found to read SSM parameter {parameter}",
                            "set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use an instance role)")
    if isinstance(error, NoRegionError):
        return StorageError(f"no AWS region for SSM parameter {parameter}",
                            "set [s3] region in pgdr.toml or AWS_DEFAULT_REGION / AWS_REGION")
    if not isinstance(error, ClientError):
        return StorageError(f"SSM Parameter Store unreachable for {parameter}: {error}",
                            "check AWS_ENDPOINT_URL(_SSM), the region and the network")
    code = str(error.response.get("Error", {}).get("Code", ""))
    if code in ("AccessDeniedException", "AccessDenied") or code.startswith("KMS") or "KMS" in code:
        return StorageError(f"SSM Parameter Store refused {parameter}: {code}",
                            f"allow {actions} on parameter {parameter} in the IAM policy (see docs/S3_AND_SSM.md)")
    if code in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"):
        return StorageError(f"SSM Parameter Store rejected the AWS credentials ({code})",
                            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE (expired session?)")
    return StorageError(f"SSM Parameter Store refused {parameter}: {code}",
                        f"check secrets.ssm_path and that the IAM policy allows {actions}")


def build_sources(settings: Settings, environ: Mapping[str, str] | None = None) -> list[SecretSource]:
    sources: list[SecretSource] = []
    for source in settings.secrets.sources:
        if source == "env":
            sources.append(EnvironmentSource(environ if environ is not None else os.environ))
        elif source == "dotenv":
            sources.append(DotenvSource(settings.secrets.dotenv))
        elif source == "ssm":
            sources.append(SsmSource(settings.secrets.ssm_path, settings.s3.region))
    return sources


@dataclass
class SecretResolver:
    sources: list[SecretSource]
    _cache: dict[str, tuple[str, str]] = field(default_factory=dict)

    def lookup(self, secret_name: str) -> tuple[str, str] | None:
        """(value, source name) from the first source that has the secret, or None."""
        if secret_name in self._cache:
            return self._cache[secret_name]
        for source in self.sources:
            value = source.get(secret_name)
            if value is not None:
                register_secret(value)
                register_secret_name(secret_name)
                self._cache[secret_name] = (value, source.name)
                return self._cache[secret_name]
        return None

    def get(self, secret_name: str) -> str:
        found = self.lookup(secret_name)
        if found is None:
            places = "; ".join(source.describe(secret_name) for source in self.sources)
            raise SecretMissing(
                f"secret {secret_name} not found (looked in: {places})",
                f"set {secret_name} in one of those places (e.g. `pgdr secrets push {secret_name}` for SSM), "
                "then `pgdr secrets pull`",
            )
        return found[0]

    def source_of(self, secret_name: str) -> str:
        self.get(secret_name)
        return self._cache[secret_name][1]

    def remember(self, secret_name: str, value: str, source: str) -> None:
        register_secret(value)
        register_secret_name(secret_name)
        self._cache[secret_name] = (value, source)


def make_resolver(settings: Settings) -> SecretResolver:
    for name in settings.secret_names():
        register_secret_name(name)
    register_secret_name(settings.backup.age_identity)  # the age private key: no child process needs it
    return SecretResolver(build_sources(settings))


def generate_password() -> str:
    return random_secrets.token_urlsafe(24)


UNQUOTED_SAFE = re.compile(r"[^\s'\"#]+")


def quote_dotenv_value(value: str) -> str:
    """Double-quoted with escapes (read back without interpolation). A value ending in a backslash cannot be
    quoted for python-dotenv (it reads the escaped quote as part of the value): it is written bare when that is
    unambiguous, else refused."""
    if value.endswith("\\"):
        if UNQUOTED_SAFE.fullmatch(value):
            return value
        raise ConfigError("a secret ending in a backslash and holding spaces, quotes or # cannot go in a dotenv file",
                          "keep that secret in the environment or in SSM (secrets.sources)")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def dotenv_key_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    key = stripped.split("=", 1)[0].strip()
    return key.removeprefix("export ").strip()


def write_dotenv(path: Path, values: Mapping[str, str]) -> None:
    """Set values in a dotenv file, keeping unrelated lines; the file is 0600 from creation (atomic replace)."""
    existing = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    remaining = dict(values)
    lines = []
    for line in existing:
        key = dotenv_key_of(line)
        if key in remaining:
            lines.append(f"{key}={quote_dotenv_value(remaining.pop(key))}")
        elif key not in values:
            lines.append(line)
    lines += [f"{key}={quote_dotenv_value(value)}" for key, value in remaining.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # mkstemp: a fresh name, created 0600
        descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.pgdr-")
        temporary = Path(temporary_name)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error}", "check the folder's permissions") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def missing_names(resolver: SecretResolver, names: Iterable[str]) -> list[str]:
    return [name for name in names if resolver.lookup(name) is None]
