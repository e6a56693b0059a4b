"""Timing primitives shared by the gate and the benchmarks.

On a shared 2-core machine absolute times swing by tens of percent, so nothing
here trusts one absolute time. Two kernels timed *alternately* see the same
machine state (load, frequency, cache pressure) within one pair, and the
median of the per-pair ratios is stable where mean/median/min of absolute
times are not. Every measurement runs pinned: one BLAS thread (threadpoolctl),
one torch thread (if torch is loaded) and the garbage collector off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Timer = Callable[[], float]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_steady = False


def steady_allocator() -> bool:
    """Fixes glibc malloc's thresholds so large blocks are reused, not re-faulted; True if applied.

    By default glibc serves large blocks with mmap below a *dynamic* threshold
    and returns freed memory to the OS above another; both drift with the
    allocation history. A kernel that allocates its output then sometimes gets
    recycled memory and sometimes fresh pages to fault in, and which one it
    gets changes between measurements: measured here, that made kernel /
    reference ratios bimodal by 10-30% (spread 12-30% over 8 measurements;
    1-4.5% once fixed). With both thresholds fixed (mmap above 32 MiB, trim
    above 1 GiB), repeated calls reuse the same memory, as a training loop's
    steady state does. Process-wide, idempotent; a no-op off glibc.
    """
    global _steady
    if _steady:
        return True
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _steady = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _steady


@contextlib.contextmanager
def pinned(threads: int = 1) -> Iterator[None]:
    """One BLAS thread for numpy, the same for torch when it is loaded, gc off.

    torch is pinned only if something already imported it: the gate stays
    numpy-only. The previous state is restored on exit.
    """
    limits = None
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover - threadpoolctl is a test dependency
        pass
    torch = sys.modules.get('torch')
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if gc_was_enabled:
            gc.enable()
        if torch is not None:
            torch.set_num_threads(torch_threads)
        if limits is not None:
            limits.restore_original_limits()


def environment_problems() -> list[str]:
    """Reasons the timing environment is not the pinned one (empty when it is fine)."""
    problems = []
    if os.environ.get('PYTEST_XDIST_WORKER'):
        problems.append('running inside a pytest-xdist worker: another worker shares the cores')
    return problems


def time_calls(fn: Callable[[], Any], number: int, timer: Timer = time.perf_counter) -> float:
    """Seconds per call of `fn`, over `number` back-to-back calls."""
    start = timer()
    for _ in range(number):
        fn()
    return (timer() - start) / number


def calls_for(fn: Callable[[], Any], min_time: float, timer: Timer = time.perf_counter) -> int:
    """How many back-to-back calls of `fn` make one sample of at least `min_time` seconds."""
    fn()  # warm up: first-touch page faults, lazy imports, BLAS buffers
    one = max(time_calls(fn, 1, timer), 1e-9)
    return max(1, int(np.ceil(min_time / one)))


def _pair(fn: Callable[[], Any], ref: Callable[[], Any], number: int, ref_number: int, repeats: int,
          first: int, timer: Timer) -> float:
    t_fn, t_ref = [], []
    for i in range(repeats):
        if (i + first) % 2 == 0:
            t_fn.append(time_calls(fn, number, timer))
            t_ref.append(time_calls(ref, ref_number, timer))
        else:
            t_ref.append(time_calls(ref, ref_number, timer))
            t_fn.append(time_calls(fn, number, timer))
    return min(t_fn) / min(t_ref)


def paired_ratios(fn: Callable[[], Any], ref: Callable[[], Any], pairs: int,
                  number: int = 1, ref_number: int | None = None, repeats: int = 5,
                  timer: Timer = time.perf_counter) -> list[float]:
    """Per-pair ratios t(fn) / t(ref), the two timed alternately.

    One pair times `fn` and `ref` alternately `repeats` times each and takes
    min(t_fn) / min(t_ref): a preemption only ever adds time, so the minimum of
    a few neighbouring samples drops it, while the alternation keeps both sides
    under the same slower-moving load. The order inside a pair alternates too,
    so whichever call inherits a warmer cache is not always the same one.
    """
    ref_number = number if ref_number is None else ref_number
    return [_pair(fn, ref, number, ref_number, repeats, p, timer) for p in range(pairs)]


def paired_samples(fn: Callable[[], Any], ref: Callable[[], Any], budget: float = 1.0,
                   min_pairs: int = 11, max_pairs: int = 1001, repeats: int = 5, min_sample: float = 1e-4,
                   timer: Timer = time.perf_counter) -> list[float]:
    """Per-pair ratios t(fn)/t(ref) over about `budget` seconds.

    Each side's sample is at least `min_sample` seconds (small kernels are
    repeated back to back). Pairs are added until `budget` seconds have passed
    and there are at least `min_pairs`, or there are `max_pairs`; the count is
    odd, so the median is one measured pair.
    """
    number = calls_for(fn, min_sample, timer)
    ref_number = calls_for(ref, min_sample, timer)
    ratios: list[float] = []
    start = timer()
    while len(ratios) < max_pairs:
        ratios.append(_pair(fn, ref, number, ref_number, repeats, len(ratios), timer))
        if len(ratios) >= min_pairs and len(ratios) % 2 == 1 and timer() - start >= budget:
            break
    return ratios


def paired_ratio(fn: Callable[[], Any], ref: Callable[[], Any], budget: float = 1.0,
                 min_pairs: int = 11, max_pairs: int = 1001, repeats: int = 5, min_sample: float = 1e-4,
                 timer: Timer = time.perf_counter) -> tuple[float, int]:
    """Median per-pair ratio t(fn)/t(ref) over about `budget` seconds; returns (ratio, pairs)."""
    ratios = paired_samples(fn, ref, budget, min_pairs, max_pairs, repeats, min_sample, timer)
    return statistics.median(ratios), len(ratios)


def median_time(fn: Callable[[], Any], repeat: int = 7, min_sample: float = 5e-4,
                timer: Timer = time.perf_counter) -> float:
    """Median seconds per call over `repeat` samples (for reporting absolute rates only)."""
    number = calls_for(fn, min_sample, timer)
    return statistics.median(time_calls(fn, number, timer) for _ in range(repeat))


def copy_bandwidth(nbytes: int, repeat: int = 7) -> float:
    """Bytes/s of ``np.copyto`` between two preallocated arrays of `nbytes` (read + write counted)."""
    n = max(1, nbytes // 4)
    src = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = median_time(lambda: np.copyto(dst, src), repeat)
    return 2 * src.nbytes / seconds
