"""A plain backup stored so that each database's part decompresses alone.

At backup time the gzip member (zstd frame) ends where each proven database section starts, and a new one begins:
the manifest records that offset in the stored file (`Section.compressed_offset`), and a parallel restore
(pgdr.formats.plain_sections) reads each part's bytes alone, so the backup is decompressed once in all, by the
sessions side by side, instead of once per session from its start. Concatenated members and frames are one valid
stream for `gunzip`, `zstd -d` and older pgdr, which restore such a backup as before. Encrypted backups are not cut
(an offset into age's ciphertext is no place to start reading): they restore as before.

The lexer proves a section at the part's own \\restrict, a few hundred bytes after where the part starts, so the
start can lie in the chunk before the one being scanned. The producer therefore holds back its newest chunk until
the next one has been scanned, and notes the start of each section proven inside the held chunk before handing it
on; the worker that compresses ends the member at each noted start as it passes it. A start further back (never
with pgdr's 1 MiB chunks) gets no offset, and that backup restores the old way. Chunks are handed on whole and in
order, one item each, so a chunk's buffer is released only once all of it is compressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgdr.artifact import Section
from pgdr.streams.buffers import Put
from pgdr.streams.encoder import Encoder


@dataclass
class MemberCuts:
    """Producer side: `pass_on` each chunk once the scanner has read it, then `finish`. Worker side: `consumer`.

    `proven` is the scanner's list of proven sections, which grows as it reads. `starts` (where sections start in
    the SQL) is appended to by the producer only, before the chunk holding the start is handed on, and read by the
    worker only (the handoff's queue orders the two). `offsets` maps each cut section's uncompressed offset to its
    compressed one (written by the worker, read once the handoff is closed).
    """

    proven: list[Section]
    offsets: dict[int, int] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)
    _seen: int = 0
    _held: memoryview = field(default_factory=lambda: memoryview(b""))
    _held_start: int = 0
    _next_start: int = 0  # worker: the first start not yet passed
    _compressed: int = 0  # worker: uncompressed bytes compressed so far

    def pass_on(self, chunk: memoryview, put: Put) -> None:
        """Hand on the chunk held back, with the starts proven inside it noted, and hold this one."""
        self._note_proven()
        held_end = self._held_start + len(self._held)
        if self._held:
            put(self._held)
        self._held, self._held_start = chunk, held_end

    def finish(self, put: Put) -> None:
        """Hand on the last chunk (the stream has ended)."""
        self._note_proven()
        if self._held:
            put(self._held)
        self._held = memoryview(b"")

    def _note_proven(self) -> None:
        for section in self.proven[self._seen :]:
            if section.offset >= self._held_start:
                self.starts.append(section.offset)
        self._seen = len(self.proven)

    def consumer(self, encoder: Encoder) -> Put:
        """What the worker thread runs on each chunk: compress it, ending the member at each noted start in it."""

        def consume(chunk: memoryview) -> None:
            start, done = self._compressed, 0
            while self._next_start < len(self.starts) and self.starts[self._next_start] < start + len(chunk):
                cut = self.starts[self._next_start] - start
                if cut > done:
                    encoder.write(chunk[done:cut])
                self.offsets[start + cut] = encoder.end_member()
                self._next_start, done = self._next_start + 1, cut
            encoder.write(chunk[done:] if done else chunk)
            self._compressed = start + len(chunk)

        return consume

    def sections(self, proven: list[Section]) -> list[Section]:
        """The proven sections with the compressed offset of each one cut."""
        return [section.model_copy(update={"compressed_offset": self.offsets.get(section.offset)})
                for section in proven]
