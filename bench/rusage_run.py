"""Run a Python module as __main__ and, at exit, write its own and its children's resource usage to a JSON file.

    python3 bench/rusage_run.py OUT.json -m pgdr backup

CPU: RUSAGE_SELF is the pgdr process alone (compression, hashing, upload threads); RUSAGE_CHILDREN covers every
child it waited for (pg_dumpall and its pg_dump children, psql).
Peak RSS: VmHWM of this process, which starts afresh at exec. ru_maxrss is not used for it: Linux carries the
RSS of the process that spawned us (the harness) across exec into ru_maxrss, so small programs would inherit
the parent's size. The children's peak RSS is sampled by the harness instead (measure.py).
"""

from __future__ import annotations

import atexit
import json
import resource
import runpy
import sys


def usage(who: int) -> dict[str, float]:
    data = resource.getrusage(who)
    return {"cpu_user_s": data.ru_utime, "cpu_system_s": data.ru_stime}


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: rusage_run.py OUT.json -m MODULE [ARGS...]")
    out, module = sys.argv[1], sys.argv[3]

    def write() -> None:
        with open(out, "w") as handle:
            json.dump({"self": usage(resource.RUSAGE_SELF) | {"peak_rss_kib": peak_rss_kib()},
                       "children": usage(resource.RUSAGE_CHILDREN)}, handle)

    atexit.register(write)
    sys.path.pop(0)  # bench/ itself: its modules must not shadow the program's
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
