"""Helpers of the side-by-side benchmarks (tests/benchmarks): timing one side, the paired ratio, the table."""

from __future__ import annotations

import dataclasses

from benchmarks import timing


@dataclasses.dataclass
class Row:
    group: str
    name: str
    shape: str
    nn_median: float | None = None
    torch_median: float | None = None
    ratio_to_torch: float | None = None
    target: float | None = None
    fraction_of_limit: float | None = None
    limit: str = ''
    rate: str = ''


def pedantic(benchmark, fn, seconds: float = 1.0) -> float:
    """Times `fn` with pytest-benchmark for about `seconds` (pinned, gc off); returns its median seconds.

    Rounds of at least 1 ms (fast kernels repeat within a round), between 3 and 50 of them.
    """
    with timing.pinned():
        number = timing.calls_for(fn, 1e-3)
        one = timing.time_calls(fn, number)
        rounds = int(min(50, max(3, seconds / max(one * number, 1e-9))))
        benchmark.pedantic(fn, rounds=rounds, iterations=number, warmup_rounds=1)
    stats = getattr(getattr(benchmark, 'stats', None), 'stats', None)
    return float(stats.median) if stats is not None else one


def paired(fn, ref, call_seconds: float, budget: float = 1.5) -> float:
    """Median per-pair ratio t(fn) / t(ref) (alternating, pinned); fewer repeats for slow calls.

    Each side's sample is at least 10 ms of back-to-back calls: alternating single calls of
    numpy and torch hands each library the other's just-freed output memory, which was measured
    to slow torch's ReLU on [1024, 1024] 2.4x (paired ratio 2.0 where the blocked medians gave
    3.1); blocks of calls pay that once per sample (paired 3.3).
    """
    heavy = call_seconds > 0.05
    with timing.pinned():
        return timing.paired_ratio(fn, ref, budget=budget, min_pairs=5 if heavy else 11,
                                   repeats=1 if heavy else 3, min_sample=1e-2)[0]


def _fmt(value: float | None, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def render_table(rows: dict[str, Row]) -> str:
    lines = ['| group | shape | nn median | torch median | nn / torch (paired) | target | fraction of limit | limit |',
             '|---|---|---:|---:|---:|---:|---:|---|']
    for row in rows.values():
        target = '-'
        if row.target is not None and row.ratio_to_torch is not None:
            target = f'<= {row.target:g} ' + ('ok' if row.ratio_to_torch <= row.target else '**MISSED**')
        lines.append(
            f'| {row.group} | {row.shape} | {_fmt(row.nn_median and row.nn_median * 1e3, ".3f")} ms '
            f'| {_fmt(row.torch_median and row.torch_median * 1e3, ".3f")} ms | {_fmt(row.ratio_to_torch, ".2f")}x '
            f'| {target} | {_fmt(row.fraction_of_limit, ".2f")} | {row.limit} {row.rate} |')
    return '\n'.join(lines)
