"""An HTTP-aware fault proxy in front of moto's server: it parses each S3 request, names its operation
(UploadPart, GetObject, ...) and applies the first matching fault, else forwards the request untouched.

Faults (each for `times` matching requests, after letting `skip` through; times=None: for good; with
`above_part`, only UploadPart requests whose partNumber is above it match):
- "503":     answer `503 Service Unavailable` (S3's ServiceUnavailable error) without forwarding;
- "refuse":  answer `status` with S3 error `code` without forwarding (by default 400 InvalidArgument, what a
             provider answers to an UploadPart beyond its part limit: use `above_part` for that);
- "reset":   reset the client's connection as soon as the request head arrived (a dropped network);
- "cut":     forward, pass `after_bytes` of the response body, then reset (a download cut midway), once the
             client's kernel has acknowledged those bytes: the client reads every one of them before the reset;
- "delay":   wait `seconds` before forwarding (a slow network or server);
- "hold":    wait until the test sets the fault's `release` event, then forward (a request stuck for as long as
             the test needs, with no clock involved; `holding` counts the requests waiting);
- "stall":   forward, pass `after_bytes` of the response body, then send the rest only once `release` is set
             (a download stuck midway for as long as the test needs);
- "trickle": forward, then send the response body in 64 KiB pieces `seconds` apart (a slow download).

`Expect: 100-continue` (botocore sends it with every upload body) is answered by the proxy itself, so a "503"
or "refuse" fault is answered before the body is sent, as S3 does, and the body is never sent upstream twice.
Start with `FaultProxy(moto_port, [Fault(...)]).start()`; `log` lists (operation, action) per request, and
`requests` the requests themselves (method, target, headers such as Range), in the order they arrived.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

from s3_proxy import LoopbackProxy, delivered, reset

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
              b"<Message>Service is unable to handle request (injected by the fault proxy).</Message></Error>")
REFUSAL_MESSAGE = "Part number must be an integer between 1 and the provider's limit (injected by the fault proxy)."
STATUS_REASONS = {400: "Bad Request", 403: "Forbidden", 503: "Service Unavailable"}
PIECE = 64 * 1024


@dataclass
class Fault:
    operation: str  # S3 operation name, or "*" for every request
    action: str  # "503" | "refuse" | "reset" | "cut" | "delay" | "hold" | "stall" | "trickle"
    times: int | None = 1
    path_suffix: str = ""  # only requests whose path ends so, e.g. ".sql" (the backup, not its manifest)
    skip: int = 0
    seconds: float = 0.0
    after_bytes: int = 0
    release: threading.Event = field(default_factory=threading.Event)  # "hold": set it to let the requests go
    above_part: int = 0  # only UploadPart requests with a higher partNumber (0: any request)
    status: int = 400  # "refuse": the HTTP status and S3 error code answered
    code: str = "InvalidArgument"
    seen: int = 0
    applied: int = 0

    def take(self, operation: str, path: str, part_number: int = 0) -> bool:
        """Does this fault apply to this request? (counts it)"""
        if self.operation not in ("*", operation) or not path.endswith(self.path_suffix):
            return False
        if self.above_part and part_number <= self.above_part:
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.applied >= self.times):
            return False
        self.applied += 1
        return True


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key.lower() == name), "")

    @property
    def part_number(self) -> int:
        """An UploadPart's partNumber, else 0."""
        values = parse_qs(urlsplit(self.target).query).get("partNumber", [])
        return int(values[0]) if values and values[0].isdigit() else 0

    @property
    def operation(self) -> str:
        parts = urlsplit(self.target)
        query = parse_qs(parts.query, keep_blank_values=True)
        has_key = "/" in parts.path.strip("/")
        method = self.method
        if method == "HEAD":
            return "HeadObject" if has_key else "HeadBucket"
        if method == "GET":
            if "uploads" in query:
                return "ListMultipartUploads"
            return "GetObject" if has_key else "ListObjectsV2"
        if method == "PUT":
            if "partNumber" in query:
                return "UploadPart"
            return "PutObject" if has_key else "CreateBucket"
        if method == "POST":
            if "uploads" in query:
                return "CreateMultipartUpload"
            if "uploadId" in query:
                return "CompleteMultipartUpload"
            return "DeleteObjects"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
        return method

    def raw(self) -> bytes:
        headers = [(key, value) for key, value in self.headers if key.lower() != "expect"]
        head = f"{self.method} {self.target} HTTP/1.1\r\n" + "".join(f"{key}: {value}\r\n" for key, value in headers)
        return head.encode("latin-1") + b"\r\n" + self.body


class Closed(Exception):
    """The peer closed the connection between requests."""


def read_head(reader: BinaryIO) -> list[bytes]:
    lines = []
    while True:
        line = reader.readline(65536)
        if not line:
            raise Closed
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            continue
        lines.append(line.rstrip(b"\r\n"))


def parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        key, _, value = line.decode("latin-1").partition(":")
        headers.append((key.strip(), value.strip()))
    return headers


def read_chunked(reader: BinaryIO) -> bytes:
    """A chunked body, returned with its framing (it is forwarded as it came)."""
    data = b""
    while True:
        size_line = reader.readline(65536)
        if not size_line:
            raise Closed
        data += size_line
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = reader.readline(65536)
                data += trailer
                if trailer in (b"\r\n", b"\n", b""):
                    return data
        data += reader.read(size + 2)


def header_of(headers: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in headers if key.lower() == name), "")


@dataclass
class FaultProxy(LoopbackProxy):
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    holding: int = 0

    def applied(self, action: str, operation: str = "*") -> int:
        with self._lock:
            return sum(1 for logged_operation, logged_action in self.log
                       if logged_action == action and operation in ("*", logged_operation))

    def passed(self, operation: str) -> int:
        """Requests of `operation` that reached moto (forwarded, delayed or trickled)."""
        with self._lock:
            return sum(1 for logged_operation, action in self.log
                       if logged_operation == operation
                       and action in ("forward", "delay", "hold", "stall", "trickle", "cut"))

    def stop(self) -> None:
        """Held requests are let go, so no proxy thread outlives the test waiting for a release."""
        for fault in self.faults:
            fault.release.set()
        super().stop()

    def ranges(self, operation: str = "GetObject", path_suffix: str = "") -> list[str]:
        """The Range header of each `operation` request on a path ending so ("" when it had none), in order."""
        with self._lock:
            return [request.header("range") for request in self.requests
                    if request.operation == operation and urlsplit(request.target).path.endswith(path_suffix)]

    def _fault_for(self, request: Request) -> Fault | None:
        operation, path = request.operation, urlsplit(request.target).path
        with self._lock:
            fault = next((fault for fault in self.faults if fault.take(operation, path, request.part_number)), None)
            self.log.append((operation, fault.action if fault else "forward"))
            self.requests.append(request)
            return fault

    def _hold(self, fault: Fault) -> None:
        with self._lock:
            self.holding += 1
        try:
            fault.release.wait()
        finally:
            with self._lock:
                self.holding -= 1

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        upstream: socket.socket | None = None
        upstream_reader: BinaryIO | None = None
        try:
            while True:
                lines = read_head(reader)
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                request = Request(method, target, parse_headers(lines[1:]))
                fault = self._fault_for(request)
                action = fault.action if fault else "forward"
                if action == "reset":
                    reset(client)
                    return
                expects = request.header("expect").lower() == "100-continue"
                if action in ("503", "refuse"):
                    client.sendall(self._error_response(close=expects, fault=fault))
                    if expects:  # the body is never sent: the connection cannot carry another request
                        return
                    self._read_body(reader, request)
                    continue
                if expects:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._read_body(reader, request)
                if action == "delay":
                    time.sleep(fault.seconds)  # type: ignore[union-attr]
                if action == "hold":
                    self._hold(fault)  # type: ignore[arg-type]
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                    upstream_reader = upstream.makefile("rb")
                upstream.sendall(request.raw())
                assert upstream_reader is not None
                keep = self._relay_response(upstream_reader, client, request.method, fault)
                if not keep:
                    upstream.close()
                    upstream, upstream_reader = None, None
        except (Closed, OSError, ValueError):
            pass
        finally:
            for connection in (client, upstream):
                if connection is not None:
                    try:
                        connection.close()
                    except OSError:
                        pass

    @staticmethod
    def _read_body(reader: BinaryIO, request: Request) -> None:
        if request.header("transfer-encoding").lower() == "chunked":
            request.body = read_chunked(reader)
        else:
            length = int(request.header("content-length") or 0)
            request.body = reader.read(length) if length else b""
            if len(request.body) != length:
                raise Closed

    @staticmethod
    def _error_response(close: bool, fault: Fault | None = None) -> bytes:
        status, body = 503, ERROR_BODY
        if fault is not None and fault.action == "refuse":
            status, body = fault.status, (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                                          f"<Message>{REFUSAL_MESSAGE}</Message></Error>").encode()
        head = (f"HTTP/1.1 {status} {STATUS_REASONS.get(status, 'Error')}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        return head.encode() + body

    def _relay_response(self, upstream: BinaryIO, client: socket.socket, method: str, fault: Fault | None) -> bool:
        """Relay one response (with the fault's damage); True when the upstream connection can be reused."""
        lines = read_head(upstream)
        while lines[0].split(b" ")[1].startswith(b"1"):  # an interim 1xx response: pass it on, read the next
            client.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
            lines = read_head(upstream)
        headers = parse_headers(lines[1:])
        status = int(lines[0].split(b" ")[1])
        client.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        if method == "HEAD" or status in (204, 304):
            body, keep = b"", True
        elif header_of(headers, "transfer-encoding").lower() == "chunked":
            body, keep = read_chunked(upstream), True
        elif header_of(headers, "content-length"):
            body, keep = upstream.read(int(header_of(headers, "content-length"))), True
        else:
            body, keep = upstream.read(), False
        keep = keep and header_of(headers, "connection").lower() != "close"
        action = fault.action if fault else "forward"
        if action == "cut":
            client.sendall(body[: fault.after_bytes])  # type: ignore[union-attr]
            delivered(client)
            reset(client)
            raise Closed
        if action == "stall":
            client.sendall(body[: fault.after_bytes])  # type: ignore[union-attr]
            self._hold(fault)  # type: ignore[arg-type]
            client.sendall(body[fault.after_bytes :])  # type: ignore[union-attr]
        elif action == "trickle":
            for start in range(0, len(body), PIECE):
                client.sendall(body[start:start + PIECE])
                time.sleep(fault.seconds)  # type: ignore[union-attr]
        else:
            client.sendall(body)
        return keep
