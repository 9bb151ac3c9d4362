"""The score of a mutmut run per module (`make mutation` prints it; README
"Mutation testing"): killed/total, then each mutant that survived or that
no selected test reaches. Reads mutmut's results in mutants/**/*.meta,
restricted to the mutant-name globs given as arguments."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANT_NAME = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ]")  # fallback.audit.x_append__mutmut_3, ….xǁQueryǁempty__mutmut_1


def results(root: Path, patterns: list[str]) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} for the mutants matching `patterns`."""
    by_module: dict[str, dict[str, str]] = defaultdict(dict)
    for meta in sorted(root.rglob("*.meta")):
        for name, exit_code in json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"].items():
            if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
                by_module[MUTANT_NAME.match(name)["module"]][name] = status_by_exit_code[exit_code]
    return by_module


def main(patterns: list[str]) -> int:
    by_module = results(Path("mutants"), patterns or ["*"])
    if not by_module:
        print("no mutmut results in mutants/: run `make mutation` first")
        return 1
    for module, statuses in sorted(by_module.items()):
        counts = Counter(statuses.values())
        checked = len(statuses) - counts["no tests"] - counts["not checked"]
        unchecked = f", {counts['not checked']} not checked (run stopped)" if counts["not checked"] else ""
        print(f"{module}: {counts['killed']}/{checked} killed ({counts['survived']} survived, {counts['timeout']} timed out; "
              f"{counts['no tests']} more not reached by the selected tests{unchecked})")
        for name, status in sorted(statuses.items()):
            if status not in ("killed", "not checked"):
                print(f"    {status}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
