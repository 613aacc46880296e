"""argparse `type=` functions for the command line's numbers: one bad value, one clear sentence.

Kept free of the node's heavy imports: `python main.py --help` builds every
parser with them.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Callable, TypeVar

N = TypeVar("N", int, float, Decimal)


def _parsed(text: str, kind: Callable[[str], N], what: str) -> N:
    try:
        return kind(text)
    except (ValueError, InvalidOperation):
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def positive_decimal(text: str) -> Decimal:
    value = _parsed(text, Decimal, "a number")
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value
