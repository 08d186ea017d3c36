"""Backup keys (names, parsing, ordering) and manifests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pgdr.artifact import (
    EXTENSIONS,
    BackupKey,
    DatabaseContents,
    Manifest,
    TableCount,
    is_backup_key,
    make_key,
    make_split_key,
    parse_key,
)
from pgdr.errors import IntegrityError, UsageError

WHEN = datetime(2025, 11, 16, 9, 58, 31, tzinfo=UTC)


@pytest.mark.parametrize(
    ("compression", "expected"),
    [
        ("gzip", "20251116/postgres-all-20251116-095831.sql.gz"),
        ("zstd", "20251116/postgres-all-20251116-095831.sql.zst"),
        ("none", "20251116/postgres-all-20251116-095831.sql"),
    ],
)
def test_make_key_follows_the_shell_pipeline_layout(compression: str, expected: str) -> None:
    key = make_key(WHEN, compression)
    assert key.key == expected
    assert str(key) == expected
    assert key.compression == compression
    assert key.safety is False
    assert key.manifest_key == expected + ".manifest.json"


def test_safety_keys_live_under_the_safety_prefix() -> None:
    key = make_key(WHEN, "gzip", safety=True)
    assert key.key == "safety/20251116/postgres-all-20251116-095831.sql.gz"
    assert key.safety is True
    assert parse_key(key.key) == key


@pytest.mark.parametrize("compression", sorted(EXTENSIONS))
@pytest.mark.parametrize("safety", [False, True])
def test_make_then_parse_round_trips(compression: str, safety: bool) -> None:
    made = make_key(WHEN, compression, safety)
    parsed = parse_key(made.key)
    assert parsed == made
    assert parsed.created == WHEN
    assert parsed.created.tzinfo is not None and parsed.created.utcoffset() == timedelta(0)


def test_make_key_converts_to_utc_and_drops_microseconds() -> None:
    # 01:30 in UTC+02:00 on the 17th is 23:30 UTC on the 16th: folder and name follow UTC.
    local = datetime(2025, 11, 17, 1, 30, 5, 999_999, tzinfo=timezone(timedelta(hours=2)))
    key = make_key(local, "gzip")
    assert key.key == "20251116/postgres-all-20251116-233005.sql.gz"
    assert key.created == datetime(2025, 11, 16, 23, 30, 5, tzinfo=UTC)
    assert parse_key(key.key) == key


def test_years_before_1000_keep_eight_digit_dates() -> None:
    key = make_key(datetime(10, 1, 1, tzinfo=UTC), "none")
    assert key.key == "00100101/postgres-all-00100101-000000.sql"
    assert parse_key(key.key) == key


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
       st.sampled_from(sorted(EXTENSIONS)), st.booleans())
def test_round_trip_for_any_time(created: datetime, compression: str, safety: bool) -> None:
    made = make_key(created, compression, safety)
    assert parse_key(made.key) == made
    assert made.created == created.replace(microsecond=0)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../20251116/postgres-all-20251116-095831.sql.gz",
        "20251116/../postgres-all-20251116-095831.sql.gz",
        "20251116/../../etc/passwd",
        "safety/../20251116/postgres-all-20251116-095831.sql.gz",
        "/20251116/postgres-all-20251116-095831.sql.gz",
        "/etc/passwd",
        "./20251116/postgres-all-20251116-095831.sql.gz",
        "20251116//postgres-all-20251116-095831.sql.gz",
        "20251116\\postgres-all-20251116-095831.sql.gz",
        "postgres-all-20251116-095831.sql.gz",
        "x/20251116/postgres-all-20251116-095831.sql.gz",
        "Safety/20251116/postgres-all-20251116-095831.sql.gz",
        "20251116/postgres-all-20251116-095831.sql.gz.manifest.json",
        "20251116/postgres-all-20251116-095831.sql.gz.partial",
        "20251116/postgres-all-20251116-095831.sql.bz2",
        "20251116/postgres-all-20251116-095831.sql.gz.gz",
        "20251116/postgres-all-20251116-095831.dump",
        "20251116/postgres-all-20251116-095831.sql.gz\n",
        "20251116/postgres-all-20251116-095831.sql\n",
        " 20251116/postgres-all-20251116-095831.sql.gz",
        "20251116/postgres-all-20251116-095831.sql.gz ",
        "20251116/.postgres-all-20251116-095831.sql.gz.partial-123",
        "20251116/postgres-all-20251116-09583.sql.gz",
        "20251116/postgres-all-2025111-6095831.sql.gz",
        "20251116/postgres-one-20251116-095831.sql.gz",
        "2025-11-16/postgres-all-20251116-095831.sql.gz",
        "٢٠٢٥١١١٦/postgres-all-٢٠٢٥١١١٦-095831.sql.gz",
    ],
)
def test_refuses_anything_but_the_exact_layout(bad: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_key(bad)
    assert "not a backup key" in raised.value.message
    assert raised.value.hint
    assert not is_backup_key(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "20251301/postgres-all-20251301-095831.sql.gz",  # month 13
        "20250230/postgres-all-20250230-095831.sql.gz",  # 30 February
        "20251116/postgres-all-20251116-245831.sql.gz",  # hour 24
        "20251116/postgres-all-20251116-096031.sql.gz",  # minute 60
        "20251116/postgres-all-20251116-095860.sql.gz",  # second 60
        "00001116/postgres-all-00001116-095831.sql.gz",  # year 0
    ],
)
def test_refuses_impossible_dates(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid date"):
        parse_key(bad)


def test_leap_day_is_a_valid_date() -> None:
    assert parse_key("20240229/postgres-all-20240229-000000.sql").created == datetime(2024, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad",
    [
        "20251115/postgres-all-20251116-095831.sql.gz",
        "20251116/postgres-all-20241116-095831.sql.zst",
        "safety/20251117/postgres-all-20251116-095831.sql",
    ],
)
def test_refuses_folder_and_name_dates_that_differ(bad: str) -> None:
    with pytest.raises(UsageError, match="folder and name dates differ"):
        parse_key(bad)


def test_keys_order_by_creation_time_not_by_text() -> None:
    times = [WHEN + timedelta(seconds=offset) for offset in (3600 * 24 * 400, -5, 0, 1, 3600 * 24 * 31)]
    keys = [make_key(when, compression) for when, compression in zip(times, ["none", "zstd", "gzip", "none", "zstd"],
                                                                     strict=True)]
    ordered = sorted(keys)
    assert [key.created for key in ordered] == sorted(times)
    assert ordered[0].created == WHEN - timedelta(seconds=5)
    assert ordered[-1].created == WHEN + timedelta(days=400)
    assert max(keys).key == "20261221/postgres-all-20261221-095831.sql"


def test_same_second_orders_deterministically_and_safety_keys_sort_with_the_rest() -> None:
    gzip, zstd = make_key(WHEN, "gzip"), make_key(WHEN, "zstd")
    earlier_safety = make_key(WHEN - timedelta(seconds=1), "gzip", safety=True)
    assert sorted([zstd, gzip, earlier_safety]) == [earlier_safety, gzip, zstd]


@given(st.text())
@example("20251116/postgres-all-20251116-095831.sql.gz")
@example("safety/20251116/postgres-all-20251116-095831.sql.zst")
@example("20251116/postgres-all-20251116-095831.sql\n")
@example("20251116/postgres-all-20251116-095831.sql\x00")
@example("20251116/postgres-all-20251116-999999.sql")
def test_parse_key_on_arbitrary_text_parses_exactly_or_raises_usage_error(text: str) -> None:
    try:
        key = parse_key(text)
    except UsageError:
        assert not is_backup_key(text)
        return
    assert isinstance(key, BackupKey)
    assert key.key == text
    # Whatever parsed is exactly what make_key would have produced for that time.
    assert make_key(key.created, key.compression, key.safety) == key


@given(st.from_regex(r"\A(safety/)?[0-9]{8}/postgres-all-[0-9]{8}-[0-9]{6}\.sql(\.gz|\.zst)?\Z"))
def test_parse_key_on_near_miss_keys_parses_exactly_or_raises_usage_error(text: str) -> None:
    try:
        key = parse_key(text)
    except UsageError:
        return
    assert key.key == text
    assert make_key(key.created, key.compression, key.safety).key == text


def sample_manifest(key: str = "20251116/postgres-all-20251116-095831.sql.gz") -> Manifest:
    return Manifest(
        key=key,
        compression="gzip",
        size=12345,
        sha256="ab" * 32,
        uncompressed_size=99999,
        server_version="15.18",
        pg_dumpall_version="15.18 (Debian 15.18-0+deb12u1)",
        pgdr_version="0.1.0",
        started_at=WHEN,
        finished_at=WHEN + timedelta(seconds=7, microseconds=250_000),
        seconds={"dump": 6.5, "upload": 0.75},
        databases=[
            DatabaseContents(name="demo", tables=[TableCount(schema="public", table="orders", rows=3000),
                                                  TableCount(schema="sales", table='we"ird tab le', rows=0)]),
            DatabaseContents(name="weird-db name", tables=[]),
        ],
    )


def test_manifest_round_trips_through_json() -> None:
    manifest = sample_manifest()
    data = manifest.to_json()
    assert data.endswith(b"\n")
    loaded = Manifest.from_json(data, manifest.key)
    assert loaded == manifest
    assert loaded.finished_at == WHEN + timedelta(seconds=7, microseconds=250_000)
    assert loaded.database("demo").counts() == {("public", "orders"): 3000, ("sales", 'we"ird tab le'): 0}
    assert loaded.database("weird-db name").counts() == {}
    assert loaded.database("missing") is None


def test_manifest_json_uses_schema_not_the_python_field_name() -> None:
    document = json.loads(sample_manifest().to_json())
    table = document["databases"][0]["tables"][0]
    assert table == {"schema": "public", "table": "orders", "rows": 3000}
    assert document["format_version"] == 1
    assert document["contains_passwords"] is False


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        lambda data: data.replace(b'"size": 12345', b'"size": "big"'),
        lambda data: data.replace(b'"sha256"', b'"sha_256"'),
        lambda data: data.replace(b'"rows": 3000', b'"rows": 30.5'),
        lambda data: b"\xff\xfe" + data,
        lambda data: b"[]",
        lambda data: b"null",
        lambda data: data.replace(b"{", b"[", 1),
    ],
)
def test_damaged_manifest_raises_integrity_error(damage) -> None:
    manifest = sample_manifest()
    with pytest.raises(IntegrityError) as raised:
        Manifest.from_json(damage(manifest.to_json()), manifest.key)
    assert manifest.key in raised.value.message
    assert "unreadable" in raised.value.message
    assert "restore another backup" in raised.value.hint


@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_manifest_raise_integrity_error_only(data: bytes) -> None:
    try:
        Manifest.from_json(data, "k")
    except IntegrityError:
        pass


# --- found by the mutation pass (tests/mutants/mutation_pass.py) --------------------------------------------------

def test_split_and_encrypted_keys_say_what_they_are() -> None:
    split = make_split_key(WHEN)
    assert split.key == "20251116/postgres-all-20251116-095831.split"
    assert (split.compression, split.format, split.encrypted) == ("custom", "split", False)
    assert parse_key(split.key) == split
    assert split.object_key("globals.sql.gz") == "20251116/postgres-all-20251116-095831.split/globals.sql.gz"
    encrypted = make_key(WHEN, "zstd", encrypted=True)
    assert encrypted.key == "20251116/postgres-all-20251116-095831.sql.zst.age"
    assert (encrypted.compression, encrypted.format, encrypted.encrypted) == ("zstd", "plain", True)
    assert parse_key(encrypted.key) == encrypted
    assert parse_key("20251116/postgres-all-20251116-095831.sql").format == "plain"


def test_a_manifest_written_before_the_newer_fields_reads_with_their_defaults() -> None:
    document = json.loads(sample_manifest().to_json())
    for name in ("format", "encryption", "parts", "sections", "sections_proof", "embedded_secrets",
                 "contains_passwords"):
        del document[name]
    loaded = Manifest.from_json(json.dumps(document).encode(), "k")
    assert (loaded.format, loaded.encryption, loaded.sections_proof, loaded.contains_passwords) == (
        "plain", "none", "", False)
    assert loaded.parts == [] and loaded.sections == [] and loaded.embedded_secrets == []
