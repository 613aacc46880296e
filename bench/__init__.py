"""Benchmarks. Each `bench/bench_*.py` exposes `run() -> dict[str, float]`."""
