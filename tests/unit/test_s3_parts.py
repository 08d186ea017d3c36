"""S3 multipart arithmetic and output, without a server: part sizes that reach S3's 5 TiB object limit, memory held
by the parts in flight, and warnings from the part threads that never interleave."""

from __future__ import annotations

import threading

from pgdr.storage import s3
from pgdr.storage.s3 import PART_SIZE, PARTS_IN_FLIGHT, UPLOAD_MEMORY, normalize_prefix, part_size_for, parts_in_flight

MIB = 1024 * 1024


def test_part_sizes_grow_so_10000_parts_reach_the_5_tib_object_limit():
    assert part_size_for(1) == part_size_for(1000) == PART_SIZE
    assert part_size_for(1001) == 2 * PART_SIZE
    assert sum(part_size_for(number) for number in range(1, 10001)) >= 5 * 1024**4
    assert normalize_prefix("postgres") == normalize_prefix("/postgres/") == "postgres/"
    assert normalize_prefix("") == ""


def test_memory_held_stays_within_upload_memory_however_large_parts_grow():
    assert parts_in_flight(PART_SIZE) == PARTS_IN_FLIGHT
    assert UPLOAD_MEMORY < 100 * MIB
    for number in range(1, 10001, 1000):
        size = part_size_for(number)
        held = (parts_in_flight(size) + 1) * size  # parts in flight, and the one filling
        assert held <= max(UPLOAD_MEMORY, size), f"part {number}: {held} bytes held"


def test_warnings_from_upload_threads_come_out_one_whole_line_each(capsys):
    threads = [threading.Thread(target=s3.warn, args=(f"S3: upload part {number} failed; trying again",))
               for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == sorted(f"⚠️  S3: upload part {number} failed; trying again" for number in range(8))
