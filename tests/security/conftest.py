"""The security tier: hostile database users. Every test plays a user who owns some tables and crafts names,
values and comments so the restore (psql, run as the superuser) would do something pg_dump did not write. Real
clusters, started per module by security.security_helpers; a restore is judged by what the server holds
afterwards, never by what pgdr says about it.
"""
