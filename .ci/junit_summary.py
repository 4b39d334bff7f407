"""Sum the JUnit reports of a run; exit 1 if none ran or any failed."""

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
reports = sorted(Path(sys.argv[1]).glob("*.xml"))
for report in reports:
    root = ElementTree.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print("%d reports: %d passed, %d failed, %d skipped" % (len(reports), passed, failed, totals["skipped"]))
print("%d passed, %d failed" % (passed, failed))
sys.exit(0 if totals["tests"] and not failed else 1)
