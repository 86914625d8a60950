#!/usr/bin/env python3
"""Counts test results for scripts/test.sh; prints "PASSED FAILED SKIPPED".

  count_tests.py xctest LOG          XCTest's per-test lines in `swift test` output
  count_tests.py swift-testing XML   the xUnit file Swift Testing writes (--xunit-output)
  count_tests.py junit XML           pytest's --junitxml file

A missing or unreadable file counts as nothing (the caller then judges by exit status).
"""
import re
import sys
import xml.etree.ElementTree as ET


def xctest(path):
    # swift-corelibs-xctest: "Test Case 'Suite.testName' passed (0.001 seconds)"
    line = re.compile(r"^Test Case '[^']+' (passed|failed|skipped) \(")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for text in f:
                m = line.match(text.strip())
                if m:
                    counts[m.group(1)] += 1
    except OSError:
        pass
    return counts["passed"], counts["failed"], counts["skipped"]


def xunit(path):
    """Both Swift Testing's and pytest's files: <testsuites><testsuite><testcase>..."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return 0, 0, 0
    passed = failed = skipped = 0
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failed += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main(argv):
    if len(argv) != 3 or argv[1] not in ("xctest", "swift-testing", "junit"):
        print(__doc__, file=sys.stderr)
        return 2
    result = xctest(argv[2]) if argv[1] == "xctest" else xunit(argv[2])
    print(*result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
