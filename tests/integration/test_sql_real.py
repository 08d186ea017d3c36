"""Verifiers computed by pgdr let a real client log in, non-ASCII passwords included (SASLprep)."""

from __future__ import annotations

import psycopg
import pytest

from pgdr.config import UserSettings
from pgdr.postgres.sql import create_role_if_missing, password_statement

PASSWORDS = [
    "plain-ascii",
    "pässwörd",
    "a\u00a0b non-breaking space",
    "I\u00adX soft hyphen",
    "\ufb01 ligature",
    "e\u0301 combining accent",
    "\u0627\u0031 bidi violation",
    "x\u0007\u00e9 control",
    "\u2168",
]


def test_users_log_in_with_passwords_set_from_pgdr_verifiers(pg_server) -> None:
    failures = []
    with pg_server.connect() as connection:
        for number, password in enumerate(PASSWORDS):
            user = UserSettings(name=f"user {number}", password="NAME")
            connection.execute(create_role_if_missing(user.name, "LOGIN"))
            connection.execute(password_statement(user, password).sql)
            try:
                psycopg.connect(host=pg_server.host, port=pg_server.port, dbname="postgres", user=user.name,
                                password=password, connect_timeout=10).close()
            except psycopg.OperationalError:
                failures.append(password)
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(host=pg_server.host, port=pg_server.port, dbname="postgres", user=user.name,
                                password=password + "x", connect_timeout=10).close()
    assert failures == []
