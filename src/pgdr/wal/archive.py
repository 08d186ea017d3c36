"""The WAL archive's names and layout, pure: what `pgdr wal stream` writes and what recovery, status, check and
prune read.

Every target holds, beside the backups::

    wal/000000010000000000000003.gz          a completed segment, through the codec stack (.gz/.zst, .age)
    wal/000000010000000000000004.partial.gz  the segment being written, uploaded again every wal.rpo_objective
    wal/00000002.history.gz                  a timeline's history (which LSN it branched from)
    wal/status.json                          the streamer's last word: what it had uploaded, and when

Names are PostgreSQL's own (`TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then the LSN's high 32 bits, then the segment
within them), so listing `wal/` in name order is listing in WAL order per timeline, as WAL-G and Barman keep it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pgdr.storage.base import StoredObject
from pgdr.streams import AGE_SUFFIX, COMPRESSION_SUFFIXES, Codec

WAL_PREFIX = "wal/"
STATUS_KEY = WAL_PREFIX + "status.json"
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
PARTIAL = ".partial"
SEGMENT_PATTERN = re.compile(r"^(?P<timeline>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})\Z")
HISTORY_PATTERN = re.compile(r"^(?P<timeline>[0-9A-F]{8})\.history\Z")
LSN_PATTERN = re.compile(r"^(?P<high>[0-9A-Fa-f]{1,8})/(?P<low>[0-9A-Fa-f]{1,8})\Z")


def parse_lsn(text: str) -> int:
    """'0/3000028' -> 50331688, as pg_lsn reads it."""
    match = LSN_PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r} (LSNs look like 0/3000028)")
    return (int(match["high"], 16) << 32) | int(match["low"], 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment file: its timeline and its number (the LSN it starts at divided by the segment size)."""

    timeline: int
    number: int
    size: int = DEFAULT_SEGMENT_SIZE

    @property
    def name(self) -> str:
        per_log = 0x1_0000_0000 // self.size
        return f"{self.timeline:08X}{self.number // per_log:08X}{self.number % per_log:08X}"

    @property
    def start_lsn(self) -> int:
        return self.number * self.size

    def following(self) -> Segment:
        return Segment(self.timeline, self.number + 1, self.size)

    def on_timeline(self, timeline: int) -> Segment:
        return Segment(timeline, self.number, self.size)

    @classmethod
    def from_name(cls, name: str, size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
        match = SEGMENT_PATTERN.match(name)
        if not match:
            raise ValueError(f"not a WAL segment name: {name!r}")
        per_log = 0x1_0000_0000 // size
        return cls(int(match["timeline"], 16), int(match["log"], 16) * per_log + int(match["seg"], 16), size)

    @classmethod
    def of_lsn(cls, lsn: int, timeline: int, size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
        """The segment holding `lsn`."""
        return cls(timeline, lsn // size, size)


def is_segment_name(name: str) -> bool:
    return SEGMENT_PATTERN.match(name) is not None


def is_history_name(name: str) -> bool:
    return HISTORY_PATTERN.match(name) is not None


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


@dataclass(frozen=True)
class WalObject:
    """One stored object of the archive: a segment, a partial segment or a history file, with its codec."""

    key: str
    name: str  # as PostgreSQL names the file: 000000010000000000000003, 00000002.history
    kind: str  # "segment", "partial" or "history"
    codec: Codec


def wal_key(name: str, codec: Codec, partial: bool = False) -> str:
    """wal/<name>[.partial]<codec suffix>: where a segment or history file is stored."""
    return WAL_PREFIX + name + (PARTIAL if partial else "") + codec.suffix


MARKS_PREFIX = WAL_PREFIX + "marks/"
MARK_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def mark_key(name: str) -> str:
    """wal/marks/<name>.json: a restore point made by `pgdr wal mark` ({name, lsn, timeline, time})."""
    if not MARK_NAME_PATTERN.match(name):
        raise ValueError(f"not a restore point name: {name!r} (letters, digits, '.', '_', '-'; at most 63)")
    return MARKS_PREFIX + name + ".json"


def parse_wal_key(key: str) -> WalObject | None:
    """The archive object a key names; None for anything else under wal/ (status.json, foreign files)."""
    if not key.startswith(WAL_PREFIX):
        return None
    rest = key.removeprefix(WAL_PREFIX)
    encrypted = rest.endswith(AGE_SUFFIX)
    rest = rest.removesuffix(AGE_SUFFIX)
    compression = "none"
    for kind, suffix in COMPRESSION_SUFFIXES.items():
        if suffix and rest.endswith(suffix):
            compression, rest = kind, rest.removesuffix(suffix)
            break
    partial = rest.endswith(PARTIAL)
    name = rest.removesuffix(PARTIAL)
    codec = Codec(compression, encrypted)
    if is_segment_name(name):
        return WalObject(key, name, "partial" if partial else "segment", codec)
    if is_history_name(name) and not partial:
        return WalObject(key, name, "history", codec)
    return None


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a history file: `timeline` ended at `switch_lsn`, where its child begins."""

    timeline: int
    switch_lsn: int


def parse_history(text: str) -> list[TimelineSwitch]:
    """A `.history` file as PostgreSQL writes it: `<parent timeline>\\t<switch LSN>\\t<reason>` per line, comments
    and blank lines skipped. A line that does not parse is an error: recovery would follow a wrong path."""
    switches: list[TimelineSwitch] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(maxsplit=2)
        try:
            switches.append(TimelineSwitch(int(fields[0]), parse_lsn(fields[1])))
        except (IndexError, ValueError):
            raise ValueError(f"history file line {number} is not '<timeline> <LSN> <reason>': {line!r}") from None
    return switches


@dataclass
class ArchiveListing:
    """What one target's wal/ holds, by name."""

    segments: dict[str, WalObject]
    partials: dict[str, WalObject]
    histories: dict[str, WalObject]
    modified: dict[str, datetime]  # key -> when it was stored

    @classmethod
    def of(cls, objects: Iterable[StoredObject]) -> ArchiveListing:
        """From Storage.list(WAL_PREFIX) (StoredObject: key, size, modified)."""
        listing = cls({}, {}, {}, {})
        for stored in objects:
            key = stored.key
            parsed = parse_wal_key(key)
            if parsed is None:
                continue
            listing.modified[key] = stored.modified
            bucket = {"segment": listing.segments, "partial": listing.partials, "history": listing.histories}
            bucket[parsed.kind][parsed.name] = parsed
        return listing

    def newest_segment(self, size: int = DEFAULT_SEGMENT_SIZE) -> Segment | None:
        names = sorted(self.segments, key=lambda name: Segment.from_name(name, size).number)
        return Segment.from_name(names[-1], size) if names else None


def timeline_path(target_timeline: int, histories: dict[int, list[TimelineSwitch]]) -> list[TimelineSwitch]:
    """The timelines recovery to `target_timeline` walks through, oldest first, each with the LSN it ends at; the
    target itself last, ending nowhere (switch_lsn = 2**64 - 1). `histories` maps a timeline to its history."""
    ancestry = histories.get(target_timeline, []) if target_timeline != 1 else []
    return [*ancestry, TimelineSwitch(target_timeline, 2**64 - 1)]


def needed_segments(start_lsn: int, start_timeline: int, path: list[TimelineSwitch], end: Segment,
                    size: int = DEFAULT_SEGMENT_SIZE) -> list[Segment]:
    """The segments recovery from `start_lsn` reads up to and including segment number `end.number`, following
    timeline switches: the segment holding a switch is read from the child timeline, as PostgreSQL does (the
    parent's copy is cut at the switch)."""
    segments: list[Segment] = []
    number = start_lsn // size
    steps = [step for step in path if step.timeline >= start_timeline]
    for index, step in enumerate(steps):
        last = end.number if index == len(steps) - 1 else min(end.number, step.switch_lsn // size - 1)
        while number <= last:
            segments.append(Segment(step.timeline, number, size))
            number += 1
    return segments


def first_missing(needed: list[Segment], listing: ArchiveListing) -> Segment | None:
    return next((segment for segment in needed if segment.name not in listing.segments), None)


@dataclass(frozen=True)
class StreamStatus:
    """What `pgdr wal stream` last wrote to wal/status.json on a target: the end of the WAL it had stored there
    (a partial segment included) and when; `caught_up_at` is the last moment storage held all the WAL the server
    had written (the RPO is now minus that)."""

    system_identifier: str
    timeline: int
    stored_lsn: str
    stored_at: datetime
    caught_up_at: datetime
    segment_size: int = DEFAULT_SEGMENT_SIZE
    slot: str = "pgdr"

    def to_json(self) -> bytes:
        data = {**self.__dict__, "stored_at": self.stored_at.isoformat(), "caught_up_at": self.caught_up_at.isoformat()}
        return json.dumps(data, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> StreamStatus:
        raw = json.loads(data)
        return cls(str(raw["system_identifier"]), int(raw["timeline"]), str(raw["stored_lsn"]),
                   datetime.fromisoformat(raw["stored_at"]), datetime.fromisoformat(raw["caught_up_at"]),
                   int(raw.get("segment_size", DEFAULT_SEGMENT_SIZE)), str(raw.get("slot", "pgdr")))
