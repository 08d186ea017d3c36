"""A plain backup stored so that each database's part decompresses alone.

At backup time the gzip member (zstd frame) ends where each proven database section starts, and a new one begins:
the manifest records that offset in the stored file (`Section.compressed_offset`), and a parallel restore
(pgdr.formats.plain_sections) reads each part's bytes alone, so the backup is decompressed once in all, by the
sessions side by side, instead of once per session from its start. Concatenated members and frames are one valid
stream for `gunzip`, `zstd -d` and older pgdr, which restore such a backup as before. Encrypted backups are not cut
(an offset into age's ciphertext is no place to start reading): they restore as before.

The lexer proves a section at the part's own \\restrict, a few hundred bytes after where the part starts, so the
start can lie in the chunk before the one being scanned. The producer therefore holds back its newest chunk until
the next one has been scanned; a section proven with its start inside the held chunk is cut there. A start
further back (never with pgdr's 1 MiB chunks) gets no offset, and that backup restores the old way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pgdr.artifact import Section
from pgdr.streams.encoder import Encoder


@dataclass(frozen=True)
class Cut:
    """End the member here: `offset` is where the next section starts in the uncompressed SQL."""

    offset: int


Item = bytes | Cut
Put = Callable[[Item], None]


@dataclass
class MemberCuts:
    """Producer side: `pass_on` each chunk once the scanner has read it. Worker side: `consumer(encoder)`.

    `proven` is the scanner's list of proven sections, which grows as it reads; `offsets` maps each cut section's
    uncompressed offset to its compressed one (written by the worker thread, read once the handoff is closed).
    """

    proven: list[Section]
    offsets: dict[int, int] = field(default_factory=dict)
    _seen: int = 0
    _held: bytes = b""
    _held_start: int = 0
    _pending: list[int] = field(default_factory=list)

    def pass_on(self, chunk: bytes, put: Put) -> None:
        """Hand on the chunk held back, cut at the sections proven inside it, and hold this one."""
        held_end = self._held_start + len(self._held)
        self._take_proven()
        self._release(put, held_end)
        self._held, self._held_start = chunk, held_end

    def finish(self, put: Put) -> None:
        """Hand on the last chunk (the stream has ended)."""
        self._take_proven()
        self._release(put, self._held_start + len(self._held))
        self._held = b""

    def _take_proven(self) -> None:
        for section in self.proven[self._seen :]:
            if section.offset >= self._held_start:
                self._pending.append(section.offset)
        self._seen = len(self.proven)

    def _release(self, put: Put, until: int) -> None:
        data, start = self._held, self._held_start
        for cut in sorted(offset for offset in self._pending if offset < until):
            if cut > start:
                put(data[: cut - start])
                data, start = data[cut - start :], cut
            put(Cut(cut))
        self._pending = [offset for offset in self._pending if offset >= until]
        if data:
            put(data)

    def consumer(self, encoder: Encoder) -> Callable[[Item], None]:
        """What the worker thread runs on each item: compress a chunk, or end the member at a cut."""

        def consume(item: Item) -> None:
            if isinstance(item, Cut):
                self.offsets[item.offset] = encoder.end_member()
            else:
                encoder.write(item)

        return consume

    def sections(self, proven: list[Section]) -> list[Section]:
        """The proven sections with the compressed offset of each one cut."""
        return [section.model_copy(update={"compressed_offset": self.offsets.get(section.offset)})
                for section in proven]
