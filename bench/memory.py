"""Peak resident memory of this process around one piece of work, as the kernel counts it.

    with PeakRss() as peak:
        store_session.gaps(...)
    peak.growth_mb

Why RSS and not tracemalloc: tracemalloc sees only allocations made through
Python's allocator. DuckDB's buffer pool and operators, and Arrow's
buffers, are C++ allocations it never sees (a gap scan over a million bars
showed 0.005 MB under tracemalloc). The kernel's resident set counts every
page the process has touched, whoever allocated it.

How the peak is taken: writing "5" to /proc/self/clear_refs resets the
kernel's high-water mark (VmHWM) to the current resident set (Linux >=
4.0), so after the work VmHWM is the highest RSS reached *during* it,
however briefly. Growth = that peak minus the RSS just before. Where
clear_refs cannot be written, a thread samples VmRSS every millisecond
instead (it can miss a spike shorter than that; `exact` says which was used).

Run the work in a fresh process (see `bench/probe.py`) when earlier work in
the same process could have left freed-but-kept memory to reuse: that would
hide growth.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def rss_kb() -> int:
    return _status_kb("VmRSS")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    def __init__(self) -> None:
        self.before_kb = 0
        self.peak_kb = 0
        self.exact = True
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> "PeakRss":
        self.before_kb = rss_kb()
        self.exact = _reset_hwm()
        if not self.exact:
            self.peak_kb = self.before_kb
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak_kb = max(self.peak_kb, rss_kb())

    def __exit__(self, *exc: object) -> None:
        if self.exact:
            self.peak_kb = _status_kb("VmHWM")
        else:
            self._stop.set()
            assert self._sampler is not None
            self._sampler.join()
            self.peak_kb = max(self.peak_kb, rss_kb())

    @property
    def growth_mb(self) -> float:
        return max(0, self.peak_kb - self.before_kb) / 1024
