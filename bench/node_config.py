"""A node configuration for a benchmark: its data (DuckDB files, logs) in the benchmark's temp dir."""

from __future__ import annotations

from pathlib import Path

from infra.config import AppConfig, load_config


def node_config(tmp: Path, extra: str = "") -> AppConfig:
    """config.yaml in `tmp` with `data_dir` under it, plus `extra` YAML; loaded as the node loads it."""
    cfg = tmp / "config.yaml"
    cfg.write_text(f"data_dir: {tmp / 'data'}\n{extra}")
    return load_config(cfg)
