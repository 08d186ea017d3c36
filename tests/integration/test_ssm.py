"""The SSM Parameter Store secret source against moto's HTTP server, and `pgdr secrets push/pull` using it."""

from __future__ import annotations

import os

import pytest

from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD, Project
from moto_fixtures import REGION, aws_project
from pgdr.config import parse_settings
from pgdr.errors import SecretMissing, StorageError
from pgdr.secrets import SecretResolver, SsmSource, build_sources

pytestmark = pytest.mark.s3
NAMES = ("POSTGRES_PASSWORD", "POSTGRES_DEMO_USER_PASSWORD", "POSTGRES_DEMO_READONLY_PASSWORD")
VALUES = dict(zip(NAMES, (SUPERUSER_PASSWORD, USER_PASSWORD, READONLY_PASSWORD), strict=True))


def put_secure(moto, path: str, name: str, value: str) -> None:
    moto.client("ssm").put_parameter(Name=path + name, Value=value, Type="SecureString", Overwrite=True)


def test_a_secure_string_is_read_decrypted_and_a_missing_one_is_none(aws_env, ssm_path):
    put_secure(aws_env, ssm_path, "POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
    source = SsmSource(ssm_path, REGION)
    assert source.get("POSTGRES_PASSWORD") == SUPERUSER_PASSWORD
    assert source.get("POSTGRES_DEMO_USER_PASSWORD") is None
    assert source.describe("X") == f"SSM parameter {ssm_path}X"


def test_aws_endpoint_url_ssm_is_honoured(aws_env, ssm_path, monkeypatch):
    put_secure(aws_env, ssm_path, "POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", aws_env.url)
    assert SsmSource(ssm_path, REGION).get("POSTGRES_PASSWORD") == SUPERUSER_PASSWORD


def test_put_stores_a_secure_string(aws_env, ssm_path):
    SsmSource(ssm_path, REGION).put("POSTGRES_DEMO_USER_PASSWORD", USER_PASSWORD)
    stored = aws_env.client("ssm").get_parameter(Name=ssm_path + "POSTGRES_DEMO_USER_PASSWORD")["Parameter"]
    assert stored["Type"] == "SecureString"
    assert stored["Value"] != USER_PASSWORD, "stored as plain text"
    assert SsmSource(ssm_path, REGION).get("POSTGRES_DEMO_USER_PASSWORD") == USER_PASSWORD


def test_missing_credentials_are_a_storage_error_with_the_fix(aws_env, ssm_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError) as caught:
        SsmSource(ssm_path, REGION).get("POSTGRES_PASSWORD")
    assert "AWS_PROFILE or AWS_ACCESS_KEY_ID" in caught.value.hint


def test_sources_are_asked_in_order_and_a_missing_secret_names_every_place(aws_env, ssm_path, tmp_path):
    put_secure(aws_env, ssm_path, "POSTGRES_PASSWORD", "from-ssm")
    put_secure(aws_env, ssm_path, "POSTGRES_DEMO_USER_PASSWORD", "from-ssm-too")
    settings = parse_settings({"secrets": {"sources": ["env", "dotenv", "ssm"], "dotenv": str(tmp_path / ".env"),
                                           "ssm_path": ssm_path}, "s3": {"region": REGION}})
    resolver = SecretResolver(build_sources(settings, {"POSTGRES_PASSWORD": "from-env"}))
    assert resolver.lookup("POSTGRES_PASSWORD") == ("from-env", "env")
    assert resolver.lookup("POSTGRES_DEMO_USER_PASSWORD") == ("from-ssm-too", "ssm")
    with pytest.raises(SecretMissing) as caught:
        resolver.get("POSTGRES_DEMO_READONLY_PASSWORD")
    for place in ("environment variable", str(tmp_path / ".env"), f"SSM parameter {ssm_path}"):
        assert place in caught.value.message


@pytest.fixture
def ssm_project(project: Project, moto_server, ssm_path) -> Project:
    """A project (no server needed) whose secrets live in SSM only: no .env, nothing in the environment."""
    aws_project(project, moto_server, "pgdr-unused-bucket", ssm_path, targets=("local",))
    (project.root / ".env").unlink()
    return project


def test_secrets_push_reads_the_value_from_stdin_and_stores_a_secure_string(ssm_project, moto_server, ssm_path):
    result = ssm_project.ok("secrets", "push", "POSTGRES_DEMO_USER_PASSWORD", input_text=USER_PASSWORD + "\n")
    assert USER_PASSWORD not in result.stdout + result.stderr
    assert f"{ssm_path}POSTGRES_DEMO_USER_PASSWORD" in result.stdout
    parameter = moto_server.client("ssm").get_parameter(
        Name=ssm_path + "POSTGRES_DEMO_USER_PASSWORD", WithDecryption=True)["Parameter"]
    assert (parameter["Type"], parameter["Value"]) == ("SecureString", USER_PASSWORD)
    empty = ssm_project.pgdr("secrets", "push", "POSTGRES_PASSWORD", input_text="\n")
    assert empty.returncode != 0 and "empty value" in empty.stderr


def test_secrets_pull_reports_each_source_and_writes_a_0600_dotenv(ssm_project, moto_server, ssm_path):
    for name in NAMES[1:]:
        put_secure(moto_server, ssm_path, name, VALUES[name])
    dotenv = ssm_project.root / ".env"
    dotenv.write_text("APP_SETTING=keep-me\n")
    dotenv.chmod(0o644)
    result = ssm_project.ok("secrets", "pull", env={"POSTGRES_PASSWORD": SUPERUSER_PASSWORD})
    assert "POSTGRES_PASSWORD  (from env)" in result.stdout
    for name in NAMES[1:]:
        assert f"{name}  (from ssm)" in result.stdout
    for value in VALUES.values():
        assert value not in result.stdout + result.stderr
    assert os.stat(dotenv).st_mode & 0o777 == 0o600
    text = dotenv.read_text()
    assert "APP_SETTING=keep-me" in text
    assert all(value in text for value in VALUES.values())


def test_secrets_pull_names_a_missing_secret(ssm_project, moto_server, ssm_path):
    put_secure(moto_server, ssm_path, "POSTGRES_PASSWORD", SUPERUSER_PASSWORD)
    result = ssm_project.pgdr("secrets", "pull")
    assert result.returncode == 6, result.stderr
    assert "POSTGRES_DEMO_USER_PASSWORD" in result.stderr and "ssm" in result.stderr.lower()
    assert not (ssm_project.root / ".env").exists()


def test_secrets_pull_without_credentials_gives_the_fix(ssm_project):
    result = ssm_project.pgdr("secrets", "pull", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode == 11, result.stderr
    assert "AWS_PROFILE or AWS_ACCESS_KEY_ID" in result.stderr
    assert "Traceback" not in result.stderr
