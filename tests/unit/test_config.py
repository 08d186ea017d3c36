"""pgdr.toml -> Settings: sizes, defaults, paths, error messages that name the bad key, env overrides."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgdr.config import (
    DEFAULT_CONFIG_NAME,
    Settings,
    env_overrides,
    format_location,
    load_settings,
    parse_settings,
    parse_size,
)
from pgdr.errors import ConfigError, ExitCode

DATABASE = """
[[databases]]
name = "demo"
readwrite_user = { name = "demo_user", password = "DEMO_USER_PASSWORD" }
readonly_user = { name = "demo_readonly", password = "DEMO_READONLY_PASSWORD" }
"""


def write_config(folder: Path, text: str, name: str = DEFAULT_CONFIG_NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={} if environ is None else environ)
    assert raised.value.exit_code == ExitCode.CONFIG
    assert raised.value.hint
    return raised.value


# --- parse_size ---

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1MB", 1_000_000),
        ("500kB", 500_000),
        ("500KB", 500_000),
        ("2GiB", 2 * 1024**3),
        ("1MiB", 1024**2),
        ("1KiB", 1024),
        ("3TiB", 3 * 1024**4),
        ("1T", 1000**4),
        ("1.5MB", 1_500_000),
        ("0.5KiB", 512),
        (" 10 kb ", 10_000),
        ("512", 512),
        ("7B", 7),
        ("0", 0),
        ("12345678901234567890123456789012345", 12345678901234567890123456789012345),
        ("1" + "0" * 400 + "MB", 10**406),
        (0, 0),
        (512, 512),
        (10**30, 10**30),
    ],
)
def test_parse_size_accepts_decimal_and_binary_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected
    assert type(parse_size(text)) is int


@pytest.mark.parametrize(
    "garbage",
    ["", " ", "MB", "abc", "-1MB", "1XB", "1 MB extra", "1e6", "1,5MB", "1..5MB", "1MBB", "one MB", "0x10",
     True, False, 1.5, float("inf"), float("nan"), None, [1], {"size": 1}],
)
def test_parse_size_refuses_garbage_with_value_error(garbage: Any) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(garbage)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none(), st.lists(st.integers())))
def test_parse_size_returns_an_int_or_raises_value_error(value: Any) -> None:
    try:
        result = parse_size(value)
    except ValueError:
        return
    assert type(result) is int
    if isinstance(value, int):
        assert result == value


# --- defaults and paths ---

def test_empty_config_gives_documented_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    loaded = load_settings(path, environ={})
    assert loaded.config_path == path.resolve()
    assert loaded.base_dir == tmp_path.resolve()
    assert loaded.postgres.mode == "local"
    assert loaded.postgres.host == "127.0.0.1"
    assert loaded.postgres.port == 5432
    assert loaded.postgres.superuser == "postgres"
    assert loaded.postgres.password == "POSTGRES_PASSWORD"
    assert loaded.postgres.data_dir == tmp_path.resolve() / ".pgdr" / "pgdata"
    assert loaded.backup.dir == tmp_path.resolve() / ".pgdr" / "backups"
    assert loaded.backup.compression == "gzip"
    assert loaded.backup.compression_level is None
    assert loaded.backup.targets == ["local"]
    assert loaded.backup.min_size == 1_000_000
    assert loaded.secrets.sources == ["env", "dotenv"]
    assert loaded.secrets.dotenv == tmp_path.resolve() / ".env"
    assert loaded.migrations.dir is None
    assert loaded.databases == []
    assert loaded.secret_names() == ["POSTGRES_PASSWORD"]
    assert loaded.state_dir == tmp_path.resolve() / ".pgdr"


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write_config(tmp_path / "conf", """
        [postgres]
        data_dir = "cluster/data"
        [backup]
        dir = "../backups"
        [secrets]
        dotenv = "secrets/app.env"
        [migrations]
        dir = "./migrations"
        """)
    loaded = load_settings(path, environ={})
    conf = (tmp_path / "conf").resolve()
    assert loaded.postgres.data_dir == conf / "cluster" / "data"
    assert loaded.backup.dir == tmp_path.resolve() / "backups"
    assert loaded.secrets.dotenv == conf / "secrets" / "app.env"
    assert loaded.migrations.dir == conf / "migrations"
    assert all(p.is_absolute() for p in (loaded.postgres.data_dir, loaded.backup.dir, loaded.secrets.dotenv))


def test_relative_config_path_is_resolved_too(tmp_path: Path, monkeypatch) -> None:
    write_config(tmp_path / "conf", "[backup]\ndir = 'b'\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_settings("conf/pgdr.toml", environ={})
    assert loaded.config_path == (tmp_path / "conf" / "pgdr.toml").resolve()
    assert loaded.backup.dir == (tmp_path / "conf" / "b").resolve()


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "backups"
    path = write_config(tmp_path / "conf", f"[backup]\ndir = '{target}'\n")
    assert load_settings(path, environ={}).backup.dir == target


def test_full_example_config_loads(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
        [postgres]
        mode = "external"
        port = 6543
        settings = { fsync = false, work_mem = "64MB", max_connections = 50 }
        [backup]
        compression = "zstd"
        compression_level = 9
        targets = ["local", "s3"]
        min_size = "2MiB"
        [s3]
        bucket = "backups"
        prefix = "prod/"
        sse = "aws:kms"
        [secrets]
        sources = ["ssm", "env"]
        ssm_path = "/prod/pgdr/"
        """ + DATABASE)
    loaded = load_settings(path, environ={})
    assert loaded.postgres.mode == "external"
    assert loaded.postgres.settings == {"fsync": False, "work_mem": "64MB", "max_connections": 50}
    assert loaded.backup.min_size == 2 * 1024**2
    assert loaded.backup.targets == ["local", "s3"]
    assert loaded.databases[0].readwrite_role == "demo_readwrite"
    assert loaded.databases[0].readonly_role == "demo_readonly"
    assert [user.name for user in loaded.databases[0].users()] == ["demo_user", "demo_readonly"]
    assert loaded.secret_names() == ["POSTGRES_PASSWORD", "DEMO_USER_PASSWORD", "DEMO_READONLY_PASSWORD"]


# --- errors name the path of the bad key ---

def test_unknown_nested_key_names_its_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
        [[databases]]
        name = "demo"
        readwrite_user = { name = "demo_user", nmae = "typo", password = "DEMO_USER_PASSWORD" }
        """)
    error = config_error(path)
    assert "[databases][0].readwrite_user.nmae: unknown key" in error.message
    assert str(path) in error.message


def test_unknown_key_in_second_database_names_index_1(tmp_path: Path) -> None:
    path = write_config(tmp_path, DATABASE + """
        [[databases]]
        name = "other"
        readwrite_user = { name = "other_user", password = "OTHER_PASSWORD" }
        extension = ["pg_trgm"]
        """)
    assert "[databases][1].extension: unknown key" in config_error(path).message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[postgress]\nport = 1\n", "[postgress]: unknown key"),
        ("[postgres]\nprot = 1\n", "[postgres].prot: unknown key"),
        ("colour = 'red'\n", "[colour]: unknown key"),
    ],
)
def test_unknown_keys_and_sections(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(write_config(tmp_path, text)).message


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("[postgres]\nport = 'abc'\n", "[postgres].port"),
        ("[postgres]\nport = 70000\n", "[postgres].port"),
        ("[postgres]\nport = 0\n", "[postgres].port"),
        ("[postgres]\nmode = 'docker'\n", "[postgres].mode"),
        ("[postgres]\nsettings = 'fsync=off'\n", "[postgres].settings"),
        ("[backup]\ntargets = 'local'\n", "[backup].targets"),
        ("[backup]\ntargets = []\n", "[backup].targets"),
        ("[backup]\ntargets = ['local', 'local']\n", "[backup].targets"),
        ("[backup]\ntargets = ['ftp']\n", "[backup].targets[0]"),
        ("[backup]\ncompression = 'bzip2'\n", "[backup].compression"),
        ("[backup]\ncompression_level = 'max'\n", "[backup].compression_level"),
        ("[backup]\nmin_size = 'lots'\n", "[backup].min_size"),
        ("[backup]\nmin_size = 1.5\n", "[backup].min_size"),
        ("[backup]\nmin_size = true\n", "[backup].min_size"),
        ("[backup]\nmin_size = [1]\n", "[backup].min_size"),
        ("[backup]\ndir = 5\n", "[backup].dir"),
        ("[secrets]\nsources = ['vault']\n", "[secrets].sources[0]"),
        ("databases = 'demo'\n", "[databases]"),
        ("[[databases]]\nname = 'demo'\n", "[databases][0].readwrite_user"),
        ("[[databases]]\nname = ''\nreadwrite_user = { name = 'u', password = 'P' }\n", "[databases][0].name"),
        ("[[databases]]\nname = '" + "d" * 64 + "'\nreadwrite_user = { name = 'u', password = 'P' }\n",
         "[databases][0].name"),
        ("[[databases]]\nname = 'd'\nreadwrite_user = { name = 'u', password = 'P', connection_limit = -2 }\n",
         "[databases][0].readwrite_user.connection_limit"),
        ("[[databases]]\nname = 'd'\nreadwrite_user = { name = 'u', password = 'P' }\nextensions = 'pg_trgm'\n",
         "[databases][0].extensions"),
    ],
)
def test_wrong_types_name_the_key(tmp_path: Path, text: str, location: str) -> None:
    error = config_error(write_config(tmp_path, text))
    assert f"{location}: " in error.message
    assert error.hint == "fix the key named above in the config"


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    message = config_error(write_config(tmp_path, "[postgres]\nport = 'x'\nmode = 'y'\n")).message
    assert "[postgres].port: " in message and "[postgres].mode: " in message


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("[postgres]\npassword = 'Sup3r-secret!'\n", "[postgres].password"),
        ("[postgres]\npassword = 'correct horse battery staple'\n", "[postgres].password"),
        ("[postgres]\npassword = 'POSTGRES_PASSWORD\\n'\n", "[postgres].password"),
        ("[postgres]\npassword = '9LIVES'\n", "[postgres].password"),
        ("[postgres]\npassword = ''\n", "[postgres].password"),
        ("[[databases]]\nname = 'd'\nreadwrite_user = { name = 'u', password = 'pa$$w0rd' }\n",
         "[databases][0].readwrite_user.password"),
        ("[[databases]]\nname = 'd'\nreadwrite_user = { name = 'u', password = 'P' }\n"
         "readonly_user = { name = 'r', password = 'postgres://r:x@h/d' }\n",
         "[databases][0].readonly_user.password"),
    ],
)
def test_a_secret_value_instead_of_a_name_is_refused_without_echoing_it(
    tmp_path: Path, text: str, location: str
) -> None:
    error = config_error(write_config(tmp_path, text))
    assert f"{location}: not a secret NAME" in error.message
    for value in ("Sup3r-secret!", "correct horse", "pa$$w0rd", "r:x@h", "9LIVES"):
        assert value not in error.message


def test_duplicate_database_names_are_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, DATABASE + """
        [[databases]]
        name = "demo"
        readwrite_user = { name = "other_user", password = "OTHER_PASSWORD" }
        """)
    assert "database names repeat: demo" in config_error(path).message


def test_superuser_as_application_user_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
        [[databases]]
        name = "demo"
        readwrite_user = { name = "postgres", password = "DEMO_USER_PASSWORD" }
        """)
    assert "user 'postgres' is the superuser" in config_error(path).message


def test_s3_target_without_bucket_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[backup]\ntargets = ['local', 's3']\n")
    assert "backup.targets has 's3' but [s3] bucket is empty" in config_error(path).message
    fixed = write_config(tmp_path, "[backup]\ntargets = ['local', 's3']\n[s3]\nbucket = 'b'\n")
    assert load_settings(fixed, environ={}).s3.bucket == "b"


def test_ssm_source_without_ssm_path_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[secrets]\nsources = ['ssm']\n")
    assert "secrets.sources has 'ssm' but secrets.ssm_path is empty" in config_error(path).message


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[postgres\nport = 5432\n")
    error = config_error(path)
    assert "not valid TOML" in error.message
    assert str(path) in error.message
    assert "line 1" in error.message
    assert "TOML syntax" in error.hint


@pytest.mark.parametrize("text", ["port = = 1", "[postgres]\nport = 1\n[postgres]\nport = 2\n", "a = 'unclosed"])
def test_other_toml_syntax_errors(tmp_path: Path, text: str) -> None:
    assert "not valid TOML" in config_error(write_config(tmp_path, text)).message


def test_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / DEFAULT_CONFIG_NAME
    path.write_bytes(b"[postgres]\nhost = '\xff\xfe'\n")
    assert "cannot read" in config_error(path).message


def test_folder_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    assert "cannot read" in config_error(tmp_path / "dir.toml").message


def test_missing_file_is_a_config_error_with_a_hint(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "pgdr.toml"
    error = config_error(missing)
    assert error.message == f"config file not found: {missing}"
    assert "--config" in error.hint and "PGDR_CONFIG" in error.hint


def test_nul_in_a_path_is_a_config_error(tmp_path: Path) -> None:
    for text in ('[postgres]\ndata_dir = "a\\u0000b"\n', '[backup]\ndir = "/abs/a\\u0000b"\n'):
        assert "NUL" in config_error(write_config(tmp_path, text)).message


def test_format_location() -> None:
    assert format_location(("databases", 0, "readwrite_user", "name")) == "[databases][0].readwrite_user.name"
    assert format_location(("postgres",)) == "[postgres]"
    assert format_location(()) == "(top level)"


# --- where the config comes from, and env overrides ---

def test_pgdr_config_environment_variable_points_at_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "etc", "[postgres]\nport = 6000\n", "custom.toml")
    loaded = load_settings(None, environ={"PGDR_CONFIG": str(path)})
    assert loaded.config_path == path.resolve()
    assert loaded.postgres.port == 6000


def test_explicit_path_beats_pgdr_config(tmp_path: Path) -> None:
    explicit = write_config(tmp_path / "a", "[postgres]\nport = 6001\n")
    other = write_config(tmp_path / "b", "[postgres]\nport = 6002\n")
    assert load_settings(explicit, environ={"PGDR_CONFIG": str(other)}).postgres.port == 6001


def test_default_is_pgdr_toml_in_the_cwd(tmp_path: Path, monkeypatch) -> None:
    write_config(tmp_path, "[postgres]\nport = 6003\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, environ={}).postgres.port == 6003
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(None, environ={})


def test_process_environment_is_used_when_none_given(tmp_path: Path, monkeypatch) -> None:
    path = write_config(tmp_path, "")
    monkeypatch.setenv("PGDR_CONFIG", str(path))
    monkeypatch.setenv("PGDR_POSTGRES__PORT", "6004")
    loaded = load_settings()
    assert loaded.config_path == path.resolve()
    assert loaded.postgres.port == 6004


def test_env_overrides_port_as_an_int(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[postgres]\nport = 5432\nhost = 'db'\n")
    loaded = load_settings(path, environ={"PGDR_POSTGRES__PORT": "5433"})
    assert loaded.postgres.port == 5433
    assert loaded.postgres.host == "db"


def test_env_overrides_targets_as_a_toml_array(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[backup]\ntargets = ['local', 's3']\n[s3]\nbucket = 'b'\n")
    assert load_settings(path, environ={}).backup.targets == ["local", "s3"]
    assert load_settings(path, environ={"PGDR_BACKUP__TARGETS": '["local"]'}).backup.targets == ["local"]


def test_env_override_to_s3_still_needs_a_bucket(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    error = config_error(path, {"PGDR_BACKUP__TARGETS": '["local", "s3"]'})
    assert "[s3] bucket is empty" in error.message
    loaded = load_settings(path, environ={"PGDR_BACKUP__TARGETS": '["local", "s3"]', "PGDR_S3__BUCKET": "bkt"})
    assert (loaded.backup.targets, loaded.s3.bucket) == (["local", "s3"], "bkt")


def test_env_overrides_create_sections_and_parse_sizes(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    loaded = load_settings(path, environ={"PGDR_BACKUP__MIN_SIZE": "5MB", "PGDR_BACKUP__DIR": "elsewhere"})
    assert loaded.backup.min_size == 5_000_000
    assert loaded.backup.dir == tmp_path.resolve() / "elsewhere"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"PGDR_POSTGRES__PORT": "abc"}, "[postgres].port: "),
        ({"PGDR_POSTGRES__PROT": "1"}, "[postgres].prot: unknown key"),
        ({"PGDR_BOGUS__KEY": "1"}, "[bogus]: unknown key"),
        ({"PGDR_BACKUP__TARGETS": "[not toml"}, "[backup].targets: "),
        ({"PGDR_DATABASES__NAME": "x"}, "[databases] is not a table"),
    ],
)
def test_bad_env_overrides_are_config_errors(tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    assert expected in config_error(write_config(tmp_path, DATABASE), environ).message


def test_unrelated_environment_is_ignored(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    environ = {"PGDR_PORT": "1", "POSTGRES__PORT": "1", "PGDR_CONFIG": str(path), "HOME": "/root"}
    assert env_overrides(environ) == {}
    assert load_settings(path, environ=environ).postgres.port == 5432


def test_env_overrides_mapping() -> None:
    assert env_overrides({"PGDR_POSTGRES__PORT": "5433", "PGDR_BACKUP__MIN_SIZE": "1kB"}) == {
        "postgres": {"port": "5433"},
        "backup": {"min_size": "1kB"},
    }


# --- never anything but Settings or ConfigError ---

toml_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=4)),
    max_leaves=12,
)
KNOWN = {
    "environment": [], "name": [],
    "postgres": ["mode", "data_dir", "host", "port", "superuser", "password", "bin_dir", "settings", "connect_timeout"],
    "backup": ["dir", "compression", "compression_level", "targets", "min_size"],
    "s3": ["bucket", "prefix", "region", "sse"],
    "secrets": ["sources", "dotenv", "ssm_path"],
    "migrations": ["dir"],
    "verify": ["command", "row_counts"],
    "recovery": ["rto_objective"],
    "retention": ["enabled", "prune_after_backup", "keep_last", "local", "drill_lock_max_age"],
    "metrics": ["textfile"],
    "notify": ["on", "webhook", "apprise", "healthchecks", "timeout"],
}
plausible_leaf = st.one_of(
    toml_values,
    st.sampled_from(["local", "s3", "gzip", "zstd", "none", "env", "ssm", "1MB", "2GiB", "10m", "", "x\x00y",
                     "POSTGRES_PASSWORD", "/abs", "..", "a/../../b", "1h30m", "nan"]),
    st.lists(st.sampled_from(["local", "s3", "env", "dotenv", "ssm"]), max_size=3),
)


@st.composite
def plausible_configs(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(KNOWN)), unique=True)):
        keys = KNOWN[section]
        if not keys:
            data[section] = draw(plausible_leaf)
            continue
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))
        data[section] = {key: draw(plausible_leaf) for key in chosen}
    if draw(st.booleans()):
        user = st.fixed_dictionaries({"name": st.one_of(st.text(max_size=70), toml_scalars),
                                      "password": st.one_of(st.sampled_from(["P", "p w"]), toml_scalars)},
                                     optional={"connection_limit": st.integers(), "x": toml_scalars})
        data["databases"] = draw(st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["demo", "demo", "", "x" * 64]), "readwrite_user": user},
                                  optional={"readonly_user": user, "extensions": toml_values}),
            max_size=3))
    return data


def settings_or_config_error(data: dict[str, Any], path: Path | None = None) -> None:
    """For arbitrary input either outcome is right, as long as it is one of the two: valid settings with absolute
    paths, or a ConfigError with a message (never another exception). Tests of one bad value use pytest.raises."""
    try:
        result = parse_settings(data, path)
    except ConfigError as error:
        assert error.message
        return
    assert isinstance(result, Settings)
    assert result.postgres.data_dir.is_absolute() and result.backup.dir.is_absolute()


@given(st.dictionaries(st.text(max_size=12), toml_values, max_size=6))
def test_arbitrary_dicts_give_settings_or_config_error(data: dict[str, Any]) -> None:
    settings_or_config_error(data)


@given(plausible_configs())
@example({"backup": {"min_size": 1.5}})
@example({"backup": {"min_size": [1]}})
@example({"backup": {"min_size": True}})
@example({"recovery": {"rto_objective": [1]}})
@example({"recovery": {"rto_objective": float("nan")}})
@example({"postgres": {"data_dir": "a\x00b"}})
@example({"backup": {"dir": "/a\x00b"}})
@example({"migrations": {"dir": date(2020, 1, 1)}})
@example({"postgres": {"settings": {"a": datetime(2020, 1, 1), "b": time(1, 2)}}})
def test_plausible_configs_give_settings_or_config_error(data: dict[str, Any]) -> None:
    settings_or_config_error(data)


@pytest.mark.parametrize("value", [[], {}, date(2020, 1, 1)])
def test_non_text_period_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings({"retention": {"drill_lock_max_age": value}}, None)
    assert "[retention].drill_lock_max_age" in raised.value.message
    assert "not a length of time" in raised.value.message


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.text(max_size=200))
@example("[postgres]\nport = 1e400\n")
@example("[backup]\nmin_size = 1e400\n")
@example("[backup]\nmin_size = '" + "9" * 500 + "'\n")
def test_arbitrary_toml_text_gives_settings_or_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / DEFAULT_CONFIG_NAME
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        result = load_settings(path, environ={})
    except ConfigError:
        return
    assert isinstance(result, Settings)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.dictionaries(st.sampled_from(["PGDR_POSTGRES__PORT", "PGDR_BACKUP__TARGETS", "PGDR_BACKUP__MIN_SIZE",
                                        "PGDR_POSTGRES__DATA_DIR", "PGDR_S3__BUCKET", "PGDR_X__Y", "PGDR___",
                                        "PGDR_RECOVERY__RTO_OBJECTIVE", "PGDR_SECRETS__SOURCES"]),
                       st.one_of(st.text(max_size=20), st.just('["local", "s3"]'), st.just("[1, 2"))))
def test_arbitrary_env_overrides_give_settings_or_config_error(tmp_path: Path, environ: dict[str, str]) -> None:
    path = write_config(tmp_path, DATABASE)
    try:
        result = load_settings(path, environ=environ)
    except ConfigError:
        return
    assert isinstance(result, Settings)
