"""Prints the slowest tests of a `make test` run, across its suites, so the next slowdown shows the day it
happens.

    python3 tests/tools/slowest.py build/test-durations [--top 10]

Reads every `<suite>.jsonl` in the folder: one JSON object per test, {file, name, seconds, passed}, written by
the pytest hook in tests/python/conftest.py and by tests/tools/durations_reporter.mjs for node:test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    rows, totals = [], {}
    for path in sorted(args.folder.glob("*.jsonl")):
        suite = path.stem
        for line in path.read_text().splitlines():
            if line.strip():
                test = json.loads(line)
                rows.append((test["seconds"], suite, test["file"], test["name"]))
                totals[suite] = totals.get(suite, 0.0) + test["seconds"]
    if not rows:
        print(f"slowest tests: no durations recorded in {args.folder}")
        return
    print(f"\nslowest {min(args.top, len(rows))} of {len(rows)} tests "
          f"({', '.join(f'{s} {t / 60:.1f} min' for s, t in totals.items())}):")
    for seconds, suite, file, name in sorted(rows, reverse=True)[: args.top]:
        where = f"{file}::{name}" if file and not name.startswith(file) else name
        print(f"  {seconds:7.1f} s  {suite:8} {where[:150]}")


if __name__ == "__main__":
    main()
