"""Fail CI when a test was skipped that is not on the allow-list: a skip means a guarantee went untested.

    python3 .ci/check_skips.py JUNIT_XML ALLOW_LIST

ALLOW_LIST has one test per line, as `module.path::test_name[params]` (the junit classname, `::`, the test's
name; shell-style wildcards allowed), then optionally `# why`. Blank lines and lines starting with # are ignored.
Exit 0 when every skipped test is allowed, 1 otherwise (each one printed with pytest's reason), 2 on bad input.
"""

from __future__ import annotations

import fnmatch
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def allowed_patterns(path: Path) -> list[str]:
    patterns = []
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if entry:
            patterns.append(entry)
    return patterns


def skipped_tests(report: Path) -> list[tuple[str, str]]:
    """(classname::name, reason) of every skipped (or xfailed) test case in a junit XML report."""
    found = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            reason = skipped.get("message") or (skipped.text or "").strip()
            found.append((f"{case.get('classname', '')}::{case.get('name', '')}", reason))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report, allow_list = Path(argv[1]), Path(argv[2])
    if not report.exists():
        print(f"check_skips: no junit report at {report} (pytest did not get to write it)", file=sys.stderr)
        return 2
    patterns = allowed_patterns(allow_list) if allow_list.exists() else []
    skipped = skipped_tests(report)
    unexpected = [(test, reason) for test, reason in skipped
                  if not any(fnmatch.fnmatchcase(test, pattern) for pattern in patterns)]
    if unexpected:
        print(f"\n{len(unexpected)} test(s) skipped that {allow_list} does not allow: their guarantees went untested",
              file=sys.stderr)
        for test, reason in unexpected:
            print(f"  SKIPPED {test}: {reason}", file=sys.stderr)
        return 1
    print(f"check_skips: {len(skipped)} skipped, all on {allow_list}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
