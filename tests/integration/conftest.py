"""The integration tier: pgdr's modules called in-process against the real thing they talk to, a real PostgreSQL
server (pg_server from tests/conftest.py for one test, or harness.start_test_server for a whole module) and
moto's HTTP server (the moto_server, s3_bucket, ssm_path and aws_env fixtures of tests/moto_fixtures.py,
registered for the whole suite): the real boto3 and psycopg paths, nothing patched. Tests that need moto are
marked `s3`.
"""
