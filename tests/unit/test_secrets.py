"""Secrets: the .env writer (0600, keeps other lines, round-trips through python-dotenv) and the resolver."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from file_creation import creation_modes_of, traced
from pgdr.config import parse_settings
from pgdr.errors import ConfigError, ExitCode, SecretMissing
from pgdr.redact import MASK, redact
from pgdr.run import child_environment
from pgdr.secrets import (
    UNQUOTED_SAFE,
    DotenvSource,
    EnvironmentSource,
    SecretResolver,
    SsmSource,
    build_sources,
    generate_password,
    make_resolver,
    missing_names,
    write_dotenv,
)

pytestmark = pytest.mark.usefixtures("no_registered_secrets")  # tests/unit/conftest.py


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    original = os.umask(0o022)
    os.umask(original)
    yield os.umask
    os.umask(original)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- write_dotenv ---------------------------------------------------------------------------------------------

WRITE_UNDER_UMASK = """
import os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from pgdr.secrets import write_dotenv
write_dotenv(Path(sys.argv[1]), {"POSTGRES_PASSWORD": "s3cret-value"})
"""


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o002])
def test_new_dotenv_file_is_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    """0600 from creation, not chmodded afterwards: with a umask of 0 a file created 0666 would be readable by
    everyone until the chmod. strace shows the mode each file is created with (the file, or the temporary file
    renamed onto it)."""
    path = tmp_path / ".env"
    log = tmp_path / "strace.log"
    result = traced([sys.executable, "-c", WRITE_UNDER_UMASK, str(path), f"{mask:o}"], log, tmp_path, os.environ)
    assert result.returncode == 0, result.stderr
    assert mode_of(path) == 0o600
    assert dotenv_values(path) == {"POSTGRES_PASSWORD": "s3cret-value"}
    modes = creation_modes_of(path, log, tmp_path)
    assert modes, f"the trace does not show {path} being created:\n{log.read_text()}"
    assert all(mode & ~mask & 0o077 == 0 for mode in modes), [oct(mode) for mode in modes]


def test_existing_world_readable_file_becomes_0600(tmp_path: Path, umask) -> None:
    umask(0o000)
    path = tmp_path / ".env"
    path.write_text("OTHER=1\n")
    path.chmod(0o666)
    write_dotenv(path, {"POSTGRES_PASSWORD": "s3cret-value"})
    assert mode_of(path) == 0o600


def test_creates_missing_folders_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / ".env"
    write_dotenv(path, {"A": "1"})
    assert sorted(item.name for item in path.parent.iterdir()) == [".env"]


def test_keeps_unrelated_lines_and_comments_and_replaces_keys_in_place(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# database secrets\n"
        "\n"
        "UNRELATED=keep me\n"
        "POSTGRES_PASSWORD=old-value  # old comment\n"
        "export APP_TOKEN='abc'\n"
        "  # indented comment\n"
        "DEMO_PASSWORD=old\n"
        "DEMO_PASSWORD=older duplicate\n"
        "NOT A KEY LINE\n"
    )
    write_dotenv(path, {"POSTGRES_PASSWORD": "new-value", "DEMO_PASSWORD": "new-demo", "ADDED": "appended"})
    assert path.read_text().splitlines() == [
        "# database secrets",
        "",
        "UNRELATED=keep me",
        'POSTGRES_PASSWORD="new-value"',
        "export APP_TOKEN='abc'",
        "  # indented comment",
        'DEMO_PASSWORD="new-demo"',
        "NOT A KEY LINE",
        'ADDED="appended"',
    ]
    values = dotenv_values(path)
    assert values["UNRELATED"] == "keep me"
    assert values["APP_TOKEN"] == "abc"
    assert values["POSTGRES_PASSWORD"] == "new-value"
    assert values["DEMO_PASSWORD"] == "new-demo"


def test_export_lines_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("export POSTGRES_PASSWORD=old\n")
    write_dotenv(path, {"POSTGRES_PASSWORD": "new"})
    assert dotenv_values(path) == {"POSTGRES_PASSWORD": "new"}
    assert "old" not in path.read_text()


def test_writing_twice_is_stable(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_dotenv(path, {"A": "1", "B": "2"})
    first = path.read_text()
    write_dotenv(path, {"A": "1", "B": "2"})
    assert path.read_text() == first


ROUND_TRIP_VALUES = {
    "DOUBLE": 'say "hi"',
    "SINGLE": "it's",
    "BOTH": """'"'"'""",
    "BACKSLASH": "back\\slash \\n not a newline",
    "NEWLINE": "line one\nline two\n",
    "DOLLAR": "pa$$word $HOME $1",
    "HASH": "#not a comment # really",
    "SPACES": "  padded  ",
    "TAB": "a\tb",
    "EQUALS": "a=b=c",
    "UNICODE": "pässwörd ✓ 数据",
    "EMPTY_LOOKING": '""',
    "URLSAFE": "Vq3-_xYz0123456789abcdefABCDEF",
}


def test_values_round_trip_through_python_dotenv(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# header\nUNRELATED=1\n")
    write_dotenv(path, ROUND_TRIP_VALUES)
    assert dotenv_values(path) == {"UNRELATED": "1", **ROUND_TRIP_VALUES}
    for name, value in ROUND_TRIP_VALUES.items():
        assert DotenvSource(path).get(name) == value


def test_values_survive_a_rewrite_of_other_keys(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_dotenv(path, ROUND_TRIP_VALUES)
    write_dotenv(path, {"OTHER": "x"})
    assert dotenv_values(path) == {**ROUND_TRIP_VALUES, "OTHER": "x"}


dotenv_safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=80)
@given(st.dictionaries(st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,10}\Z"), dotenv_safe_text, min_size=1, max_size=4))
@example({"A": 'x"y'})
@example({"A": "\\n\n\\"[:-1]})
def test_any_value_round_trips(tmp_path: Path, values: dict[str, str]) -> None:
    path = tmp_path / ".env"
    path.unlink(missing_ok=True)
    if any(value.endswith("\\") and not UNQUOTED_SAFE.fullmatch(value) for value in values.values()):
        with pytest.raises(ConfigError):  # cannot be written unambiguously: refused (see the test below)
            write_dotenv(path, values)
        return
    write_dotenv(path, values)
    assert dotenv_values(path, interpolate=False) == values


def test_dollar_brace_survives(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/root")
    path = tmp_path / ".env"
    write_dotenv(path, {"POSTGRES_PASSWORD": "a${HOME}b"})
    assert DotenvSource(path).get("POSTGRES_PASSWORD") == "a${HOME}b"


def test_trailing_backslash_survives_when_it_can_be_written_bare(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_dotenv(path, {"A": "ends\\with\\", "B": "next"})
    assert dotenv_values(path) == {"A": "ends\\with\\", "B": "next"}


def test_trailing_backslash_with_spaces_is_refused_without_showing_the_value(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    with pytest.raises(ConfigError) as raised:
        write_dotenv(path, {"A": "secret value \\"})
    assert "secret value" not in str(raised.value) and not path.exists()


def test_carriage_return_survives(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_dotenv(path, {"A": "cr\rhere"})
    assert dotenv_values(path) == {"A": "cr\rhere"}


# --- resolving secrets --------------------------------------------------------------------------------------------

def make_sources(tmp_path: Path, environ: dict[str, str], dotenv: dict[str, str]):
    path = tmp_path / ".env"
    if dotenv:
        write_dotenv(path, dotenv)
    return [EnvironmentSource(environ), DotenvSource(path)], path


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    sources, _ = make_sources(tmp_path, {"POSTGRES_PASSWORD": "from-env"}, {"POSTGRES_PASSWORD": "from-file"})
    resolver = SecretResolver(sources)
    assert resolver.get("POSTGRES_PASSWORD") == "from-env"
    assert resolver.lookup("POSTGRES_PASSWORD") == ("from-env", "env")
    assert resolver.source_of("POSTGRES_PASSWORD") == "env"


def test_dotenv_is_used_when_the_environment_lacks_the_name(tmp_path: Path) -> None:
    sources, _ = make_sources(tmp_path, {"OTHER": "x"}, {"POSTGRES_PASSWORD": "from-file"})
    resolver = SecretResolver(sources)
    assert resolver.get("POSTGRES_PASSWORD") == "from-file"
    assert resolver.source_of("POSTGRES_PASSWORD") == "dotenv"


def test_order_follows_the_sources_list(tmp_path: Path) -> None:
    sources, _ = make_sources(tmp_path, {"P": "from-env"}, {"P": "from-file"})
    assert SecretResolver(list(reversed(sources))).get("P") == "from-file"


def test_empty_values_count_as_missing(tmp_path: Path) -> None:
    sources, _ = make_sources(tmp_path, {"P": ""}, {"P": "from-file", "Q": ""})
    resolver = SecretResolver(sources)
    assert resolver.get("P") == "from-file"
    assert resolver.lookup("Q") is None


def test_missing_secret_names_every_place_looked(tmp_path: Path) -> None:
    sources, path = make_sources(tmp_path, {"OTHER": "x"}, {"OTHER": "x"})
    resolver = SecretResolver(sources)
    with pytest.raises(SecretMissing) as raised:
        resolver.get("DEMO_USER_PASSWORD")
    error = raised.value
    assert error.exit_code == ExitCode.SECRET_MISSING
    assert "secret DEMO_USER_PASSWORD not found" in error.message
    assert "environment variable DEMO_USER_PASSWORD" in error.message
    assert f"DEMO_USER_PASSWORD in {path}" in error.message
    assert "DEMO_USER_PASSWORD" in error.hint
    assert SsmSource("/prod/pgdr/").describe("X") == "SSM parameter /prod/pgdr/X"  # the third place, when used


def test_missing_dotenv_file_is_just_one_more_place(tmp_path: Path) -> None:
    resolver = SecretResolver([EnvironmentSource({}), DotenvSource(tmp_path / "absent.env")])
    assert resolver.lookup("P") is None
    assert missing_names(resolver, ["P", "Q"]) == ["P", "Q"]


def test_resolved_values_are_registered_for_redaction(tmp_path: Path, monkeypatch) -> None:
    sources, _ = make_sources(tmp_path, {"POSTGRES_PASSWORD": "env-secret-1"}, {"DEMO_PASSWORD": "file-secret-2"})
    resolver = SecretResolver(sources)
    assert redact("env-secret-1 file-secret-2") == "env-secret-1 file-secret-2"
    resolver.get("POSTGRES_PASSWORD")
    resolver.get("DEMO_PASSWORD")
    assert redact("saw env-secret-1 and file-secret-2") == f"saw {MASK} and {MASK}"
    monkeypatch.setenv("POSTGRES_PASSWORD", "env-secret-1")
    assert "POSTGRES_PASSWORD" not in child_environment()
    assert child_environment(keep_secrets=True)["POSTGRES_PASSWORD"] == "env-secret-1"


def test_values_are_cached_after_the_first_lookup(tmp_path: Path) -> None:
    sources, path = make_sources(tmp_path, {}, {"P": "first"})
    resolver = SecretResolver(sources)
    assert resolver.get("P") == "first"
    write_dotenv(path, {"P": "second"})
    assert resolver.get("P") == "first"
    assert SecretResolver(sources).get("P") == "second"


def test_remember_sets_a_value_and_registers_it() -> None:
    resolver = SecretResolver([EnvironmentSource({})])
    resolver.remember("NEW_PASSWORD", "generated-1234", "generated")
    assert resolver.get("NEW_PASSWORD") == "generated-1234"
    assert resolver.source_of("NEW_PASSWORD") == "generated"
    assert redact("generated-1234") == MASK


def test_build_sources_follows_the_config(tmp_path: Path) -> None:
    settings = parse_settings({"secrets": {"sources": ["ssm", "dotenv", "env"], "ssm_path": "/p/",
                                           "dotenv": "sec/.env"}}, tmp_path / "pgdr.toml")
    sources = build_sources(settings, environ={"X": "1"})
    assert [source.name for source in sources] == ["ssm", "dotenv", "env"]
    assert sources[1].path == tmp_path.resolve() / "sec" / ".env"
    assert sources[2].get("X") == "1"
    assert sources[0].parameter_name("X") == "/p/X"


def test_make_resolver_registers_the_configured_names(tmp_path: Path, monkeypatch) -> None:
    settings = parse_settings({"databases": [{"name": "d", "readwrite_user": {"name": "u", "password": "D_PW"}}]},
                              tmp_path / "pgdr.toml")
    monkeypatch.setenv("D_PW", "never-to-children")
    make_resolver(settings)
    assert "D_PW" not in child_environment()


def test_generated_passwords_are_long_random_and_urlsafe() -> None:
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) >= 32
        assert set(password) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
