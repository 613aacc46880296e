"""`make bench`: run every bench/bench_*.py and merge the figures into bench/results.json.

    python -m bench [NAME ...]     # e.g. python -m bench messages

Figures are one flat JSON object, a key per figure, plus `machine`.
Running a subset updates only those figures in an existing results file.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


def _modules(selected: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if selected:
        wanted = {f"bench_{s.removeprefix('bench_')}" for s in selected}
        unknown = wanted - set(names)
        if unknown:
            sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    return names


def main(argv: list[str]) -> int:
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() and argv else {}
    for name in _modules(argv):
        print(f"[bench] {name} ...", flush=True)
        started = time.perf_counter()
        figures = importlib.import_module(f"bench.{name}").run()
        for key, value in figures.items():
            print(f"[bench]   {key} = {value}", flush=True)
        results.update(figures)
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f}s", flush=True)
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS)
    print(f"[bench] wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
