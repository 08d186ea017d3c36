"""The byte pipeline of a backup, built in one place: compression, age encryption, sha256 and size.

A codec knows the suffix it adds to an object's name (`.gz`, `.zst`, `.age`), so a stored object's name says how
to read it back: `globals.sql.zst.age` is SQL, compressed with zstd, then encrypted. `encoder.Encoder` writes
(compress -> encrypt -> hash and count -> sink) and `decoder.decoded` reads (hash and count -> decrypt ->
decompress). Storage below only moves bytes; the formats above choose the codecs.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPRESSION_SUFFIXES = {"gzip": ".gz", "zstd": ".zst", "none": ""}
AGE_SUFFIX = ".age"


@dataclass(frozen=True)
class Codec:
    """How one object's bytes are encoded: its compression (gzip, zstd, none) and whether age encrypts it."""

    compression: str = "none"
    encrypted: bool = False

    @property
    def suffix(self) -> str:
        return COMPRESSION_SUFFIXES[self.compression] + (AGE_SUFFIX if self.encrypted else "")

    def name(self, base: str) -> str:
        """The stored name of `base` (e.g. `globals.sql`) written with this codec."""
        return base + self.suffix


def codec_of_name(name: str, base: str) -> Codec:
    """The codec of a stored object named `name`, written from `base` (e.g. `globals.sql.gz` from `globals.sql`)."""
    suffix = name.removeprefix(base)
    encrypted = suffix.endswith(AGE_SUFFIX)
    suffix = suffix.removesuffix(AGE_SUFFIX)
    compression = next((kind for kind, ending in COMPRESSION_SUFFIXES.items() if ending == suffix), None)
    if not name.startswith(base) or compression is None:
        raise ValueError(f"{name!r} is not {base!r} with a known codec suffix")
    return Codec(compression, encrypted)
