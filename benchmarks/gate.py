"""The performance regression gate: paired ratios against committed baselines.

Usage (from the repository root)::

    python -m benchmarks.gate                      # check every gated kernel; exit 1 on a regression
    python -m benchmarks.gate --kernels relu.backward dense.forward
    python -m benchmarks.gate --save-history       # also write benchmarks/history/<time>-<commit>.json
    python -m benchmarks.gate --update-baseline    # re-measure and rewrite benchmarks/baselines.json
    python -m benchmarks.gate --list               # the kernels, their references, their baselines

How it decides. Each kernel is timed alternately with its NumPy reference of
the same shape and bottleneck (`benchmarks.kernels`), and the median per-pair
ratio t(kernel)/t(reference) is compared with the committed baseline ratio. A
kernel whose ratio exceeds the baseline by more than the threshold (8%) is
measured again, twice; it fails only if all three measurements exceed it.
Absolute times on a shared 2-core machine swing by tens of percent; the paired
ratio does not, because both sides of a pair see the same load.

The environment is pinned: one BLAS thread (threadpoolctl), gc disabled while
timing, and no pytest-xdist (the gate refuses to run inside a worker).
Exit status: 0 pass, 1 regression, 2 usage error or (with --strict) a kernel
without a baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import kernels as _kernels
from benchmarks import timing

HERE = Path(__file__).resolve().parent
BASELINES = HERE / 'baselines.json'
HISTORY = HERE / 'history'
THRESHOLD = 0.08
RETRIES = 2
BUDGET = 1.0          # seconds per measurement of one kernel
BASELINE_REPEATS = 5  # measurements per kernel when recording a baseline (their median is stored)
FORMAT = 1

REFRESH_HINT = 'python -m benchmarks.gate --update-baseline'


# ----------------------------------------------------------------------------- decision logic
@dataclasses.dataclass
class Verdict:
    """The gate's decision on one kernel.

    status: ``'pass'``, ``'FAIL'``, ``'no-baseline'`` or ``'unavailable'``.
    ratios: every measurement made (the first, then the re-measurements).
    """
    kernel: str
    status: str
    baseline: float | None = None
    ratios: list[float] = dataclasses.field(default_factory=list)
    limit: float | None = None
    message: str = ''
    seconds: float = 0.0

    @property
    def ratio(self) -> float | None:
        """The measurement that decided: the first within the limit, else the smallest."""
        if not self.ratios:
            return None
        if self.limit is not None:
            within = [r for r in self.ratios if r <= self.limit]
            if within:
                return within[0]
        return min(self.ratios)

    @property
    def change(self) -> float | None:
        """Relative change of the deciding ratio against the baseline (+0.10 = 10% slower)."""
        if self.ratio is None or not self.baseline:
            return None
        return self.ratio / self.baseline - 1.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(ratio=self.ratio, change=self.change)
        return d


Remeasure = Callable[[list[str]], dict[str, float]]


def judge_all(items: Sequence[tuple[str, float | None, Callable[[], float]]], threshold: float = THRESHOLD,
              retries: int = RETRIES, remeasure: Remeasure | None = None, pause: float = 0.0) -> list[Verdict]:
    """Judges kernels given as ``(name, baseline ratio or None, measure)``; `measure` returns one paired ratio.

    Every kernel is measured once, in order. A kernel above ``baseline * (1 +
    threshold)`` is measured again after the others, up to `retries` more
    passes, so its re-measurements are seconds apart rather than back to back
    (a burst of load on the machine does not fail a kernel three times). It
    fails only if every measurement is above the limit. A kernel without a
    baseline is measured once and reported, never failed.

    `remeasure(names) -> {name: ratio}`, when given, makes each re-measurement
    pass instead, after `pause` seconds (the CLI pools fresh processes: see
    `isolated_measure`; measured here, a kernel's ratio can sit ~10% high for
    the tens of seconds a neighbour's test run loads the machine).
    """
    ratios: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    fns = {name: fn for name, _, fn in items}

    def record(name: str, ratio: float, spent: float) -> None:
        ratios.setdefault(name, []).append(ratio)
        seconds[name] = seconds.get(name, 0.0) + spent

    def above(name: str, baseline: float | None) -> bool:
        return baseline is not None and ratios[name][-1] > baseline * (1.0 + threshold)

    def measure_pass(names: list[str], batch: Remeasure | None) -> None:
        if batch is not None:
            start = time.perf_counter()
            results = batch(names)
            spent = (time.perf_counter() - start) / max(1, len(names))
            for name in names:
                record(name, results[name], spent)
            return
        for name in names:
            start = time.perf_counter()
            ratio = fns[name]()
            record(name, ratio, time.perf_counter() - start)

    measure_pass([name for name, _, _ in items], None)
    for _ in range(retries):
        pending = [name for name, baseline, _ in items if above(name, baseline)]
        if pending:
            if remeasure is not None:
                time.sleep(pause)
            measure_pass(pending, remeasure)
    return [verdict(name, baseline, ratios[name], threshold, seconds[name]) for name, baseline, _ in items]


ISOLATED_PROCESSES = 3   # fresh processes pooled into one re-measurement
RETRY_PAUSE = 5.0        # seconds before each re-measurement pass, so a burst of load can pass


def isolated_measure(names: list[str], budget: float = BUDGET, processes: int = ISOLATED_PROCESSES,
                     timeout: float = 600.0) -> dict[str, float]:
    """Measures `names` once each in fresh Python processes; returns {name: median of pooled pairs}.

    A kernel's ratio carries state of the process that measures it (where
    NumPy's and BLAS's buffers and the kernel's arrays landed in physical
    memory; freed memory is reused, so rebuilding in the same process lands in
    the same place): measured here, one process saw conv2d.backward at 1.93
    three times in a row where five others saw 1.65, and one-process
    measurements of the same kernel spread by 5-20% between processes. A
    re-measurement pools the pairs of `processes` new processes, each an
    independent draw of that state.
    """
    pooled: dict[str, list[float]] = {name: [] for name in names}
    cmd = [sys.executable, '-m', 'benchmarks.gate', '--measure-json', '--budget', str(budget), '--kernels', *names]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(HERE.parent), env.get('PYTHONPATH', '')]))
    for _ in range(processes):
        out = subprocess.run(cmd, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f'gate: measuring {names} in a fresh process failed:\n{out.stderr[-2000:]}')
        for name, values in json.loads(out.stdout.strip().splitlines()[-1]).items():
            pooled[name] += values
    return {name: float(np.median(values)) for name, values in pooled.items()}


def judge(kernel: str, baseline: float | None, measure: Callable[[], float],
          threshold: float = THRESHOLD, retries: int = RETRIES) -> Verdict:
    """`judge_all` for one kernel, re-measured in this process."""
    return judge_all([(kernel, baseline, measure)], threshold, retries)[0]


def verdict(kernel: str, baseline: float | None, ratios: list[float], threshold: float = THRESHOLD,
            seconds: float = 0.0) -> Verdict:
    """The decision on one kernel from its measurements (the first, then any re-measurements)."""
    if baseline is None:
        return Verdict(kernel, 'no-baseline', None, ratios, None,
                       f'no baseline for {kernel}: record one with `{REFRESH_HINT} --kernels {kernel}` '
                       f'and commit benchmarks/baselines.json', seconds)
    limit = baseline * (1.0 + threshold)
    if all(r > limit for r in ratios):
        best = min(ratios)
        return Verdict(kernel, 'FAIL', baseline, ratios, limit,
                       f'{kernel}: {len(ratios)} of {len(ratios)} measurements above the limit '
                       f'{limit:.3f} (baseline {baseline:.3f} +{threshold:.0%}); best {best:.3f} '
                       f'= {best / baseline - 1.0:+.1%}', seconds)
    message = ''
    first = ratios[0] / baseline - 1.0
    if first < -threshold:
        message = (f'{kernel} is {-first:.0%} faster than its baseline: lock it in with '
                   f'`{REFRESH_HINT} --kernels {kernel}`')
    return Verdict(kernel, 'pass', baseline, ratios, limit, message, seconds)


# ----------------------------------------------------------------------------- baselines
class BaselineError(Exception):
    pass


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    blas = ''
    try:
        from threadpoolctl import threadpool_info
        blas = ', '.join(sorted({f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()
                                 if i.get('user_api') == 'blas'}))
    except ImportError:
        pass
    return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(),
            'numpy': np.__version__, 'blas': blas, 'platform': platform.platform()}


def git_commit() -> str:
    """The short commit of the checkout ($NN_GATE_COMMIT overrides, for runs outside a git checkout)."""
    if os.environ.get('NN_GATE_COMMIT'):
        return os.environ['NN_GATE_COMMIT']
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=HERE, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def load_baselines(path: Path = BASELINES) -> dict[str, Any] | None:
    """The baseline file's content, or None when it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BaselineError(f'{path} is not valid JSON ({err}); re-record it with `{REFRESH_HINT}`') from err
    if not isinstance(data, dict) or not isinstance(data.get('kernels'), dict):
        raise BaselineError(f'{path} has no "kernels" table; re-record it with `{REFRESH_HINT}`')
    return data


def missing_file_message(path: Path) -> str:
    return (f'No baseline file at {path}: nothing to compare against, so no kernel can fail.\n'
            f'Record the baselines on this machine with `{REFRESH_HINT}` and commit {Path(path).name}.')


def baseline_ratio(data: dict[str, Any] | None, kernel: str) -> float | None:
    if not data:
        return None
    entry = data['kernels'].get(kernel)
    return None if entry is None else float(entry['ratio'])


# ----------------------------------------------------------------------------- measuring
def reference_name(kernel: _kernels.Kernel) -> str:
    return kernel.reference or ('np.matmul, same GEMM shapes' if kernel.kind == 'gemm' else 'same-size ufunc')


BUILDS = 3            # fresh builds per measurement, their pairs pooled


def samples(kernel: _kernels.Kernel, budget: float = BUDGET, seed: int = 0, builds: int = BUILDS,
            wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None) -> list[float]:
    """Per-pair ratios of `kernel` to its reference, pooled over `builds` fresh builds.

    Each build (same seed, same values) lands the kernel's arrays somewhere
    new in memory; where they land changes its speed by up to ~10% here, so
    one build's luck of placement must not decide a measurement. `wrap`
    replaces the kernel call (tests use it to inject work).
    """
    timing.steady_allocator()
    ratios: list[float] = []
    for _ in range(builds):
        bound = kernel.build(np.random.default_rng(seed))
        run = bound.run if wrap is None else wrap(bound.run)
        with timing.pinned():
            ratios += timing.paired_samples(run, bound.reference, budget=budget / builds, min_pairs=5)
        del bound, run
    return ratios


def measurer(kernel: _kernels.Kernel, budget: float = BUDGET, seed: int = 0, builds: int = BUILDS,
             wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None) -> Callable[[], float]:
    """A function measuring `kernel`'s paired ratio to its reference (median of `samples`)."""
    return lambda: float(np.median(samples(kernel, budget, seed, builds, wrap)))


def select(names: Sequence[str] | None) -> list[_kernels.Kernel]:
    if not names:
        return _kernels.gated()
    return [_kernels.get(n) for n in names]


def run_gate(names: Sequence[str] | None = None, baselines: Path = BASELINES, threshold: float = THRESHOLD,
             retries: int = RETRIES, budget: float = BUDGET, out=sys.stdout,
             measure_factory: Callable[[_kernels.Kernel], Callable[[], float]] | None = None,
             isolate: bool = False) -> list[Verdict]:
    """Judges each selected kernel against the baseline file; prints one line per kernel.

    `isolate`: re-measure failing kernels in fresh processes (`isolated_measure`);
    otherwise in this one (which is what a test that patches a kernel needs).
    """
    data = load_baselines(baselines)
    if data is None:
        print(missing_file_message(baselines), file=out)
    factory = measure_factory or (lambda k: measurer(k, budget))
    unavailable, items = [], []
    for kernel in select(names):
        reason = kernel.missing()
        if reason:
            unavailable.append(Verdict(kernel.name, 'unavailable', baseline_ratio(data, kernel.name),
                                       message=reason))
        else:
            items.append((kernel.name, baseline_ratio(data, kernel.name), factory(kernel)))
    remeasure = (lambda pending: isolated_measure(pending, budget)) if isolate else None
    verdicts = judge_all(items, threshold, retries, remeasure, RETRY_PAUSE if isolate else 0.0) + unavailable
    for v in verdicts:
        print(format_line(v), file=out, flush=True)
    return verdicts


def update_baselines(names: Sequence[str] | None = None, path: Path = BASELINES, budget: float = BUDGET,
                     repeats: int = BASELINE_REPEATS, out=sys.stdout,
                     measure_factory: Callable[[_kernels.Kernel], Callable[[], float]] | None = None,
                     isolate: bool = False) -> dict[str, Any]:
    """Measures each selected kernel `repeats` times and stores the median ratio as its baseline.

    Round robin: every round measures every kernel once, so each kernel's
    measurements spread over the whole recording; with `isolate`, each round
    runs in a fresh process (see `isolated_measure`). Kernels not selected
    keep their entries; the file is rewritten whole.
    """
    data = load_baselines(path) or {'format': FORMAT, 'kernels': {}}
    factory = measure_factory or (lambda k: measurer(k, budget))
    chosen = []
    for kernel in select(names):
        reason = kernel.missing()
        if reason:
            print(f'  {kernel.name:<20} skipped: {reason}', file=out)
        else:
            chosen.append((kernel, None if isolate else factory(kernel)))
    # Round robin: each kernel's measurements are spread over the whole recording.
    measured: dict[str, list[float]] = {k.name: [] for k, _ in chosen}
    for _ in range(repeats):
        if isolate and chosen:
            results = isolated_measure([k.name for k, _ in chosen], budget, processes=1)
            for kernel, _ in chosen:
                measured[kernel.name].append(results[kernel.name])
            continue
        for kernel, measure in chosen:
            measured[kernel.name].append(measure())
    for kernel, _ in chosen:
        ratios = sorted(measured[kernel.name])
        median = float(np.median(ratios))
        data['kernels'][kernel.name] = {
            'ratio': round(median, 4),
            'measurements': [round(r, 4) for r in ratios],
            'kind': kernel.kind,
            'reference': reference_name(kernel),
            'shape': list(kernel.shape),
            'git_commit': git_commit(),
            'recorded': _now(),
        }
        print(f'  {kernel.name:<20} baseline {median:7.3f}  (measured {", ".join(f"{r:.3f}" for r in ratios)})',
              file=out, flush=True)
    data.update(format=FORMAT, threshold=THRESHOLD, recorded=_now(), git_commit=git_commit(),
                machine=machine_info())
    data['kernels'] = dict(sorted(data['kernels'].items()))
    Path(path).write_text(json.dumps(data, indent=1) + '\n')
    return data


# ----------------------------------------------------------------------------- output
def format_line(v: Verdict) -> str:
    if v.status == 'unavailable':
        return f'  {v.kernel:<20} {"skip":>5}  {v.message}'
    ratios = ' '.join(f'{r:.3f}' for r in v.ratios)
    base = f'{v.baseline:.3f}' if v.baseline else '  -  '
    change = f'{v.change:+6.1%}' if v.change is not None else '   n/a'
    line = f'  {v.kernel:<20} {v.status:>5}  baseline {base}  measured {ratios:<20} change {change}  ({v.seconds:.1f}s)'
    return line + (f'\n      {v.message}' if v.message and v.status != 'FAIL' else '')


def summary(verdicts: Iterable[Verdict], threshold: float, seconds: float) -> str:
    verdicts = list(verdicts)
    failed = [v for v in verdicts if v.status == 'FAIL']
    nobase = [v for v in verdicts if v.status == 'no-baseline']
    checked = [v for v in verdicts if v.status in ('pass', 'FAIL')]
    lines = [f'gate: {len(checked)} kernels checked against baselines (threshold +{threshold:.0%}, '
             f'{RETRIES} re-measurements before failing), {len(failed)} failed, {len(nobase)} without a '
             f'baseline, {sum(v.status == "unavailable" for v in verdicts)} unavailable; {seconds:.1f}s']
    lines += [f'REGRESSION {v.message}' for v in failed]
    if nobase:
        lines.append(f'NOTE {len(nobase)} kernel(s) have no baseline ({", ".join(v.kernel for v in nobase)}): '
                     f'record them with `{REFRESH_HINT} --kernels {" ".join(v.kernel for v in nobase)}`')
    return '\n'.join(lines)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def save_history(verdicts: Sequence[Verdict], directory: Path = HISTORY, threshold: float = THRESHOLD,
                 seconds: float = 0.0) -> Path:
    """Writes one JSON file per run: ``<directory>/<UTC time>-<commit>.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now, commit = _now(), git_commit()
    stem = f'{now.replace(":", "").replace("-", "")}-{commit}'
    path, n = directory / f'{stem}.json', 1
    while path.exists():             # two runs in one second keep both
        n += 1
        path = directory / f'{stem}-{n}.json'
    path.write_text(json.dumps({'time': now, 'timestamp': time.time(), 'git_commit': commit,
                                'threshold': threshold, 'seconds': seconds,
                                'machine': machine_info(), 'kernels': [v.as_dict() for v in verdicts]},
                               indent=1) + '\n')
    return path


def list_kernels(path: Path = BASELINES, out=sys.stdout) -> None:
    data = load_baselines(path)
    for k in _kernels.KERNELS:
        base = baseline_ratio(data, k.name)
        state = 'gated' if k.gated else 'bench only'
        missing = k.missing()
        print(f'  {k.name:<20} {k.kind:<6} {state:<10} baseline {base if base else "-":<7} '
              f'{missing or k.note}; reference: {reference_name(k)}', file=out)


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.gate', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kernels', nargs='+', metavar='NAME', help='only these kernels (default: every gated one)')
    parser.add_argument('--update-baseline', action='store_true',
                        help=f'measure each kernel {BASELINE_REPEATS} times and store the median as its baseline')
    parser.add_argument('--save-history', nargs='?', const=str(HISTORY), metavar='DIR',
                        help=f'write this run as JSON into DIR (default {HISTORY.relative_to(HERE.parent)})')
    parser.add_argument('--baselines', default=str(BASELINES), help='the baseline file (default: %(default)s)')
    parser.add_argument('--threshold', type=float, default=THRESHOLD, help='allowed slowdown (default 0.08)')
    parser.add_argument('--budget', type=float, default=BUDGET, help='seconds per measurement (default 1.0)')
    parser.add_argument('--strict', action='store_true', help='exit 2 when a kernel has no baseline')
    parser.add_argument('--list', action='store_true', help='list the kernels and their baselines')
    parser.add_argument('--in-process', action='store_true',
                        help='re-measure (and record baselines) in this process instead of fresh ones')
    parser.add_argument('--measure-json', action='store_true', help=argparse.SUPPRESS)   # isolated_measure's worker
    args = parser.parse_args(argv)

    if args.list:
        list_kernels(Path(args.baselines))
        return 0
    problems = timing.environment_problems()
    if problems:
        print('gate: refusing to time in this environment: ' + '; '.join(problems), file=sys.stderr)
        return 2
    try:
        names = args.kernels
        if names:
            select(names)   # unknown names fail before anything is measured
    except KeyError as err:
        print(f'gate: {err.args[0]}', file=sys.stderr)
        return 2
    if args.measure_json:
        results = {k.name: samples(k, args.budget) for k in select(names) if not k.missing()}
        print(json.dumps(results))
        return 0
    start = time.perf_counter()
    isolate = not args.in_process
    try:
        if args.update_baseline:
            print(f'gate: recording baselines into {args.baselines}')
            update_baselines(names, Path(args.baselines), args.budget, isolate=isolate)
            print(f'gate: done in {time.perf_counter() - start:.1f}s; review and commit {args.baselines}')
            return 0
        data = load_baselines(Path(args.baselines))
        if data is not None and data.get('machine', {}).get('cpu') not in (None, machine_info()['cpu']):
            print(f"gate: WARNING baselines were recorded on {data['machine']['cpu']!r}, this is "
                  f"{machine_info()['cpu']!r}; ratios may not carry over (refresh with `{REFRESH_HINT}`)")
        print(f'gate: paired ratio t(kernel)/t(numpy reference) vs {args.baselines} '
              f'(threshold +{args.threshold:.0%})')
        verdicts = run_gate(names, Path(args.baselines), args.threshold, RETRIES, args.budget, isolate=isolate)
    except BaselineError as err:
        print(f'gate: {err}', file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(summary(verdicts, args.threshold, seconds))
    if args.save_history:
        print(f'gate: history saved to {save_history(verdicts, Path(args.save_history), args.threshold, seconds)}')
    if any(v.status == 'FAIL' for v in verdicts):
        return 1
    if args.strict and any(v.status == 'no-baseline' for v in verdicts):
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
