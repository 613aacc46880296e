"""`make bench`: run every bench/bench_*.py and merge the figures into bench/results.json.

    python -m bench [NAME ...]     # e.g. python -m bench messages

Figures are one flat JSON object, a key per figure, plus `machine`.
Running a subset updates only those figures in an existing results file.

At the end a table: each figure, its raw reference, the ratio of the two
(measured alternately in the same run: see bench/compare.py), the target
if the issue set one, and whether it is met. A benchmark module declares
its targets in a module-level `TARGETS = {key: (">=" or "<=", value)}`.
`prev` is the ratio from the results file this run replaces, and `drift`
how far this run moved from it: two runs in a row should agree within
about 10 %.
"""

from __future__ import annotations

import importlib
import json
import operator
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


_OPS = {">=": operator.ge, "<=": operator.le}


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(results: dict, previous: dict, targets: dict) -> str:
    from bench.compare import recorded

    head = ("figure", "value", "reference", "value", "ratio", "prev", "drift", "target", "ok")
    lines = [head]
    for row in recorded():
        if row.figure not in results:
            continue
        ratio = results.get(row.ratio) if row.ratio else None
        prev = previous.get(row.ratio) if row.ratio else None
        drift = f"{(ratio / prev - 1) * 100:+.0f}%" if isinstance(ratio, (int, float)) and prev else "-"
        goal_key = row.ratio if row.ratio in targets else row.figure if row.figure in targets else None
        target, ok = "-", "-"
        if goal_key is not None:
            op, bound = targets[goal_key]
            target = f"{goal_key.removeprefix(row.figure + '_') if goal_key != row.figure else ''} {op} {_fmt(bound)}".strip()
            ok = "yes" if _OPS[op](results[goal_key], bound) else "NO"
        lines.append((row.figure, _fmt(results[row.figure]), row.reference or "-",
                      _fmt(results.get(row.reference)) if row.reference else "-", _fmt(ratio), _fmt(prev), drift,
                      target, ok))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str]) -> int:
    previous: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict = dict(previous) if argv else {}
    targets: dict = {}
    for name in _modules(argv):
        print(f"[bench] {name} ...", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        targets.update(getattr(module, "TARGETS", {}))
        figures = module.run()
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
    print(table(results, previous, targets))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
