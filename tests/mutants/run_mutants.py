"""Break the code on purpose, one small mutant at a time, and check that the tests guarding it fail.

    python3 tests/mutants/run_mutants.py                  # every mutant
    python3 tests/mutants/run_mutants.py --only NAME ...  # some (names: --list)
    python3 tests/mutants/run_mutants.py --baseline       # also run each mutant's tests unmutated first

Each mutant is a string replacement in a copy of the work tree (a temporary folder; the tree itself is never
touched), run with PYTHONPATH pointing at the copy's src/ so that pgdr, and every pgdr the tests start, is the
mutated one. The mutant is killed when its tests fail (pytest exit 1: a failed assertion, or a hang the test's
timeout turned into a failure), and survives when they pass. Not part of CI (pyproject's norecursedirs keeps
pytest out of this folder): the end-to-end mutants take minutes, the ones that make pgdr hang up to their test's
timeout.

Each entry says what the guarantee is, and which weaker check used to let the mutant through (issue 12).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_COPY = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".hypothesis", ".mypy_cache", ".ruff_cache",
                                   ".pytest_cache", ".benchmarks")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    edits: tuple[tuple[str, str], ...]  # (old, new): each old must occur exactly once
    tests: tuple[str, ...]
    why: str
    appended: str = ""  # code added at the end of the file
    timeout: int = 0  # seconds for pytest-timeout, for tests without a limit of their own


CHECKING_LINE = ('    context.output.step(f"Checking {record.key} ({len(manifest.parts)} parts: checksums, '
                 'archive contents)")\n')

MUTANTS = [
    Mutant(
        "config-period-accepts-non-text", "src/pgdr/periods.py",
        (('''    if not isinstance(text, str):  # booleans, negative or infinite numbers, lists, tables, dates from TOML
        raise ValueError(f"not a length of time: {text!r} (use e.g. 90m, 26h, 35d, 1d12h)")''',
          '''    if not isinstance(text, str):  # MUTANT: a list, a table or a date is taken for a day
        return 86400.0'''),),
        ("tests/unit/test_config.py::test_non_text_period_is_a_config_error",),
        "[], {} and a date must be config errors; the old helper passed whether parsing failed or not"),
    Mutant(
        "encryption-header-then-plaintext", "src/pgdr/streams/encryption.py",
        (("            _pyrage().encrypt_io(self._reader, _SinkWriter(sink), recipients)",
          "            empty = _pyrage().encrypt(b'', recipients)  # MUTANT: a real header, then data in clear\n"
          "            sink(empty[: empty.index(b'\\n', empty.index(b'\\n--- ') + 1) + 1])\n"
          "            for chunk in iter(lambda: self._reader.read(65536), b''):\n"
          "                sink(chunk)"),),
        ("tests/end_to_end/test_split_and_encryption.py::test_encrypted_backup_holds_no_readable_sql",
         "tests/faults/test_encryption_s3.py::test_an_encrypted_backup_in_s3_restores_only_with_the_identity"),
        "the payload after age's header must be ciphertext; the old checks looked for gzip magic inside the ASCII "
        "header and for CREATE TABLE in compressed data"),
    Mutant(
        "empty-gzip-is-accepted", "src/pgdr/streams/compression.py",
        (("""        if not self._seen_data or not self._decompressor.eof:
            raise ValueError("compressed stream is truncated (gzip end of stream missing)")""",
          """        if self._seen_data and not self._decompressor.eof:  # MUTANT: no data is a whole stream
            raise ValueError("compressed stream is truncated (gzip end of stream missing)")"""),),
        ("tests/faults/test_corrupt_backups.py::test_a_damaged_backup_is_refused_with_exit_9_before_the_server_is_"
         "touched[local-empty-file]",),
        "an empty .sql.gz is refused because it does not decompress as gzip; the old expected words were \"\""),
    Mutant(
        "dotenv-created-0666-then-chmodded", "src/pgdr/secrets.py",
        (('''        descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.pgdr-")''',
          '''        temporary_name = str(path.parent / f".{path.name}.pgdr-tmp")  # MUTANT: 0666, chmodded later
        descriptor = os.open(temporary_name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)'''),
         ("        os.replace(temporary, path)",
          "        os.chmod(temporary, 0o600)\n        os.replace(temporary, path)")),
        ("tests/unit/test_secrets.py::test_new_dotenv_file_is_0600_whatever_the_umask",
         "tests/end_to_end/test_secrets_local.py::test_secrets_pull_creates_a_missing_dotenv_0600"),
        "the secrets file is 0600 from its creation; the old tests checked only the final mode"),
    Mutant(
        "failed-session-leaves-the-others-running", "src/pgdr/concurrency.py",
        (('''            for stream in self._streams:
                if stream.process.poll() is None:
                    stream.process.kill()''',
          '''            pass  # MUTANT: the other sessions are not stopped'''),),
        ("tests/unit/test_concurrency.py::test_the_first_failure_is_raised_and_kills_the_other_sessions",
         "tests/end_to_end/test_parallel_restore.py::test_one_failing_database_stops_the_restore_and_is_named"),
        "one failing database stops the sessions beside it; the old `len(started) >= 3` held when none was "
        "stopped (here the restore then waits for the held session: the test's timeout fails it)"),
    Mutant(
        "globals-restored-before-the-parts-are-checked", "src/pgdr/formats/split.py",
        ((CHECKING_LINE, CHECKING_LINE + "    _mutant_restore_globals(context, toolset, local, record)  # MUTANT\n"),),
        ("tests/end_to_end/test_split_and_encryption.py::test_corrupt_split_part_is_refused_before_the_server_is_"
         "touched",),
        "a corrupt part is refused before the server is touched; the old test looked at databases, not roles",
        appended='''

def _mutant_restore_globals(context, toolset, local, record):  # type: ignore[no-untyped-def]
    with client_environment(context.superuser_endpoint()) as environment:
        _restore_globals(context, toolset, local, record, set(), environment)
'''),
    Mutant(
        "download-resumes-from-byte-0", "src/pgdr/storage/s3.py",
        (('''        answer = self.storage.get_object(self.key, Range=f"bytes={self.offset}-", IfMatch=self._etag)''',
          '''        answer = self.storage.get_object(self.key, IfMatch=self._etag)  # MUTANT: from byte 0
        left = self.offset if answer is not None else 0
        while left > 0:
            left -= len(answer["Body"].read(min(left, 1 << 20))) or left'''),),
        ("tests/integration/test_s3_storage.py::test_a_download_cut_midway_resumes_where_it_stopped",
         "tests/faults/test_s3_faults.py::test_a_download_cut_midway_then_503s_then_slow_is_resumed_and_the_"
         "restore_completes"),
        "a cut download resumes with a Range request where it stopped; the old tests passed a download started "
        "again from byte 0"),
    Mutant(
        "slow-network-fault-never-fires", "tests/faults/test_s3_faults.py",
        (('''    "slow-every-request": ([Fault("*", "delay", times=None, seconds=0.4)], ""),''',
          '''    "slow-every-request": ([Fault("*", "delay", times=None, seconds=0.4, path_suffix=".no")], ""),'''),),
        ("tests/faults/test_s3_faults.py::test_transient_s3_faults_mid_upload_are_retried_with_warnings_and_the_"
         "backup_completes[slow-every-request]",),
        "a mutant of the test's own fault: a slow network that is never slow; the old test never showed the delay "
        "fired"),
    Mutant(
        "enospc-not-named-disk-full", "src/pgdr/storage/local.py",
        (("    if error.errno == errno.ENOSPC:", "    if error.errno == -1:  # MUTANT: ENOSPC is a generic error"),),
        ("tests/unit/test_local_storage.py::test_disk_full_is_named_even_where_no_filesystem_can_be_mounted",
         "tests/unit/test_local_storage.py::test_disk_full_is_a_storage_error_naming_the_fix"),
        "a full disk is named with its fix, on a machine that can mount nothing (injected), on a tmpfs and on a "
        "loop-mounted ext4 (before: tmpfs only, skipped without it)"),
    Mutant(
        "apprise-sends-nothing", "src/pgdr/notify.py",
        (("    if not sender.notify(title=event.title, body=redact(event.message)):",
          "    if not True:  # MUTANT: apprise is never asked to send"),),
        ("tests/end_to_end/test_notify.py::test_apprise_delivers_the_event_through_its_url",),
        "with apprise installed its delivery is tested for real; before, the only apprise test skipped then"),
    Mutant(
        "handoff-queue-unbounded", "src/pgdr/streams/handoff.py",
        (("        self._queue: queue.Queue[Item | _Stop] = queue.Queue(maxsize=capacity)",
          "        self._queue: queue.Queue[Item | _Stop] = queue.Queue()  # MUTANT: no bound"),),
        ("tests/unit/test_handoff.py::test_the_producer_waits_when_the_queue_is_full",
         "tests/unit/test_handoff.py::test_a_slow_consumer_bounds_how_far_the_producer_runs_ahead"),
        "the producer waits for room (memory stays flat), seen in its stack, not after a sleep"),
    Mutant(
        "handoff-abort-consumes-the-queue", "src/pgdr/streams/handoff.py",
        (('''            self._discard_queued()
            try:
                self._queue.put_nowait(_STOP)''', '''            try:
                self._queue.put(_STOP)  # MUTANT: what is queued is consumed first'''),
         ("            if self._failure is not None or self._stopping:",
          "            if self._failure is not None:")),
        ("tests/unit/test_handoff.py::test_abort_with_a_full_queue_and_a_slow_worker_skips_the_queued_items",
         "tests/unit/test_handoff.py::test_an_exception_in_the_producer_aborts_the_worker_and_is_not_replaced"),
        "abort skips the queued items; the old `< 1.0` s check could not tell"),
    Mutant(
        "handoff-put-ignores-the-failure", "src/pgdr/streams/handoff.py",
        (('''        self._raise_failure()
        self._queue.put(item)  # never waits forever: after a failure the worker keeps emptying the queue
        self._raise_failure()''', '''        self._queue.put(item)  # MUTANT: the failure waits for close()'''),),
        ("tests/unit/test_handoff.py::test_a_failure_of_the_worker_is_raised_by_the_next_put_with_its_type",),
        "the very next put raises the worker's failure (before: `item < 50` after 1 ms sleeps)"),
    Mutant(
        "run-all-one-job-too-many", "src/pgdr/concurrency.py",
        (("max_workers=max(1, min(jobs, len(tasks)))", "max_workers=max(1, min(jobs + 1, len(tasks)))"),),
        ("tests/unit/test_concurrency.py::test_tasks_run_side_by_side_but_never_more_than_jobs",),
        "never more than `jobs` at a time, side by side proven by a barrier instead of 0.2 s sleeps"),
    Mutant(
        "s3-abort-waits-for-stuck-parts", "src/pgdr/storage/s3.py",
        (("            wait(self._in_flight, timeout=self.storage.abort_wait)",
          "            wait(self._in_flight)  # MUTANT: however long they take"),),
        ("tests/integration/test_s3_concurrent_upload.py::test_abort_does_not_wait_for_a_stuck_part_longer_than_"
         "abort_wait",),
        "abort gives up on stuck parts: they are held by the proxy until after abort returned (a hang here is "
        "failed by the test's timeout), no module constant patched"),
    Mutant(
        "s3-abort-does-not-wait-for-parts", "src/pgdr/storage/s3.py",
        (("        self._let_parts_end()\n", "        pass  # MUTANT: the parts in flight are not waited for\n"),),
        ("tests/integration/test_s3_concurrent_upload.py::test_abort_with_parts_in_flight_lets_them_end_then_"
         "leaves_nothing",),
        "abort lets the parts in flight end first: they are released only once abort waits for them"),
    Mutant(
        "s3-one-part-too-many-in-flight", "src/pgdr/storage/s3.py",
        (("            self._wait_for_parts(max(most - 1, 0))", "            self._wait_for_parts(most)  # MUTANT"),),
        ("tests/integration/test_s3_concurrent_upload.py::test_parts_upload_side_by_side_and_the_object_is_"
         "exactly_the_bytes_written",),
        "at most PARTS_IN_FLIGHT parts overlap, counted while the proxy holds them (before: 0.5 s delays)",
        timeout=120),
    Mutant(
        "metrics-timestamp-in-milliseconds", "src/pgdr/metrics.py",
        (("time.time() if finished is None else finished", "time.time() * 1000 if finished is None else finished"),),
        ("tests/end_to_end/test_metrics.py::test_backup_drill_restore_write_metrics_and_status_shows_them",),
        "each run's time lies between the events around it (before: within a second of the test's clock)"),
    Mutant(
        "status-age-in-milliseconds", "src/pgdr/actions/server.py",
        (('''    return {**newest.as_json(), "age_seconds": round(age)}''',
          '''    return {**newest.as_json(), "age_seconds": round(age * 1000)}  # MUTANT'''),),
        ("tests/end_to_end/test_status_list_psql.py::test_status_json_shows_the_server_its_databases_and_the_"
         "newest_backup",),
        "the age is measured between the backup's end and the moment status returned (before: under 300 s)"),
    Mutant(
        "lock-wait-ignored", "src/pgdr/locking.py",
        (("        if not _try_lock(handle, wait_seconds):", "        if not _try_lock(handle, 0.0):  # MUTANT"),),
        ("tests/faults/test_locking.py::test_a_second_writer_during_a_backup_refuses_naming_it_and_with_wait_runs_"
         "after_it",),
        "--wait queues behind the holder, which is held midway until the queued run asked for the lock "
        "(before: a throttled 4-7 s window)"),
]


def copy_tree(destination: Path) -> Path:
    tree = destination / "tree"
    shutil.copytree(ROOT, tree, ignore=SKIP_COPY, symlinks=True)
    destination.chmod(0o755)  # the cluster's OS user traverses it when pgdr runs a client tool as that user
    tree.chmod(0o755)
    return tree


def apply(mutant: Mutant, tree: Path) -> str:
    """'' when applied, else why not (the code it mutates has changed: update the mutant)."""
    path = tree / mutant.path
    text = path.read_text()
    for old, new in mutant.edits:
        count = text.count(old)
        if count != 1:
            return f"{mutant.path}: the code to mutate occurs {count} times: {old.strip()[:70]!r}"
        text = text.replace(old, new)
    path.write_text(text + mutant.appended)
    return ""


def run_tests(mutant: Mutant, tree: Path, log: Path) -> int:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree / "src"),
                                                                             os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *mutant.tests]
    if mutant.timeout:
        argv.insert(argv.index("-q"), f"--timeout={mutant.timeout}")
    with log.open("w") as handle:
        return subprocess.run(argv, cwd=tree, env=environment, stdout=handle, stderr=subprocess.STDOUT,
                              check=False).returncode


def check(mutant: Mutant, baseline: bool, keep_logs: Path) -> str:
    with tempfile.TemporaryDirectory(prefix=f"pgdr-mutant-{mutant.name}-") as scratch:
        tree = copy_tree(Path(scratch))
        if baseline:
            code = run_tests(mutant, tree, keep_logs / f"{mutant.name}.baseline.log")
            if code != 0:
                return f"BASELINE FAILS (exit {code}): the tests fail without the mutant"
        problem = apply(mutant, tree)
        if problem:
            return f"STALE: {problem}"
        code = run_tests(mutant, tree, keep_logs / f"{mutant.name}.log")
    return {0: "SURVIVED", 1: "killed"}.get(code, f"ERROR (pytest exit {code})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
    parser.add_argument("--baseline", action="store_true", help="first run each mutant's tests without it")
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "pgdr-mutant-logs",
                        help="folder for each run's pytest output (default: %(default)s)")
    options = parser.parse_args()
    if options.list:
        for mutant in MUTANTS:
            print(f"{mutant.name}\n    {mutant.path}: {mutant.why}\n    " + "\n    ".join(mutant.tests))
        return 0
    chosen = [mutant for mutant in MUTANTS if not options.only or mutant.name in options.only]
    unknown = set(options.only or []) - {mutant.name for mutant in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))} (see --list)")
    options.logs.mkdir(parents=True, exist_ok=True)
    results = []
    for mutant in chosen:
        outcome = check(mutant, options.baseline, options.logs)
        results.append((mutant.name, outcome))
        print(f"{outcome:>10}  {mutant.name}  (log: {options.logs / (mutant.name + '.log')})", flush=True)
    killed = sum(outcome == "killed" for _, outcome in results)
    print(f"\n{killed} of {len(results)} mutants killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
