"""Telling people: a generic JSON webhook, apprise (Slack, e-mail, Telegram, ntfy, ...), healthchecks.io pings.

Transports only; observe.py decides when. A transport that fails is reported through `warn` (one line naming
the transport, never its full URL: tokens live in paths) and never raises: the operation's own outcome stands.

Webhook body (POST, application/json):
    {"operation": "backup", "outcome": "failure", "message": "...", "host": "db1", "timestamp": "...Z",
     "pgdr_version": "0.1.0", "details": {...}}
healthchecks: `<url>/start` when the operation starts, `<url>` on success, `<url>/fail` on failure, with the
message as the request body (shown in the healthchecks log).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pgdr import __version__
from pgdr.ops_config import NotifySettings
from pgdr.redact import redact

Warn = Callable[[str], None]


class DeliveryFailed(Exception):
    pass


@dataclass
class Event:
    operation: str
    outcome: str  # "success" | "failure"
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def as_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "outcome": self.outcome, "message": self.message, "host": self.host,
                "timestamp": self.timestamp, "pgdr_version": __version__, "details": self.details}

    @property
    def title(self) -> str:
        return f"pgdr {self.operation} {'failed' if self.outcome == 'failure' else 'succeeded'} on {self.host}"


def where(url: str) -> str:
    """scheme://host[:port] only: the path and query of a notification URL often hold its token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme else "(not a URL)"


def post(url: str, body: bytes, content_type: str, timeout: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "User-Agent": f"pgdr/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) checked in config
            response.read()
    except urllib.error.HTTPError as error:
        raise DeliveryFailed(f"HTTP {error.code} from {where(url)}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryFailed(f"cannot reach {where(url)}: {reason}") from None


def send_webhook(url: str, event: Event, timeout: float) -> None:
    post(url, redact(json.dumps(event.as_json())).encode(), "application/json", timeout)


def send_apprise(urls: list[str], event: Event) -> None:
    try:
        import apprise  # type: ignore[import-not-found]  # optional: pip install 'pgdr[apprise]'
    except ImportError:
        raise DeliveryFailed("notify.apprise is set but apprise is not installed: "
                             "pip install 'pgdr[apprise]' (or pip install apprise)") from None
    sender = apprise.Apprise()
    for url in urls:
        if not sender.add(url):
            raise DeliveryFailed(f"apprise does not understand the URL for {urlsplit(url).scheme}://...")
    if not sender.notify(title=event.title, body=redact(event.message)):
        raise DeliveryFailed("apprise could not deliver to at least one of its URLs")


def ping_url(base: str, kind: str) -> str:
    """healthchecks.io: /start, the base URL (success), /fail."""
    base = base.rstrip("/")
    return {"start": f"{base}/start", "success": base, "failure": f"{base}/fail"}[kind]


@dataclass
class Notifier:
    settings: NotifySettings
    warn: Warn

    def _attempt(self, what: str, operation: str, send: Callable[[], None]) -> None:
        try:
            send()
        except DeliveryFailed as error:
            self.warn(f"notification via {what} failed: {error}; the {operation} outcome is unchanged")
        except Exception as error:  # noqa: BLE001 - a notifier must never break or mask the operation
            self.warn(f"notification via {what} failed: {type(error).__name__}: {error}; "
                      f"the {operation} outcome is unchanged")

    def started(self, operation: str) -> None:
        url = self.settings.healthchecks_url(operation)
        if url:
            self._attempt("healthchecks", operation, lambda: post(
                ping_url(url, "start"), b"", "text/plain", self.settings.timeout))

    def finished(self, event: Event) -> None:
        url = self.settings.healthchecks_url(event.operation)
        if url:
            self._attempt("healthchecks", event.operation, lambda: post(
                ping_url(url, event.outcome), redact(event.message).encode()[:100_000], "text/plain",
                self.settings.timeout))
        if event.outcome not in self.settings.on:
            return
        if self.settings.webhook:
            self._attempt("webhook", event.operation,
                          lambda: send_webhook(self.settings.webhook, event, self.settings.timeout))
        if self.settings.apprise:
            self._attempt("apprise", event.operation, lambda: send_apprise(self.settings.apprise, event))
