"""A client encoding set in pgdr's environment never reaches pg_dumpall: in a client-only encoding such as SJIS a
multibyte character can hold the byte of a quote or a backslash, and the dump would no longer read as it does in
the database's own encoding."""

from __future__ import annotations

import json

from harness import Project


def test_pgclientencoding_does_not_change_the_dump_encoding(running_project: Project) -> None:
    with running_project.connect("demo") as connection:
        connection.execute("CREATE TABLE names (n text)")
        connection.execute("INSERT INTO names VALUES ('表'), ('ソ')")  # SJIS second bytes 0x5c: a backslash
    running_project.ok("backup", env={"PGCLIENTENCODING": "SJIS"})
    [manifest_path] = running_project.backups.rglob("*.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["sections_proof"] == "restrict" and len(manifest["sections"]) >= 2
    [demo] = [database for database in manifest["databases"] if database["name"] == "demo"]
    assert {"schema": "public", "table": "names", "rows": 2} in demo["tables"]
