"""What an age-encrypted backup must look like on disk or in S3, checked from the outside: age's text header, then
a payload that is neither gzip nor zstd and does not decompress, and that the identity turns back into the
compressed SQL dump. (The SQL inside is compressed, so searching the file for `CREATE TABLE` proves nothing.)"""

from __future__ import annotations

import gzip
import re
import zlib

import zstandard

AGE_HEADER = b"age-encryption.org/v1\n"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
END_OF_DUMP = b"PostgreSQL database cluster dump complete"


def age_payload(data: bytes) -> bytes:
    """The bytes after age's header, which ends with its `--- <mac>` line."""
    assert data.startswith(AGE_HEADER), data[:40]
    mac_line = data.index(b"\n--- ") + 1
    return data[data.index(b"\n", mac_line) + 1 :]


def decompresses(payload: bytes) -> bool:
    try:
        zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(payload)  # gzip: a prefix that decodes is enough
        return True
    except zlib.error:
        pass
    try:
        zstandard.ZstdDecompressor().decompressobj().decompress(payload)
        return True
    except zstandard.ZstdError:
        return False


ORDERS_TABLE = rb'CREATE TABLE "?public"?\."?orders"? \('


def assert_encrypted_gzip_dump(data: bytes, identity: str, sql: bytes = ORDERS_TABLE) -> bytes:
    """age ciphertext of the gzip-compressed dump whose SQL matches the pattern `sql`; returns the SQL."""
    import pyrage  # type: ignore[import-not-found]

    payload = age_payload(data)
    assert len(payload) > 1024, "no payload after the age header"
    assert not payload.startswith((GZIP_MAGIC, ZSTD_MAGIC)), "the payload after the age header is not encrypted"
    assert not decompresses(payload), "the payload after the age header decompresses: it is not encrypted"
    compressed = pyrage.decrypt(data, [pyrage.x25519.Identity.from_str(identity)])
    assert compressed.startswith(GZIP_MAGIC), "the identity does not give back the gzip-compressed dump"
    plain = gzip.decompress(compressed)
    assert re.search(sql, plain), f"{sql!r} is not in the decrypted dump"
    assert END_OF_DUMP in plain[-1000:], f"the decrypted dump does not end with the end-of-dump line: {plain[-300:]!r}"
    return plain
