"""The one redaction point: every secret value pgdr resolves is registered here, and all output, error
messages and logged commands pass through `redact` before they are shown.
"""

from __future__ import annotations

import re

MASK = "********"
_known_values: set[str] = set()
# password=..., PASSWORD '...', postgresql://user:secret@host
_PATTERNS = [
    # a quoted value (conninfo password='a b', .env X_PASSWORD="a b") is masked whole, up to its closing quote
    re.compile(r"""(password\s*=\s*)('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|\S+)""", re.IGNORECASE | re.DOTALL),
    re.compile(r"(PASSWORD\s+)('(?:[^']|'')*')", re.IGNORECASE),
    re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)"),
    re.compile(r"(SCRAM-SHA-256\$)(\S+)"),
]


def register_secret(value: str) -> None:
    if value and len(value) >= 4:
        _known_values.add(value)


def forget_secrets() -> None:
    _known_values.clear()


def redact(text: str) -> str:
    for value in sorted(_known_values, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + MASK + (match.group(3) if match.lastindex == 3 else ""), text)
    return text
