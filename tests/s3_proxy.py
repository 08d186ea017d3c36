"""A tiny TCP proxy for failure injection: forwards to moto, and cuts connections once N bytes went through.

`cut_after` bytes client -> server (uploads), or `cut_download_after` bytes server -> client (downloads), all
connections together, may pass; the connection that crosses the line is reset, and so is every later one
until `cuts` connections were cut (None: the network stays down for good). With `cuts=1` the failure is
transient, which is what a retry should ride over. A download is cut only once the client's kernel has
acknowledged every byte forwarded so far, so the client reads all of them before the reset: where a resumed
download must start does not depend on how busy the machine is. `ranges` lists the Range header of each GET
that went through ("" for none), so a test can tell a download resumed where it stopped from one started again
at byte 0.
"""

from __future__ import annotations

import fcntl
import re
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass, field
from typing import Self

BUFFER = 64 * 1024
GET_HEAD = re.compile(rb"GET [^ \r\n]+ HTTP/1\.1\r\n((?:[^\r\n]+\r\n)*)\r\n")
RANGE = re.compile(rb"(?im)^range:[ \t]*([^\r\n]*)\r$")


def delivered(connection: socket.socket) -> None:
    """Wait until the peer's kernel has acknowledged every byte sent on the connection. Bytes it holds stay
    readable after a reset; bytes still in our send queue would be dropped by it."""
    while True:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except (OSError, ValueError):  # ValueError: the other pump thread already closed it (fileno -1)
            return
        if unsent == 0:
            return
        time.sleep(0.005)


def reset(connection: socket.socket) -> None:
    """Cut the connection as a dropped network does: SO_LINGER 0 makes the close a RST; the shutdown first wakes
    the other pump thread blocked on this socket (a plain close would wait for it)."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        connection.close()
    except OSError:
        pass


@dataclass
class LoopbackProxy:
    """A listener on a free loopback port forwarding to target_port; each connection is handed to _serve on a
    thread of its own, which subclasses implement."""

    target_port: int
    host: str = field(default="127.0.0.1", kw_only=True)
    port: int = field(default=0, kw_only=True)
    _lock: threading.Lock = field(default_factory=threading.Lock, kw_only=True)
    _listener: socket.socket | None = field(default=None, kw_only=True)
    _stopped: threading.Event = field(default_factory=threading.Event, kw_only=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError


@dataclass
class CuttingProxy(LoopbackProxy):
    cut_after: int | None = None
    cuts: int | None = None
    cut_download_after: int | None = None
    forwarded: int = 0
    downloaded: int = 0
    connections_cut: int = 0
    ranges: list[str] = field(default_factory=list)

    def _down(self) -> bool:
        """True when the connection at hand must be cut (counts the cut)."""
        with self._lock:
            upload_cut = self.cut_after is not None and self.forwarded >= self.cut_after
            download_cut = self.cut_download_after is not None and self.downloaded >= self.cut_download_after
            if not (upload_cut or download_cut):
                return False
            if self.cuts is not None and self.connections_cut >= self.cuts:
                return False
            self.connections_cut += 1
            return True

    def _serve(self, client: socket.socket) -> None:
        if self._down():
            reset(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            reset(client)
            return
        threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()
        self._pump_up(client, upstream)

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        """client -> moto, counting bytes; past the line, reset both ends mid-request."""
        try:
            while data := client.recv(BUFFER):
                with self._lock:
                    self.forwarded += len(data)
                    self.ranges += [_range_of(head.group(1)) for head in GET_HEAD.finditer(data)]
                if self._down():
                    reset(client)
                    reset(upstream)
                    return
                upstream.sendall(data)
        except OSError:
            pass
        _shutdown(upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(BUFFER):
                with self._lock:
                    self.downloaded += len(data)
                if self._down():
                    delivered(client)
                    reset(client)
                    reset(upstream)
                    return
                client.sendall(data)
        except OSError:
            pass
        _shutdown(client)


def _range_of(headers: bytes) -> str:
    found = RANGE.search(headers)
    return found.group(1).decode("latin-1").strip() if found else ""


def _shutdown(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_WR)
    except OSError:
        pass
