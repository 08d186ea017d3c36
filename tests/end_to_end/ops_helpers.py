"""Helpers for the operations scenarios (prune, check, metrics, notify): a backup history made from one real
backup, and a local HTTP server that records what it receives.

A history of months cannot be waited for, so a real backup taken by `pgdr backup` is copied under older keys,
each with the real manifest re-keyed: the files are real dumps, only their dates are made up.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import Project
from pgdr.artifact import MANIFEST_SUFFIX, make_key


def only_backup(project: Project) -> str:
    keys = [path.relative_to(project.backups).as_posix() for path in project.backup_files()
            if path.name.endswith(".sql.gz")]
    assert len(keys) == 1, keys
    return keys[0]


def rekeyed_manifest(manifest: bytes, key: str, size: int | None = None) -> bytes:
    data = json.loads(manifest)
    data["key"] = key
    if size is not None:
        data["size"] = size
    return json.dumps(data).encode()


def fabricate(project: Project, source_key: str, created: datetime, verified: bool = True, safety: bool = False,
              padding: int = 0) -> str:
    """Copy a real local backup under the key of `created`; with its manifest unless verified=False."""
    key = make_key(created, "gzip", safety).key
    data = (project.backups / source_key).read_bytes() + b"\0" * padding
    target = project.backups / key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if verified:
        manifest = (project.backups / (source_key + MANIFEST_SUFFIX)).read_bytes()
        (project.backups / (key + MANIFEST_SUFFIX)).write_bytes(rekeyed_manifest(manifest, key, len(data)))
    return key


def local_keys(project: Project) -> set[str]:
    """Every file under the backup dir, relative (manifests and markers included, hidden ones too)."""
    return {path.relative_to(project.backups).as_posix() for path in project.backup_files()}


def set_config(project: Project, text: str) -> None:
    project.config.write_text(project.config.read_text() + "\n" + text)


@dataclass
class Received:
    method: str
    path: str
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 in a thread; answers every request with `status`."""

    status: int = 200
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def handle_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.requests.append(Received(self.command, self.path, self.rfile.read(length)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_POST = do_GET = do_HEAD = handle_request  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def hooks(self, path: str = "/hook") -> list[dict[str, object]]:
        return [request.json() for request in self.requests if request.path == path]


def write_history(project: Project, *entries: dict[str, object]) -> None:
    path = project.backups / "drill-history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def path_of(project: Project, key: str) -> Path:
    return project.backups / key
