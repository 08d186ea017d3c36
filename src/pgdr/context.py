"""What every action needs: settings, output, secrets, and the server (managed cluster or external).

The server's modules (pgdr.postgres: binaries, cluster, connections) are imported by the methods that use them:
a command that never touches the server (`pgdr list` of a local folder) does not pay for them at start-up
(tests/unit/test_startup_imports.py). The secret resolver is made at once: it registers the secrets' names, which
every child process started later must not inherit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from pgdr.config import Settings
from pgdr.errors import BinariesError, ClusterError, Refused
from pgdr.secrets import SecretResolver, make_resolver
from pgdr.ui import Output

if TYPE_CHECKING:
    from pgdr.postgres.binaries import Toolset
    from pgdr.postgres.cluster import ExternalServer, LocalCluster
    from pgdr.postgres.connect import Endpoint


@dataclass
class Context:
    settings: Settings
    output: Output = field(default_factory=Output)
    assume_yes: bool = False
    resolver: SecretResolver | None = None
    lock_wait: float = 0.0
    i_mean_production: bool = False
    scratch: bool = False  # a throw-away cluster (drill, undo): nothing is said of it as of the live one
    _toolset: Toolset | None = field(default=None, init=False, repr=False)
    _server_versions: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.resolver is None:
            self.resolver = make_resolver(self.settings)

    @property
    def secrets(self) -> SecretResolver:
        assert self.resolver is not None
        return self.resolver

    @property
    def is_local(self) -> bool:
        return self.settings.postgres.mode == "local"

    @cached_property
    def cluster(self) -> LocalCluster:
        from pgdr.postgres.cluster import LocalCluster

        return LocalCluster(self.settings.postgres, self.settings.state_dir, log=self.output.info)

    @cached_property
    def external(self) -> ExternalServer:
        from pgdr.postgres.cluster import ExternalServer

        return ExternalServer(self.settings.postgres, self.settings.base_dir)

    def superuser_endpoint(self, database: str = "postgres") -> Endpoint:
        from pgdr.postgres.connect import ADMIN_SESSION_OPTIONS, Endpoint

        postgres = self.settings.postgres
        return Endpoint(postgres.host, postgres.port, postgres.superuser, self.secrets.get(postgres.password),
                        database, postgres.connect_timeout, ADMIN_SESSION_OPTIONS)

    def server_version(self) -> tuple[int, str]:
        """(major, version()) of the server, asked once per command and address: a backup asked it twice, one
        connection each (the client tools' check, the manifest). Like the toolset, it is the command's: a command
        never changes the major of the server it talks to."""
        postgres = self.settings.postgres
        address = (postgres.host, postgres.port)
        if address not in self._server_versions:
            self._server_versions[address] = self._ask_server_version()
        return self._server_versions[address]

    def _ask_server_version(self) -> tuple[int, str]:
        from pgdr.postgres.binaries import server_major
        from pgdr.postgres.connect import session

        with session(self.superuser_endpoint()) as connection:
            row = connection.execute("SELECT current_setting('server_version_num')::int, version()").fetchone()
        assert row is not None
        return server_major(row[0]), row[1]

    def client_tools(self, required: tuple[str, ...] = ("psql", "pg_dumpall")) -> tuple[Toolset, int]:
        """The command's client tools and the running server's major, checked before any work starts: tools older
        than the server are refused. One installation serves the whole command (see toolset)."""
        from pgdr.postgres.binaries import too_old

        major, _ = self.server_version()
        toolset = self.toolset(major)
        if toolset.major < major:
            raise too_old(major, [toolset.major])
        for name in required:
            toolset.path(name)
        return toolset, major

    def toolset(self, major: int) -> Toolset:
        """The installation every tool of this command comes from, chosen once (major: the running server's).
        Local mode: the managed cluster's own, its server and client tools in one folder. External mode, or a local
        data directory no installation found can run (bin_dir already on the next major, docs/UPGRADE.md): client
        tools alone, the first installation in discovery order at least as new as the server."""
        from pgdr.postgres.binaries import CLIENT_TOOLS, find_toolset

        if self._toolset is None:
            self._toolset = self._cluster_toolset() or find_toolset(self.settings.postgres.bin_dir, CLIENT_TOOLS,
                                                                    minimum_major=major)
        return self._toolset

    def _cluster_toolset(self) -> Toolset | None:
        if not self.is_local:
            return None
        try:
            return self.cluster.tools()
        except (ClusterError, BinariesError):
            return None

    def confirm_destructive(self, what: str) -> None:
        """Ask on a terminal; refuse without one unless --yes. Production also needs the cluster name typed,
        or --yes --i-mean-production for automation."""
        if self.settings.environment == "production":
            self._confirm_production(what)
            return
        if self.assume_yes:
            return
        if self.output.interactive and self.output.confirm(f"{what}. Continue?"):
            return
        raise Refused(f"refusing to {what[:1].lower() + what[1:]} without confirmation", "re-run with --yes to confirm")

    def _confirm_production(self, what: str) -> None:
        name = self.settings.cluster_name
        if self.assume_yes and self.i_mean_production:
            self.output.warn(f"PRODUCTION cluster {name}: {what} (confirmed by --yes --i-mean-production)")
            return
        if self.output.interactive:
            typed = self.output.prompt(f"PRODUCTION cluster {name}: {what}. Type the cluster name to confirm: ")
            if typed.strip() == name:
                return
        raise Refused(
            f"refusing to {what[:1].lower() + what[1:]} on PRODUCTION cluster {name} without confirmation",
            "type the cluster name at the prompt, or pass --yes --i-mean-production for automation",
        )
