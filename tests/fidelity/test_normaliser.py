"""The dump normaliser of the fidelity tier forgives only what two dumps of the same cluster may differ in (the
random \\restrict keys, the order inside one run of default privileges) and keeps every real difference."""

from __future__ import annotations

import pytest

from fidelity.fidelity_helpers import assert_no_difference, difference, normalised

DUMP = """\\restrict abcDEF123
CREATE ROLE app;
\\unrestrict abcDEF123
\\connect app
\\restrict Zyx987
CREATE TABLE public.t (id integer, note text);
COPY public.t (id, note) FROM stdin;
1\tone
2\ttwo
\\.
GRANT SELECT ON TABLE public.t TO reader;
GRANT INSERT ON TABLE public.t TO writer;
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;
ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT ALL ON TABLES TO writer;

CREATE VIEW public.v AS SELECT 1;
\\unrestrict Zyx987
"""


def test_other_restrict_keys_and_another_order_of_default_privileges_are_the_same_dump() -> None:
    other = (DUMP.replace("abcDEF123", "QQQ000").replace("Zyx987", "k3y")
             .replace("GRANT SELECT ON TABLES TO reader;\nALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public "
                      "GRANT ALL ON TABLES TO writer;",
                      "GRANT ALL ON TABLES TO writer;\nALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public "
                      "GRANT SELECT ON TABLES TO reader;"))
    assert other != DUMP
    assert normalised(other) == normalised(DUMP)
    assert "\\restrict KEY" in normalised(DUMP) and "abcDEF123" not in normalised(DUMP)


@pytest.mark.parametrize(("what", "old", "new"), [
    ("a changed row", "2\ttwo\n", "2\tTWO\n"),
    ("a lost row", "2\ttwo\n", ""),
    ("an added row", "2\ttwo\n", "2\ttwo\n3\tthree\n"),
    ("rows in another order", "1\tone\n2\ttwo\n", "2\ttwo\n1\tone\n"),
    ("a lost grant", "GRANT INSERT ON TABLE public.t TO writer;\n", ""),
    ("grants in another order", "GRANT SELECT ON TABLE public.t TO reader;\nGRANT INSERT ON TABLE public.t TO writer;",
     "GRANT INSERT ON TABLE public.t TO writer;\nGRANT SELECT ON TABLE public.t TO reader;"),
    ("a changed default privilege", "GRANT ALL ON TABLES TO writer", "GRANT SELECT ON TABLES TO writer"),
    ("a lost default privilege",
     "ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT ALL ON TABLES TO writer;\n", ""),
    ("a lost statement", "CREATE VIEW public.v AS SELECT 1;\n", ""),
    ("a changed role", "CREATE ROLE app;", "CREATE ROLE app2;"),
    ("a restrict line that is not pg_dump's", "\\restrict Zyx987", "\\restrict Zyx987; SELECT 1"),
    ("a changed blank line", "\n\nCREATE VIEW", "\nCREATE VIEW"),
])
def test_a_real_difference_survives_the_normaliser(what: str, old: str, new: str) -> None:
    assert old in DUMP, what
    changed = DUMP.replace(old, new, 1)
    assert normalised(changed) != normalised(DUMP), f"{what} was normalised away"
    with pytest.raises(AssertionError, match="differs"):
        assert_no_difference(normalised(DUMP), normalised(changed), "the dump")


def test_the_difference_shows_the_first_differing_lines() -> None:
    shown = difference(normalised(DUMP), normalised(DUMP.replace("2\ttwo", "2\tTWO")))
    assert "-2\ttwo" in shown and "+2\tTWO" in shown
    assert "more diff lines" in difference("\n".join(map(str, range(200))), "", limit=10)
