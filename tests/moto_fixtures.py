"""moto's standalone server over HTTP, for S3 and SSM tests: the real boto3 client path, nothing patched.

One server per test session on a free loopback port; every test gets its own bucket and SSM path, so tests do
not see each other's objects. `aws_environment` is what a CLI subprocess needs to reach it (credentials that
moto accepts, the endpoint, the region) with the machine's own AWS config kept out.
tests/conftest.py registers this module once for the whole suite (pytest_plugins): a test asks for moto_server,
s3_bucket, ssm_path or aws_env by name and imports only the plain helpers (MotoServer, aws_project, object_keys...).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness import Project, project_config

REGION = "us-east-1"
S3_PREFIX = "postgres/"
ISOLATION = {
    # nothing from the machine running the tests: no profile files, no instance metadata lookups
    "AWS_CONFIG_FILE": "/nonexistent/pgdr-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pgdr-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class MotoServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self, endpoint: str | None = None) -> dict[str, str]:
        """The AWS environment for a pgdr subprocess (or the test process) talking to this server."""
        return {**ISOLATION, "AWS_ENDPOINT_URL": endpoint or self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield MotoServer(host, port)
    server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> str:
    """A fresh, empty bucket for one test."""
    name = f"pgdr-test-{uuid.uuid4().hex[:12]}"
    moto_server.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def ssm_path() -> str:
    """A parameter path of its own for one test, e.g. /pgdr-test/1a2b3c4d/."""
    return f"/pgdr-test/{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The test process itself talks to moto through the standard environment variables (no patching)."""
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SSM",
                 "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


def aws_project(project: Project, moto_server: MotoServer, bucket: str, ssm_path: str,
                targets: tuple[str, ...] = ("s3",), sources: tuple[str, ...] = ("env", "dotenv", "ssm")) -> Project:
    """Turn the `project` fixture's project into one backing up to S3 (keys under `postgres/`) with secrets in SSM."""
    quoted = ", ".join(f'"{name}"' for name in targets), ", ".join(f'"{name}"' for name in sources)
    text = project_config(project.port).replace('targets = ["local"]', f"targets = [{quoted[0]}]")
    text = text.replace('sources = ["env", "dotenv"]', f'sources = [{quoted[1]}]\nssm_path = "{ssm_path}"')
    project.config.write_text(text + f'\n[s3]\nbucket = "{bucket}"\nprefix = "{S3_PREFIX}"\nregion = "{REGION}"\n')
    project.environment.update(moto_server.environment())
    return project


def pending_uploads(moto_server: MotoServer, bucket: str) -> list[dict[str, Any]]:
    return list(moto_server.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def object_keys(moto_server: MotoServer, bucket: str) -> list[str]:
    pages = moto_server.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [str(item["Key"]) for page in pages for item in page.get("Contents", [])]
