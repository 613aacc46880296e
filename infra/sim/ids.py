"""Seeded, counter-based randomness: the same seed gives the same ids and noise.

splitmix64 over (stream key + counter) is a good counter-based generator:
any element can be computed directly, with no state to walk from the epoch,
and the numpy version gives bit-identical results to the scalar one because
it uses only wrapping integer arithmetic.
"""

from __future__ import annotations

import hashlib

import numpy as np

MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_INV_2_53 = 1.0 / (1 << 53)


def splitmix64(x: int) -> int:
    z = (x + _GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * _M1) & MASK
    z = ((z ^ (z >> 27)) * _M2) & MASK
    return z ^ (z >> 31)


def stream_key(seed: int, *names: object) -> int:
    """A 64-bit key for a named stream (e.g. seed, "BTCUSDT", "close")."""
    text = "\x1f".join([str(seed), *(str(n) for n in names)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def uniform(key: int, n: int) -> float:
    """Uniform in [0, 1) for element n of the stream."""
    return (splitmix64((key + n) & MASK) >> 11) * _INV_2_53


def uniform_array(key: int, n: np.ndarray) -> np.ndarray:
    """`uniform` for an int64 array of counters, bit-identical to the scalar version."""
    with np.errstate(over="ignore"):
        z = n.astype(np.uint64) + np.uint64(key) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * _INV_2_53


class IdSource:
    """Deterministic ids from a seed: UUID-shaped order/exec ids, connection ids."""

    def __init__(self, seed: int):
        self._seed = seed
        self._counters: dict[str, int] = {}

    def _next(self, kind: str) -> int:
        n = self._counters.get(kind, 0) + 1
        self._counters[kind] = n
        return splitmix64(stream_key(self._seed, "id", kind) + n) | 1 << 63

    def uuid(self, kind: str) -> str:
        a, b = self._next(kind), self._next(kind)
        h = f"{a:016x}{b:016x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def number(self, kind: str) -> int:
        """A positive increasing-by-one counter value (sequence numbers)."""
        n = self._counters.get(kind, 0) + 1
        self._counters[kind] = n
        return n

    def token(self, kind: str, length: int = 20) -> str:
        alphabet = "0123456789abcdefghijklmnopqrstuv"
        x = self._next(kind)
        y = self._next(kind)
        v = (x << 64) | y
        out = []
        for _ in range(length):
            out.append(alphabet[v & 31])
            v >>= 5
        return "".join(out)
