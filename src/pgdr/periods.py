"""Lengths of time as people write them in configs and on command lines: '26h', '35d', '1d12h', '90m', '2w'."""

from __future__ import annotations

import math
import re

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+$", re.IGNORECASE)


def parse_period(text: str | int | float) -> float:
    """'26h' -> 93600.0, '35d' -> 3024000.0, '1d12h' -> 129600.0; a bare number is seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool) and math.isfinite(text) and text >= 0:
        return float(text)
    if not isinstance(text, str):  # booleans, negative or infinite numbers, lists, tables, dates from TOML
        raise ValueError(f"not a length of time: {text!r} (use e.g. 90m, 26h, 35d, 1d12h)")
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return float(stripped)
    if not WHOLE.match(stripped):
        raise ValueError(f"not a length of time: {text!r} (use e.g. 90m, 26h, 35d, 1d12h)")
    return float(sum(float(number) * UNITS[unit.lower()] for number, unit in PART.findall(stripped)))


def format_period(seconds: float, precision: int = 4) -> str:
    """93600 -> '1d2h', 5400 -> '1h30m'; with precision=2 only the two leading units count, for messages
    ('40d' rather than '40d1s', '1d6h' rather than '1d6h0m12s')."""
    remaining, counted = int(round(seconds)), 0
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if parts or remaining >= size:
            counted += 1
            if counted > precision:
                break
            if remaining >= size:
                parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts) or "0s"
