"""The names `pgdr undo` gives: the copy's (at most 63 bytes, never a split character), the table as typed, and
the statement it suggests, quoted whatever the names hold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgdr.errors import UsageError
from pgdr.runbooks.undo import copy_name, insert_back, split_table
from pgdr.wal.recovery import RecoveryTarget


def test_a_table_without_a_schema_is_in_public_and_names_are_taken_as_typed():
    assert split_table("orders") == ("public", "orders")
    assert split_table("Sales.Orders") == ("Sales", "Orders")
    with pytest.raises(UsageError):
        split_table("sales.")


def test_the_copy_is_named_by_the_xid_or_the_time_and_fits_postgresqls_63_bytes():
    assert copy_name("orders", RecoveryTarget("xid", "48213")) == "orders_before_48213"
    moment = datetime(2026, 12, 1, 10, 42, tzinfo=UTC)
    assert copy_name("orders", RecoveryTarget("time", "x", time=moment)) == "orders_before_20261201_104200"
    long = copy_name("é" * 40, RecoveryTarget("xid", "48213"))
    assert len(long.encode()) <= 63 and long.endswith("_before_48213")
    long.encode().decode("utf-8")  # no character cut in half


def test_the_suggested_insert_quotes_every_name():
    assert insert_back("public", 'od"d', "copy") == (
        'INSERT INTO "public"."od""d" SELECT * FROM "public"."copy" EXCEPT SELECT * FROM "public"."od""d";')
