"""Shared fixtures: isolated config/env, log capture, and actor teardown."""

from __future__ import annotations

import os
from pathlib import Path

import pykka
import pytest

REPO = Path(__file__).resolve().parent.parent
# Copies of shared/bybit/samples: the exchange documentation's JSON examples.
SAMPLES = REPO / "tests" / "fixtures" / "bybit"

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No test sees the developer's real credentials or overrides."""
    for name in list(os.environ):
        if name.startswith("BYBIT_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _stop_all_actors():
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture
def write_config(tmp_path):
    """Write a config file under tmp_path; data_dir defaults into tmp_path too."""

    def write(text: str = "", *, data_dir: bool = True) -> Path:
        path = tmp_path / "config.yaml"
        body = text
        if data_dir and "data_dir" not in text:
            body = f"data_dir: {tmp_path / 'data'}\n" + text
        path.write_text(body)
        return path

    return write


@pytest.fixture
def events(tmp_path):
    """The node's JSON log, written to a file for this test: call to get its lines as dicts."""
    from infra.logging import configure_logging
    from tests.helpers import read_events

    path = tmp_path / "events.jsonl"
    configure_logging(level="INFO", console="off", file_path=path)
    yield lambda: read_events(path)
    configure_logging(console="off", file_path=None)
