"""S3 multipart arithmetic and reporting, without a server: part sizes that fit the largest backup into [s3]
max_parts parts (AWS's 10,000 as before, 1,000 on Scaleway, 3 in the fault test), memory held by the parts in
flight, and warnings that go to the caller's reporter (by default the "pgdr.storage" logger), one at a time."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest

from pgdr.config import env_overrides, merge_overrides, parse_settings
from pgdr.errors import ConfigError
from pgdr.storage import log_warning
from pgdr.storage.s3 import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    PART_SIZE,
    PARTS_IN_FLIGHT,
    SIZE_STEPS,
    UPLOAD_MEMORY,
    binary_size,
    largest_upload,
    normalize_prefix,
    one_at_a_time,
    part_size_for,
    parts_in_flight,
    reachable,
    size_step,
)

MIB = 1024 * 1024
TIB = 1024**4
PART_LIMITS = [1, 2, 3, 9, 10, 11, 100, 999, 1000, 2000, 5000, 9999, 10_000, 20_000]


def sizes(max_parts: int, base: int = PART_SIZE) -> list[int]:
    return [part_size_for(number, base, max_parts) for number in range(1, max_parts + 1)]


def test_part_sizes_grow_so_10000_parts_reach_the_5_tib_object_limit():
    assert part_size_for(1) == part_size_for(1000) == PART_SIZE
    assert part_size_for(1001) == 2 * PART_SIZE
    assert sum(part_size_for(number) for number in range(1, 10001)) >= 5 * 1024**4
    assert normalize_prefix("postgres") == normalize_prefix("/postgres/") == "postgres/"
    assert normalize_prefix("") == ""


def test_with_the_default_10000_parts_every_part_is_the_size_it_always_was():
    assert MAX_PARTS == 10_000 and size_step() == 1000
    before = [min(PART_SIZE * 2 ** ((number - 1) // 1000), MAX_PART_SIZE) for number in range(1, MAX_PARTS + 1)]
    assert sizes(MAX_PARTS) == before
    assert largest_upload() == 1000 * PART_SIZE * 1023  # 8 MiB x (1 + 2 + ... + 512) x 1000 = 7.99 TiB


@pytest.mark.parametrize("base", [5 * MIB, PART_SIZE])
@pytest.mark.parametrize("max_parts", PART_LIMITS)
def test_parts_1_to_max_parts_hold_the_documented_maximum(max_parts, base):
    """largest_upload is what the parts hold; it reaches min(5 TiB, max_parts x 5 GiB / 2) whenever any growth
    can, else the growth is the fastest there is (doubling at every part)."""
    held = sizes(max_parts, base)
    assert sum(held) == largest_upload(max_parts, base) == reachable(max_parts, base, size_step(max_parts, base))
    assert held[0] == base and all(a <= b <= MAX_PART_SIZE for a, b in zip(held, held[1:], strict=False))
    wanted = min(MAX_OBJECT_SIZE, max_parts * MAX_PART_SIZE // 2)
    if sum(held) < wanted:
        assert size_step(max_parts, base) == 1, "a faster growth would have held more"
    step = size_step(max_parts, base)
    assert 1 <= step <= max(1, max_parts // SIZE_STEPS)
    if step < max(1, max_parts // SIZE_STEPS):  # the largest step that holds it: one more part per size won't
        assert reachable(max_parts, base, step + 1) < wanted


def test_a_provider_allowing_1000_parts_still_takes_terabytes_with_8_mib_parts_first():
    held = sizes(1000)
    assert largest_upload(1000) >= 2 * TIB  # 2.46 TiB, 1000 x 5 GiB / 2 as documented in size_step
    assert held[:size_step(1000)] == [PART_SIZE] * size_step(1000)
    small = sum(size for size in held if size < 1024 * MIB)
    assert small >= 50 * 1024 * MIB, "parts of 1 GiB come before a 50 GiB backup"


def test_three_parts_of_5_mib_double_at_every_part():
    assert sizes(3, 5 * MIB) == [5 * MIB, 10 * MIB, 20 * MIB]
    assert largest_upload(3, 5 * MIB) == 35 * MIB
    assert binary_size(35 * MIB) == "35.0 MiB" and binary_size(largest_upload(1000)) == "2.5 TiB"
    assert binary_size(512) == "512 B"


@pytest.mark.parametrize("max_parts", [1000, MAX_PARTS])
def test_memory_held_stays_within_upload_memory_however_large_parts_grow(max_parts):
    assert parts_in_flight(PART_SIZE) == PARTS_IN_FLIGHT
    assert UPLOAD_MEMORY < 100 * MIB
    for number in range(1, max_parts + 1, max(1, max_parts // 100)):
        size = part_size_for(number, PART_SIZE, max_parts)
        held = (parts_in_flight(size) + 1) * size  # parts in flight, and the one filling
        assert held <= max(UPLOAD_MEMORY, size), f"part {number}: {held} bytes held"


def test_max_parts_is_a_setting_with_an_env_override():
    assert parse_settings({}).s3.max_parts == MAX_PARTS
    assert parse_settings({"s3": {"max_parts": 1000}}).s3.max_parts == 1000
    environment = env_overrides({"PGDR_S3__MAX_PARTS": "1000"})
    assert parse_settings(merge_overrides({"s3": {"bucket": "b"}}, environment)).s3.max_parts == 1000
    with pytest.raises(ConfigError, match="max_parts"):
        parse_settings({"s3": {"max_parts": 0}})


def test_warnings_go_to_the_pgdr_storage_logger_by_default(caplog):
    with caplog.at_level(logging.WARNING, logger="pgdr.storage"):
        log_warning("S3: upload part 3 failed; trying again")
    assert [(record.name, record.levelno, record.getMessage()) for record in caplog.records] == [
        ("pgdr.storage", logging.WARNING, "S3: upload part 3 failed; trying again")]


def test_storage_never_imports_the_user_interface():
    code = ("import sys, pgdr.storage, pgdr.storage.local, pgdr.storage.s3; "
            "print(sorted(name for name in sys.modules if name in ('pgdr.ui', 'rich', 'typer')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_reports_from_upload_threads_reach_the_reporter_one_at_a_time():
    """A reporter that writes a message in two pieces (as a console may) never gets two messages interleaved."""
    pieces: list[str] = []
    started = threading.Barrier(8)

    def two_pieces(message: str) -> None:
        pieces.append(message + ":begin")
        threading.Event().wait(0.001)  # let another thread run in between, if it may
        pieces.append(message + ":end")

    report = one_at_a_time(two_pieces)

    def send(number: int) -> None:
        started.wait()
        report(f"S3: upload part {number} failed; trying again")

    threads = [threading.Thread(target=send, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pieces) == 16
    for begin, end in zip(pieces[::2], pieces[1::2], strict=True):
        assert begin.removesuffix(":begin") == end.removesuffix(":end"), pieces
