"""Notifications: a real HTTP server on 127.0.0.1 receives the webhook and the healthchecks pings of real backups
(succeeding, and failing because the server is stopped); a webhook that answers 500 or is down costs one warning
line and never changes the exit code or hides the real error."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from end_to_end.ops_helpers import Receiver
from harness import Project
from pgdr import __version__

TOKEN_PATH = "/hook/T0KEN-in-the-path"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def configure(project: Project, notify: str) -> None:
    base = project.config.read_text().split("\n[notify]")[0]
    project.config.write_text(base + "\n[notify]\n" + notify)


def notify_config(url: str, on: str = '["failure", "success"]') -> str:
    return f'webhook = "{url}{TOKEN_PATH}"\non = {on}\nhealthchecks = "{url}/hc/uuid-1"\ntimeout = 5\n'


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("❌")]


def test_succeeding_backup_posts_webhook_and_pings_healthchecks(running_project: Project, receiver: Receiver):
    project = running_project
    configure(project, notify_config(receiver.url))
    result = project.ok("backup")
    assert "⚠" not in result.stderr
    assert receiver.paths() == ["/hc/uuid-1/start", "/hc/uuid-1", TOKEN_PATH]
    (event,) = receiver.hooks(TOKEN_PATH)
    assert event["operation"] == "backup" and event["outcome"] == "success"
    assert event["pgdr_version"] == __version__ and event["host"] and event["timestamp"]
    details = event["details"]
    assert isinstance(details, dict) and details["key"] in str(event["message"]) and details["size_bytes"] > 0
    assert all(request.method == "POST" for request in receiver.requests)

    receiver.requests.clear()
    configure(project, notify_config(receiver.url, on='["failure"]'))
    project.ok("backup")
    assert receiver.paths() == ["/hc/uuid-1/start", "/hc/uuid-1"], "success is not posted when on = failure"


def test_failing_backup_notifies_failure_with_the_real_error(project: Project, receiver: Receiver):
    baseline = project.pgdr("backup")  # the cluster was never started: the server is down
    assert baseline.returncode not in (0, 1)
    configure(project, notify_config(receiver.url))
    result = project.pgdr("backup")
    assert result.returncode == baseline.returncode
    assert error_lines(result.stderr) == error_lines(baseline.stderr)
    assert receiver.paths() == ["/hc/uuid-1/start", "/hc/uuid-1/fail", TOKEN_PATH]
    (event,) = receiver.hooks(TOKEN_PATH)
    assert event["operation"] == "backup" and event["outcome"] == "failure"
    assert error_lines(baseline.stderr)[0].removeprefix("❌ ") in str(event["message"])
    assert event["details"]["exit_code"] == baseline.returncode  # type: ignore[index]
    fail_ping = receiver.requests[1]
    assert error_lines(baseline.stderr)[0].removeprefix("❌ ").encode() in fail_ping.body, "the ping carries it"


def test_webhook_answering_500_or_down_is_a_warning_only(running_project: Project, receiver: Receiver):
    project = running_project
    receiver.status = 500
    configure(project, f'webhook = "{receiver.url}{TOKEN_PATH}"\non = ["failure", "success"]\n')
    result = project.ok("backup")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("⚠")]
    assert warnings == [f"⚠️  notification via webhook failed: HTTP 500 from {receiver.url}; "
                        "the backup outcome is unchanged"]
    assert "T0KEN" not in result.stdout + result.stderr, "the URL's path (its token) is never shown"

    project.ok("down")
    configure(project, "")
    baseline = project.pgdr("backup")
    assert baseline.returncode not in (0, 1)
    receiver.stop()  # nothing listens any more
    configure(project, f'webhook = "{receiver.url}{TOKEN_PATH}"\n')
    result = project.pgdr("backup")
    assert result.returncode == baseline.returncode
    assert error_lines(result.stderr) == error_lines(baseline.stderr)
    assert f"notification via webhook failed: cannot reach {receiver.url}" in result.stderr


def test_failed_check_notifies(project: Project, receiver: Receiver):
    configure(project, f'webhook = "{receiver.url}/hook"\nhealthchecks = {{ check = "{receiver.url}/hc/check" }}\n')
    assert project.pgdr("check").returncode == 15
    assert receiver.paths() == ["/hc/check/start", "/hc/check/fail", "/hook"]
    (event,) = receiver.hooks("/hook")
    assert event["operation"] == "check" and event["message"] == "CRITICAL: no backup in local"


@pytest.mark.skipif(importlib.util.find_spec("apprise") is None,
                    reason="apprise is not installed: delivery through notify.apprise is untested "
                           "(pip install -e '.[apprise]'; .ci/run installs it)")
def test_apprise_delivers_the_event_through_its_url(project: Project, receiver: Receiver):
    """apprise's own json:// scheme, pointed at the local receiver: the real apprise package sends it."""
    host = receiver.url.removeprefix("http://")
    configure(project, f'apprise = ["json://{host}/apprise/T0KEN"]\n')
    result = project.pgdr("check")
    assert result.returncode == 15
    assert "notification via apprise failed" not in result.stderr, result.stderr
    assert "T0KEN" not in result.stdout + result.stderr
    [delivered] = [request for request in receiver.requests if request.path == "/apprise/T0KEN"]
    assert delivered.method == "POST"
    message = json.loads(delivered.body)
    assert message["message"] == "CRITICAL: no backup in local"
    assert message["title"].startswith("pgdr check failed on ")


def test_apprise_configured_but_not_installed_is_a_clear_warning(project: Project, workdir: Path):
    """Runs whether apprise is installed or not: a module of that name that cannot be imported hides it."""
    hidden = workdir / "without-apprise"
    hidden.mkdir()
    (hidden / "apprise.py").write_text('raise ImportError("apprise is hidden by the test")\n')
    configure(project, 'apprise = ["json://127.0.0.1:9/"]\n')
    path = os.pathsep.join(filter(None, [str(hidden), project.environment.get("PYTHONPATH", "")]))
    result = project.pgdr("check", env={"PYTHONPATH": path})
    assert result.returncode == 15
    assert "notify.apprise is set but apprise is not installed: pip install 'pgdr[apprise]'" in result.stderr
