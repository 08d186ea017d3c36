"""Run one benchmark case as a pipeline of processes and measure it.

CPU time per stage is exact: each process is reaped with wait4(), whose rusage includes the children it waited
for (pg_dumpall's pg_dump children, for instance). A Python stage started through rusage_run.py is split further
into the process itself and its children. A server's CPU (PostgreSQL, moto) is its own, its live children's and
its reaped children's time (psutil), before and after. The machine's busy CPU time over the same
interval shows how much of the box other processes took while the case ran.

Peak RSS is VmHWM (/proc/PID/status), sampled every 50 ms for every process of the pipeline and its descendants.
wait4's ru_maxrss is useless here: Linux carries the spawning process's RSS across exec into it, so every child
would look at least as big as the harness. The same sampler reads each process's run-queue wait
(/proc/PID/task/*/schedstat): time it was ready to run but had no core. CPU time plus that wait close to the wall
time means the process was CPU-bound even on a machine shared with other work.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

POLL_SECONDS = 0.01
SAMPLE_SECONDS = 0.05
TERM_GRACE_SECONDS = 10
STDERR_TAIL = 2000


class CaseFailed(Exception):
    """A stage exited non-zero or the case timed out; the message names the stage and its stderr tail."""


@dataclass
class Stage:
    """One process of a pipeline; rusage_file is set when it runs under rusage_run.py."""

    name: str
    argv: list[str]
    rusage_file: Path | None = None
    children_name: str = "children"


@dataclass
class Result:
    wall_s: float
    cpu_s: dict[str, float]
    peak_rss_mb: dict[str, float]
    server_cpu_s: dict[str, float]
    machine_busy_s: float
    run_queue_s: dict[str, float]
    lines: list[tuple[float, str]] = field(default_factory=list)
    stderr: dict[str, str] = field(default_factory=dict)
    output_bytes: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def our_cpu_s(self) -> float:
        return sum(self.cpu_s.values()) + sum(self.server_cpu_s.values())

    def as_json(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {name: round(seconds, 3) for name, seconds in (self.cpu_s | self.server_cpu_s).items()},
            "peak_rss_mb": {name: round(megabytes, 1) for name, megabytes in self.peak_rss_mb.items()},
            "waiting_for_cpu_s": {name: round(seconds, 3) for name, seconds in self.run_queue_s.items()},
            "machine_busy_cpu_s": round(self.machine_busy_s, 3),
            "other_processes_cpu_s": round(self.machine_busy_s - self.our_cpu_s, 3),
            "output_bytes": self.output_bytes,
            **self.extra,
        }


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0))


Server = int | Callable[[], int | None]  # a pid, or what gives the pid of the moment (a server that restarts)


def server_pid(server: Server) -> int | None:
    return server() if callable(server) else server


def server_cpu_seconds(pid: int) -> float | None:
    """CPU of a server: the process (a postmaster, moto), its live children and the children it has reaped."""
    try:
        postmaster = psutil.Process(pid)
        live = 0.0
        for child in postmaster.children():
            try:
                times = child.cpu_times()
                live += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        times = postmaster.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system + live)
    except psutil.NoSuchProcess:
        return None


def _start(stages: list[Stage], stdin: IO[bytes] | int, stdout: IO[bytes] | int, env: dict[str, str],
           cwd: Path | None, stderr_files: Sequence[IO[bytes]], merge_last_stderr: bool
           ) -> list[subprocess.Popen[bytes]]:
    """Start the pipeline in a process group of its own (so it can be ended as a whole, and only it)."""
    processes: list[subprocess.Popen[bytes]] = []
    source: IO[bytes] | int = stdin
    for index, stage in enumerate(stages):
        last = index == len(stages) - 1
        process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            stage.argv, stdin=source, stdout=stdout if last else subprocess.PIPE,
            stderr=subprocess.STDOUT if last and merge_last_stderr else stderr_files[index], env=env, cwd=cwd,
            process_group=processes[0].pid if processes else 0,
        )
        if processes and processes[-1].stdout is not None:
            processes[-1].stdout.close()  # the next stage owns it now: SIGPIPE reaches the writer if it dies
        processes.append(process)
        source = process.stdout if not last and process.stdout is not None else subprocess.DEVNULL
    return processes


def _read_lines(stream: IO[bytes], started: float, lines: list[tuple[float, str]]) -> None:
    for raw in iter(stream.readline, b""):
        lines.append((round(time.monotonic() - started, 3), raw.decode(errors="replace").rstrip()))


def _wait(processes: list[subprocess.Popen[bytes]], deadline: float) -> dict[int, resource.struct_rusage]:
    """Reap every stage with wait4 (exact rusage per process); TimeoutError past the deadline."""
    pending = {process.pid: process for process in processes}
    usages: dict[int, resource.struct_rusage] = {}
    while pending:
        for pid in list(pending):
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped:
                pending.pop(pid).returncode = os.waitstatus_to_exitcode(status)
                usages[pid] = usage
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(POLL_SECONDS)
    return usages


def end_group(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the pipeline's own process group, SIGKILL after a grace period, and reap."""
    alive = [process for process in processes if process.returncode is None]
    if not alive:
        return
    group = processes[0].pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while any(process.poll() is None for process in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
        if all(process.returncode is not None for process in alive):
            return


def _cpu(stage: Stage, rusage: resource.struct_rusage, peaks: dict[str, float]) -> dict[str, float]:
    """CPU seconds of a stage, split into itself and its children when it ran under rusage_run.py."""
    if stage.rusage_file is None or not stage.rusage_file.exists():
        return {stage.name: rusage.ru_utime + rusage.ru_stime}
    data = json.loads(stage.rusage_file.read_text())
    peaks[stage.name] = data["self"]["peak_rss_kib"] / 1024  # exact: read by the process itself at exit
    return {stage.name: data["self"]["cpu_user_s"] + data["self"]["cpu_system_s"],
            stage.children_name: data["children"]["cpu_user_s"] + data["children"]["cpu_system_s"]}


def _proc_status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None  # gone, or a zombie


def _run_queue_ns(pid: int) -> int | None:
    """Time the process's threads spent runnable but waiting for a core (/proc/PID/task/*/schedstat)."""
    total, seen = 0, False
    try:
        paths = list(Path(f"/proc/{pid}/task").glob("*/schedstat"))
    except OSError:  # the process exited between two looks (Python 3.11's glob does not swallow it)
        return None
    for path in paths:
        try:
            total += int(path.read_text().split()[1])
            seen = True
        except (OSError, ValueError, IndexError):
            continue
    return total if seen else None


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        try:
            children = [int(child) for listing in Path(f"/proc/{queue.pop()}/task").glob("*/children")
                        for child in listing.read_text().split()]
        except (OSError, ValueError):
            continue
        found += children
        queue += children
    return found


class Sampler(threading.Thread):
    """Every 50 ms: peak RSS (VmHWM) and run-queue wait of each role's processes.

    A role is a stage and its descendants, or, for a stage under rusage_run.py, the stage alone and its
    descendants under the stage's children_name: the same split as the CPU figures. A server's processes (the
    postmaster and every backend, say) form one role named after it; only their run-queue wait is sampled.
    """

    def __init__(self, stages: list[Stage], processes: list[subprocess.Popen[bytes]], servers: dict[str, Server],
                 cpu_before: dict[str, float | None]) -> None:
        super().__init__(daemon=True)
        self.roots = [(process.pid, stage) for stage, process in zip(stages, processes, strict=True)]
        self.servers, self.done = servers, threading.Event()
        self.peaks: dict[str, float] = {}
        self.waits: dict[int, tuple[str, int, int]] = {}  # pid -> role, first seen, last seen (ns)
        # a server's CPU per postmaster it had: a restore that restarts the server (a bulk load) has several; the
        # first one's CPU from before the case is left out
        self.server_cpu: dict[str, dict[int, tuple[float, float]]] = {}  # name -> pid -> (at start, last seen)
        for name, server in servers.items():
            pid = server_pid(server)
            before = cpu_before.get(name)
            if pid is not None and before is not None:
                self.server_cpu[name] = {pid: (before, before)}
            for each in [pid, *descendants(pid)] if pid is not None else []:
                self._wait(each, name, baseline=True)

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        for root, stage in self.roots:
            self._sample(root, stage.name, root=True)
            for child in descendants(root):
                self._sample(child, stage.children_name if stage.rusage_file else stage.name, root=False)
        for name, server in self.servers.items():
            pid = server_pid(server)
            if pid is None:
                continue
            self._server_cpu(name, pid)
            for each in [pid, *descendants(pid)]:
                self._wait(each, name, baseline=False)

    def _server_cpu(self, name: str, pid: int) -> None:
        seconds = server_cpu_seconds(pid)
        if seconds is not None:
            known = self.server_cpu.setdefault(name, {})
            start = known[pid][0] if pid in known else 0.0
            known[pid] = (start, max(seconds, known[pid][1] if pid in known else 0.0))

    def server_seconds(self) -> dict[str, float]:
        """Each server's CPU during the case, summed over its postmasters (read once more at the end)."""
        for name, server in self.servers.items():
            pid = server_pid(server)
            if pid is not None:
                self._server_cpu(name, pid)
        return {name: sum(last - start for start, last in known.values()) for name, known in self.server_cpu.items()}

    def _sample(self, pid: int, role: str, root: bool) -> None:
        if not root:
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("python"):
                    return  # spawned but not yet exec'd: it still shows its parent's memory
            except OSError:
                return
        kib = _proc_status_kib(pid, "VmHWM:")
        if kib:  # None or 0 while the process is exiting
            self.peaks[role] = max(self.peaks.get(role, 0.0), kib / 1024)
        self._wait(pid, role, baseline=False)

    def _wait(self, pid: int, role: str, baseline: bool) -> None:
        waited = _run_queue_ns(pid)
        if waited is not None:
            first = self.waits[pid][1] if pid in self.waits else (waited if baseline else 0)
            self.waits[pid] = (role, first, waited)

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """Peak RSS (MB) and run-queue wait (s) by role."""
        self.done.set()
        self.join(timeout=5)
        waits: dict[str, float] = {}
        for role, first, last in self.waits.values():
            waits[role] = waits.get(role, 0.0) + (last - first) / 1e9
        return dict(self.peaks), waits


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - STDERR_TAIL))
    return handle.read().decode(errors="replace").strip()


def run_pipeline(stages: list[Stage], *, env: dict[str, str], timeout: float, cwd: Path | None = None,
                 stdin: Path | None = None, stdout: Path | None = None,
                 servers: Mapping[str, Server | None] | None = None, capture_output: bool = False) -> Result:
    """Run stages[0] | stages[1] | ... and measure; CaseFailed if any stage fails (the others are ended).

    servers: name -> the servers the pipeline talks to (their CPU is measured too): a pid (None: not running), or a
    function giving the pid of the moment, for a server the case restarts.
    """
    watched = {name: server for name, server in (servers or {}).items() if server is not None}
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="pgdr-bench-") as scratch:
        stderr_files = [open(Path(scratch) / f"stderr-{index}", "w+b") for index in range(len(stages))]
        source = open(stdin, "rb") if stdin else subprocess.DEVNULL
        sink = open(stdout, "wb") if stdout else subprocess.DEVNULL
        processes: list[subprocess.Popen[bytes]] = []
        reader = None
        try:
            servers_before = {name: server_cpu_seconds(pid) if (pid := server_pid(server)) is not None else None
                              for name, server in watched.items()}
            busy_before = machine_busy_seconds()
            started = time.monotonic()
            processes = _start(stages, source, subprocess.PIPE if capture_output else sink, env, cwd, stderr_files,
                               merge_last_stderr=capture_output)
            sampler = Sampler(stages, processes, watched, servers_before)
            sampler.start()
            if capture_output and processes[-1].stdout is not None:
                reader = threading.Thread(target=_read_lines, args=(processes[-1].stdout, started, lines), daemon=True)
                reader.start()
            try:
                usages = _wait(processes, started + timeout)
            except TimeoutError:
                raise CaseFailed(f"timed out after {timeout:.0f} s") from None
            finally:
                peaks, waits = sampler.stop()
            wall = time.monotonic() - started
            busy = machine_busy_seconds() - busy_before
            if reader is not None:
                reader.join(timeout=10)
            time.sleep(0.3)  # let the server reap the backend that served us before reading its CPU
            server_cpu = sampler.server_seconds()
            stderr = {stage.name: _tail(handle) for stage, handle in zip(stages, stderr_files, strict=True)}
            _check(stages, processes, stderr, lines)
        finally:
            end_group(processes)
            for handle in [*stderr_files, source, sink]:
                if not isinstance(handle, int):
                    handle.close()
    cpu: dict[str, float] = {}
    for stage, process in zip(stages, processes, strict=True):
        cpu |= _cpu(stage, usages[process.pid], peaks)
    stderr = {name: text for name, text in stderr.items() if text}
    return Result(wall, cpu, peaks, server_cpu, busy, waits, lines, stderr)


def _check(stages: list[Stage], processes: list[subprocess.Popen[bytes]], stderr: dict[str, str],
           lines: list[tuple[float, str]]) -> None:
    for stage, process in zip(stages, processes, strict=True):
        if process.returncode != 0:
            tail = stderr.get(stage.name) or "\n".join(line for _, line in lines[-15:])
            raise CaseFailed(f"{stage.name} exited {process.returncode}: {tail[-STDERR_TAIL:]}")
