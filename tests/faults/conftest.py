"""The fault tier: injected failures (killed and signalled processes, a full disk, S3 errors, cut connections,
missing or wrong secrets) against real clusters and moto's HTTP server. A module usually starts one cluster for
all its tests (faults.fault_helpers.cluster_project, as the module's own fixture); faults.http_fault_proxy
stands between pgdr and moto, faults/throttle.py between pgdr and the PostgreSQL client tools.
"""
