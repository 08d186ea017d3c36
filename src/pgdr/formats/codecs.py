"""The codecs a format writes with, from the settings, and the age keys they need (the recipients from the config,
the identity from the secret store, looked up only when an encrypted backup is read)."""

from __future__ import annotations

from pgdr.context import Context
from pgdr.errors import SecretMissing
from pgdr.streams import Codec
from pgdr.streams.encryption import parse_identity, parse_recipients


def backup_codec(context: Context) -> Codec:
    """The codec of a new backup's objects: backup.compression, and age when backup.encryption says so."""
    settings = context.settings.backup
    return Codec(settings.compression, settings.encryption == "age")


def age_recipients(context: Context, codec: Codec) -> list[object] | None:
    return parse_recipients(context.settings.backup.age_recipients) if codec.encrypted else None


def age_identity(context: Context, codec: Codec, what: str) -> object | None:
    """The identity that decrypts `what` (a backup or one of its parts), None when it is not encrypted."""
    if not codec.encrypted:
        return None
    name = context.settings.backup.age_identity
    if context.secrets.lookup(name) is None:
        raise SecretMissing(f"{what} is encrypted with age, and secret {name} (the identity) is missing",
                            f"set {name} to the private key (AGE-SECRET-KEY-...) in env, .env or SSM")
    return parse_identity(context.secrets.get(name), name)
