"""The production path of the runbook, as a user runs it: backups in S3, passwords in SSM Parameter Store.

moto's standalone server plays AWS over HTTP; the PostgreSQL cluster is real. Failures are injected with a TCP
proxy that cuts the network midway (tests/s3_proxy.py) and with a fake pg_dumpall that dies midway.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import pytest

from end_to_end.e2e_helpers import fails, fake_bin_dir, list_json, real_bin_dir, recorded, server_state, tree_snapshot
from harness import READONLY_PASSWORD, SUPERUSER_PASSWORD, USER_PASSWORD, count_orders, load_sample_data
from moto_fixtures import S3_PREFIX, aws_project, object_keys, pending_uploads
from s3_proxy import CuttingProxy

pytestmark = pytest.mark.s3
SECRETS = {"POSTGRES_PASSWORD": SUPERUSER_PASSWORD, "POSTGRES_DEMO_USER_PASSWORD": USER_PASSWORD,
           "POSTGRES_DEMO_READONLY_PASSWORD": READONLY_PASSWORD}
LEGACY_KEY = "20240315/postgres-all-20240315-020000.sql.gz"
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}


@pytest.fixture
def s3_project(project, moto_server, s3_bucket, ssm_path):
    """Backups go to S3 only; secrets are looked up in env, .env, then SSM. Every output is checked for passwords."""
    live = recorded(aws_project(project, moto_server, s3_bucket, ssm_path))
    yield live
    live.assert_no_password_in_output()


def provisioned(live, rows: int = 2000):
    live.ok("up")
    live.ok("init")
    load_sample_data(live, rows)
    return live


def only_backup(live) -> str:
    [record] = list_json(live, "--from", "s3")
    return str(record["key"])


def test_full_system_recovery_from_s3_with_passwords_from_parameter_store(s3_project, moto_server, s3_bucket):
    live = s3_project
    for name, value in SECRETS.items():
        live.ok("secrets", "push", name, input_text=value + "\n")
    (live.root / ".env").unlink()  # from here on the passwords live in Parameter Store only
    provisioned(live, 3000)
    live.ok("backup")
    assert tree_snapshot(live.backups) == {}, "targets = ['s3'] wrote a local file"
    [record] = list_json(live, "--from", "s3")
    key = str(record["key"])
    assert record["verified"] and record["target"] == "s3" and not record["flags"]
    assert sorted(object_keys(moto_server, s3_bucket)) == [S3_PREFIX + key, S3_PREFIX + key + ".manifest.json"]

    # the worst day: the server, its disk and the .env are gone
    live.ok("clean", "hard", "--yes")
    shutil.rmtree(live.root / ".pgdr")
    assert not (live.root / ".env").exists()

    live.ok("up")
    restored = live.ok("restore", "latest", "--from", "s3")
    assert key in restored.stdout and "pgdr init" in restored.stdout
    assert set(tree_snapshot(live.backups)) == {key, key + ".manifest.json"}, "no local copy, or a temporary left"
    pulled = live.ok("secrets", "pull")
    for name in SECRETS:
        assert f"{name}  (from ssm)" in pulled.stdout
    assert os.stat(live.root / ".env").st_mode & 0o777 == 0o600
    live.ok("init")
    live.ok("verify")
    assert count_orders(live) == 3000
    targets = sorted(str(item["target"]) for item in list_json(live, "--from", "all"))
    assert targets == ["local", "s3"]


def old_pipeline_dump(live) -> bytes:
    """What the old shell pipeline made: pg_dumpall --no-role-passwords | gzip."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    dump = subprocess.run([str(real_bin_dir() / "pg_dumpall"), "--no-role-passwords", "--host", "127.0.0.1",
                           "--port", str(live.port), "--username", "postgres", "--no-password"],
                          env={**environment, "PGPASSWORD": SUPERUSER_PASSWORD}, capture_output=True, check=True)
    return gzip.compress(dump.stdout)


def test_restore_file_from_s3_of_a_backup_the_old_pipeline_made(s3_project, moto_server, s3_bucket):
    live = provisioned(s3_project, 1500)
    moto_server.client("s3").put_object(Bucket=s3_bucket, Key=S3_PREFIX + LEGACY_KEY, Body=old_pipeline_dump(live))
    [record] = list_json(live, "--from", "s3")
    assert (record["key"], record["verified"]) == (LEGACY_KEY, False)
    live.ok("clean", "soft", "--yes")
    live.ok("restore", "file", LEGACY_KEY, "--from", "s3")
    assert set(tree_snapshot(live.backups)) == {LEGACY_KEY}
    live.ok("init")
    live.ok("verify")
    assert count_orders(live) == 1500


def test_an_upload_cut_off_midway_leaves_no_listed_backup(s3_project, moto_server, s3_bucket):
    live = provisioned(s3_project, 20000)
    proxy = CuttingProxy(moto_server.port, cut_after=60_000).start()  # the network goes down for good
    try:
        result = fails(live, "backup", code=11, env={"AWS_ENDPOINT_URL": proxy.url, "AWS_MAX_ATTEMPTS": "2"})
    finally:
        proxy.stop()
    assert proxy.connections_cut >= 1, "the proxy never cut: the dump is smaller than the cut-off"
    assert "retrying" in result.stderr, "retries were not reported"
    assert object_keys(moto_server, s3_bucket) == []
    assert pending_uploads(moto_server, s3_bucket) == []
    assert list_json(live, "--from", "s3") == []
    assert "no backups" in fails(live, "restore", "latest", "--from", "s3", code=11).stderr


def test_a_dump_dying_after_parts_were_uploaded_aborts_the_multipart_upload(s3_project, moto_server, s3_bucket,
                                                                             workdir):
    live = provisioned(s3_project, 100)
    live.config.write_text(live.config.read_text().replace('targets = ["s3"]', 'targets = ["local", "s3"]'))
    count_uploads = (f"import boto3; print(len(boto3.client('s3').list_multipart_uploads(Bucket='{s3_bucket}')"
                     ".get('Uploads', [])))")
    script = ('echo "--"; echo "-- PostgreSQL database cluster dump"; echo "--"\n'
              "head -c 12000000 /dev/urandom | base64\n"  # ~12 MB compressed: more than one 8 MiB part
              f'PENDING=$("{sys.executable}" -c "{count_uploads}")\n'
              'echo "pg_dumpall: simulated failure midway, $PENDING upload(s) in progress" >&2\nexit 3\n')
    bin_dir = fake_bin_dir(workdir, "pg_dumpall", script)
    result = fails(live, "backup", code=7, env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert "simulated failure midway, 1 upload(s) in progress" in result.stderr, "no part was sent before the death"
    assert object_keys(moto_server, s3_bucket) == []
    assert pending_uploads(moto_server, s3_bucket) == [], "the multipart upload was not aborted"
    assert tree_snapshot(live.backups) == {}
    assert list_json(live, "--from", "all") == []


def test_a_corrupted_object_is_refused_before_the_server_is_touched(s3_project, moto_server, s3_bucket):
    live = provisioned(s3_project)
    live.ok("backup")
    key = only_backup(live)
    client = moto_server.client("s3")
    data = bytearray(client.get_object(Bucket=s3_bucket, Key=S3_PREFIX + key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key=S3_PREFIX + key, Body=bytes(data))
    truncated = old_pipeline_dump(live)[:-5000]
    client.put_object(Bucket=s3_bucket, Key=S3_PREFIX + LEGACY_KEY, Body=truncated)
    before = server_state(live)

    for args in (("latest",), ("file", LEGACY_KEY)):
        result = fails(live, "restore", *args, "--from", "s3", "--clean", "--yes", code=9)
        assert "restore another one" in result.stderr
    assert server_state(live) == before
    assert tree_snapshot(live.backups) == {}, "a refused download was kept (or left a temporary)"


def test_missing_credentials_or_bucket_give_a_clear_error(s3_project):
    live = s3_project
    no_credentials = fails(live, "list", "--from", "s3", code=11, env=NO_CREDENTIALS)
    assert "AWS_PROFILE or AWS_ACCESS_KEY_ID" in no_credentials.stderr
    no_bucket = {"PGDR_S3__BUCKET": "pgdr-no-such-bucket"}
    for args in (("list", "--from", "s3"), ("restore", "latest", "--from", "s3")):
        assert "check [s3] bucket" in fails(live, *args, code=11, env=no_bucket).stderr
    live.ok("up")
    assert "check [s3] bucket" in fails(live, "backup", code=11, env=no_bucket).stderr
    assert "AWS_PROFILE" in fails(live, "backup", code=11, env=NO_CREDENTIALS).stderr
    assert tree_snapshot(live.backups) == {}
