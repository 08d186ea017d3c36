"""pgdr secrets pull / push: bring the configured secrets into the 0600 dotenv file, or store one in SSM.

Names and sources are printed, values never.
"""

from __future__ import annotations

from pgdr.context import Context
from pgdr.errors import SecretMissing, UsageError
from pgdr.secrets import SsmSource, write_dotenv


def pull(context: Context) -> dict[str, str]:
    """Write every configured secret from the first source that has it; returns name -> source."""
    names = context.settings.secret_names()
    missing = [name for name in names if context.secrets.lookup(name) is None]
    if missing:
        places = "; ".join(source.describe(name) for name in missing for source in context.secrets.sources)
        raise SecretMissing(
            f"secrets not found: {', '.join(missing)} (looked in: {places})",
            f"set them (e.g. `pgdr secrets push {missing[0]}` to store one in SSM), then run `pgdr secrets pull` again",
        )
    values = {name: context.secrets.get(name) for name in names}
    sources = {name: context.secrets.source_of(name) for name in names}
    write_dotenv(context.settings.secrets.dotenv, values)
    for name in names:
        context.output.info(f"  {name}  (from {sources[name]})")
    context.output.success(f"{len(names)} secrets written to {context.settings.secrets.dotenv} (mode 0600)")
    return sources


def push(context: Context, name: str, value: str) -> None:
    if not context.settings.secrets.ssm_path:
        raise UsageError("secrets.ssm_path is not set", "set [secrets] ssm_path = \"/myapp/prod/\" in pgdr.toml")
    if not value:
        raise UsageError(f"empty value for {name}", "type the value at the prompt or pipe it on stdin")
    source = SsmSource(context.settings.secrets.ssm_path, context.settings.s3.region)
    source.put(name, value)
    context.output.success(f"Stored {name} as SecureString {source.parameter_name(name)}")
