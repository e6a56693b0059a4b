"""``nn-verify``: the verification report, in one command.

Runs every case of the registry (`reference.registry.CASES`) through every check
of the harness (`reference.checks.CHECKS`: forward and backward against torch,
finite differences, ``torch.autograd.gradcheck``, purity, accumulation,
re-entrancy, linearity in the upstream gradient, batch independence, a batch of
one), times forward+backward against torch, and prints one table and a summary
line. The exit status is 1 if any check fails, so the command gates CI alone.

Usage::

    nn-verify                           # the whole registry (also: python -m nn.verify)
    nn-verify -k "LayerNorm or Softmax" # cases whose id matches (pytest -k syntax)
    nn-verify -k "Dense and not 4d" --json report.json --markdown report.md
    nn-verify --dtype float32 --seed 3  # torch comparisons in float32 only, other random draws
    nn-verify --layer mypkg.layers:MyLayer --shape 4,7 --init-args '{"size": 7}'
    nn-verify --layer path/to/file.py:MyLayer --shape 3,5,7

Your own layer (``--layer``) gets its parameters randomized (never the
defaults), then the finite-difference battery, purity, accumulation,
re-entrancy, linearity, ``torch.autograd.gradcheck`` (when torch is installed)
and, with ``--batch-independent``, batch independence. There is no torch mirror
of it, so the comparisons with torch's own layers are skipped (said so).

Without torch the torch-free checks run alone, and the report says so.

Checks and seeds: ``--seed 0`` (the default) draws exactly the numbers the
pytest suite (tests/test_layers.py) draws; another seed draws others. The
gradcheck column (``--gradcheck auto``, the default) runs the harness's own
`reference.checks.check_gradcheck` (full Jacobians, as the pytest suite) on
layers with at most 512 input and output entries in all, and
``torch.autograd.gradcheck(fast_mode=True)`` (one random projection of each
Jacobian) on bigger ones, where full Jacobians take seconds per case (~20 s for
a transformer block). Fast mode can miss a small error that the projection
averages away (a GELU with the tanh-approximation derivative), which is why
small layers get full Jacobians; the finite-difference and torch backward
columns check every layer in full either way. ``--gradcheck full|fast`` forces
one mode.

Exit status: 0 every check passed (skips allowed), 1 a check failed, 2 usage
error (bad option, no case matches ``-k``, a ``--layer`` that cannot be loaded).

JSON schema (``--json FILE``; ``version`` is bumped on incompatible changes)::

    {
      "version": 1,                       # schema version
      "tool": "nn-verify", "nn_version": "0.1.0", "numpy_version": "...",
      "mode": "registry" | "layer",
      "filter": "-k pattern" | null,
      "layer": {"spec": "pkg.mod:Class", "shape": [4, 7], "init_args": {...} | [...] | null,
                "int_input": null | HIGH} | null,    # --layer runs only
      "seed": 0,
      "dtype": "both" | "float64" | "float32",   # the --dtype option
      "dtypes": ["float64", "float32"],          # the dtypes it means
      "gradcheck_mode": "auto" | "fast" | "full",  # per case: measurements.fast_mode
      "torch": {"available": true, "version": "2.13.0" | null, "error": null | "why not"},
      "cases": [
        {
          "id": "Dense-3d", "layer": "Dense", "status": "pass" | "fail", "seconds": 0.05,
          "checks": {
            "<check>" or "<check>[<dtype>]": {     # e.g. "forward[float32]", "purity"
              "check": "forward", "dtype": "float32" | null,
              "status": "pass" | "fail" | "skip",
              "measurements": {"max_abs_err": 1e-7, ...},   # {} when there are none
              "message": null | "failure message (names the tensor) or skip reason",
              "tensor": null | "dx" | "y" | "<parameter key>",  # the wrong tensor on failure
              "seconds": 0.001
            }, ...
          },
          "time_ratio": 1.4 | null,       # nn forward+backward time / torch's, same shapes
          "timing": {"dtype": "float32", "nn_seconds": 2e-5, "torch_seconds": 1.4e-5,
                     "note": null | "why there is no ratio"}
        }, ...
      ],
      "summary": {"cases": 36, "cases_passed": 36, "cases_failed": 0, "checks": 430,
                  "passed": 429, "failed": 0, "skipped": 1, "seconds": 21.4, "ok": true}
    }

Measurements: forward and backward give ``max_abs_err`` and ``max_rel_err``
(largest error over y, or over dx and every parameter gradient, relative to the
largest reference entry); finite differences adds ``kinks`` (entries skipped at
kinks) and ``checked``. Non-finite numbers are written as null.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
DTYPE_CHOICES = {'both': ('float64', 'float32'), 'float64': ('float64',), 'float32': ('float32',)}
#: Checks shown in the "other" column (everything but the ones with columns of their own).
_OWN_COLUMNS = ('forward', 'backward', 'finite_differences', 'gradcheck')
_NO_MIRROR = ('no torch mirror of a user layer: it is checked against finite differences and '
              'torch.autograd.gradcheck instead')


_NO_TORCH = 'torch is not installed'


class UsageError(Exception):
    """Bad command line: reported with exit status 2."""


# ----------------------------------------------------------------------------- -k expressions

_TOKEN = re.compile(r'\s*(\(|\)|[^\s()]+)')


def match_expression(pattern: str) -> Callable[[str], bool]:
    """A predicate for pytest-like ``-k`` expressions over case ids.

    Words match as case-insensitive substrings of the id; they combine with
    ``and``, ``or``, ``not`` and parentheses (``not`` binds tightest, then
    ``and``, then ``or``), e.g. ``"Dense and not 4d"``, ``"(Softmax or GELU) and 3d"``.
    """
    tokens = [t for t in _TOKEN.findall(pattern) if t]
    if not tokens:
        raise UsageError(f'-k: empty expression {pattern!r}')
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise UsageError(f'-k {pattern!r}: expression ends early')
        pos += 1
        return tokens[pos - 1]

    def parse_or():
        left = parse_and()
        while peek() == 'or':
            take()
            right = parse_and()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    def parse_and():
        left = parse_not()
        while peek() == 'and':
            take()
            right = parse_not()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def parse_not():
        token = take()
        if token == 'not':
            inner = parse_not()
            return lambda s: not inner(s)
        if token == '(':
            inner = parse_or()
            if take() != ')':
                raise UsageError(f'-k {pattern!r}: expected ")"')
            return inner
        if token in (')', 'and', 'or'):
            raise UsageError(f'-k {pattern!r}: unexpected {token!r}')
        word = token.lower()
        return lambda s: word in s.lower()

    predicate = parse_or()
    if pos != len(tokens):
        raise UsageError(f'-k {pattern!r}: unexpected {tokens[pos]!r}')
    return predicate


# ----------------------------------------------------------------------------- running checks

@dataclasses.dataclass(frozen=True)
class Options:
    """What every case is run with (picklable: it goes to the worker processes)."""
    dtypes: tuple[str, ...] = ('float64', 'float32')
    seed: int = 0
    timing: bool = True
    gradcheck: str = 'auto'            # 'auto' | 'fast' | 'full' (see the module docstring)
    user: bool = False                 # a --layer case: no torch mirror


_THREAD_LIMITS: list[Any] = []


def _pin_threads() -> None:
    """One BLAS thread and one torch thread: fair timings, no oversubscription."""
    if not _THREAD_LIMITS:
        try:
            from threadpoolctl import threadpool_limits
            _THREAD_LIMITS.append(threadpool_limits(limits=1))
        except ImportError:
            _THREAD_LIMITS.append(None)
    from reference import checks
    if checks.torch is not None:
        checks.torch.set_num_threads(1)


def torch_info() -> dict[str, Any]:
    from reference import checks
    if checks.TORCH_AVAILABLE:
        return {'available': True, 'version': str(checks.torch.__version__).split('+')[0], 'error': None}
    return {'available': False, 'version': None, 'error': checks.TORCH_ERROR}


def _seeded_rng(case, check: str, extra: str, seed: int) -> np.random.Generator:
    """`reference.checks.case_rng` for seed 0 (the pytest suite's numbers), other numbers otherwise."""
    return np.random.default_rng(zlib.crc32(f'{case.id}/{check}/{extra}'.encode()) ^ seed)


def run_gradcheck(case, rng: np.random.Generator, mode: str = 'auto') -> dict[str, Any]:
    """The gradcheck column: `reference.checks.check_gradcheck`, full, fast or auto (as the suite:
    full Jacobians up to `reference.checks.GRADCHECK_FULL_MAX` entries, fast mode above).

    tests/test_cli.py checks that fast mode flags every broken layer of tests/broken_layers.py
    that the full check flags.
    """
    from reference import checks
    return checks.check_gradcheck(case, rng, fast_mode=None if mode == 'auto' else mode == 'fast')


def _crash_message(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f' (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})' \
        if frames else ''
    return f'crashed: {type(err).__name__}: {err}{where}'


def _run_one(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from nn.gradcheck import GradcheckError
    start = time.perf_counter()
    try:
        measurements = fn() or {}
        status, message, tensor = 'pass', None, None
    except GradcheckError as err:
        measurements, status, message = {}, 'fail', str(err)
        tensor = err.tensor or None
    except Exception as err:  # a crashing layer is a failing layer, reported, not fatal
        measurements, status, message, tensor = {}, 'fail', _crash_message(err), None
    return {'status': status, 'measurements': measurements, 'message': message, 'tensor': tensor,
            'seconds': time.perf_counter() - start}


def _skip(reason: str) -> dict[str, Any]:
    return {'status': 'skip', 'measurements': {}, 'message': reason, 'tensor': None, 'seconds': 0.0}


def _per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def _calibrate(fn: Callable[[], Any], budget: float) -> int:
    """Calls per timing round so that one round takes about `budget` seconds."""
    fn()                                     # warm-up (caches, lazy imports)
    n = 1
    while True:
        elapsed = _per_call(fn, n) * n
        if elapsed >= budget or n >= 1 << 14:
            return n
        n = min(n * 10, max(2 * n, int(n * budget / max(elapsed, 1e-9) * 1.2)))


def time_ratio(case, dtype: str, rng: np.random.Generator, rounds: int = 4,
               budget: float = 1e-3) -> dict[str, Any]:
    """Forward+backward of the layer vs its torch mirror (autograd), same shapes, same process.

    Interleaved rounds of ~`budget` seconds each; the fastest round of each side
    counts (the least disturbed by the other processes on a shared machine).
    """
    from reference import layout
    from reference.mirrors import torch_forward

    dt = {'float64': np.float64, 'float32': np.float32}[dtype]
    layer, x, kwargs = case.make(rng, dt)
    case.prepare(layer)
    y, _ = layer.forward(x, **kwargs)
    dy = rng.standard_normal(y.shape).astype(y.dtype)

    def run_nn() -> None:
        case.prepare(layer)
        out, cache = layer.forward(x, **kwargs)
        layer.backward(x, cache, dy, {})

    floating = np.issubdtype(x.dtype, np.floating)
    x_t = layout.to_torch(x, requires_grad=floating)
    params_t = layout.params_to_torch(layer.parameters())
    kwargs_t = {k: layout.to_torch(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    dy_t = layout.to_torch(dy)
    leaves = ([x_t] if floating else []) + list(params_t.values())
    differentiable = bool(leaves)

    def run_torch() -> None:
        for leaf in leaves:
            leaf.grad = None
        case.prepare(layer)
        out = torch_forward(layer, params_t, x_t, **kwargs_t)
        if differentiable:
            out.backward(dy_t)

    n_nn, n_torch = _calibrate(run_nn, budget), _calibrate(run_torch, budget)
    best_nn = best_torch = math.inf
    for _ in range(rounds):
        best_nn = min(best_nn, _per_call(run_nn, n_nn))
        best_torch = min(best_torch, _per_call(run_torch, n_torch))
    return {'dtype': dtype, 'nn_seconds': best_nn, 'torch_seconds': best_torch, 'note': None}


def plan(case, options: Options, torch: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    """(key, check, dtype, skip reason or None) for every check of `reference.checks.CHECKS`."""
    from reference import checks
    rows = []
    for name in checks.CHECKS:
        dtypes: Sequence[str | None] = options.dtypes if name in checks.DTYPED else (None,)
        for dtype in dtypes:
            key = f'{name}[{dtype}]' if dtype else name
            reason = None
            if name in case.skips:
                reason = case.skips[name]
            elif name == 'batch_independence' and not case.batch_independent:
                reason = ('not claimed: pass --batch-independent if output sample i depends only on '
                          'input sample i' if options.user else
                          'the case declares its samples coupled (batch_independent=False)')
            elif options.user and name in checks.TORCH_CHECKS and name != 'gradcheck':
                reason = _NO_MIRROR
            elif name in checks.TORCH_CHECKS and not torch['available']:
                reason = f'{_NO_TORCH} ({torch["error"]})'
            rows.append((key, name, dtype, reason))
    return rows


def run_case(case, options: Options) -> dict[str, Any]:
    """Every check on one case, and the time ratio: a JSON-ready dict (see the module docstring)."""
    from reference import checks
    torch = torch_info()
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for key, name, dtype, reason in plan(case, options, torch):
        if reason is not None:
            result = _skip(reason)
        else:
            rng = _seeded_rng(case, name, dtype or '', options.seed)
            if name == 'gradcheck':
                fn = partial(run_gradcheck, case, rng, options.gradcheck)
            elif dtype is not None:
                fn = partial(checks.CHECKS[name], case, dtype, rng)
            else:
                fn = partial(checks.CHECKS[name], case, rng)
            result = _run_one(fn)
        results[key] = {'check': name, 'dtype': dtype, **result}

    timing_dtype = 'float32' if 'float32' in options.dtypes else options.dtypes[0]
    timing: dict[str, Any] = {'dtype': timing_dtype, 'nn_seconds': None, 'torch_seconds': None, 'note': None}
    if not options.timing:
        timing['note'] = 'timing off (--no-timing)'
    elif options.user:
        timing['note'] = 'no torch mirror of a user layer'
    elif not torch['available']:
        timing['note'] = 'torch is not installed'
    elif any(r['status'] == 'fail' for r in results.values()):
        timing['note'] = 'not timed: a check failed'
    else:
        try:
            timing = time_ratio(case, timing_dtype, _seeded_rng(case, 'timing', timing_dtype, options.seed))
        except Exception as err:
            timing['note'] = f'timing {_crash_message(err)}'
    ratio = None
    if timing['nn_seconds'] is not None and timing['torch_seconds']:
        ratio = timing['nn_seconds'] / timing['torch_seconds']
    failed = any(r['status'] == 'fail' for r in results.values())
    return {'id': case.id, 'layer': case.layer.__name__, 'status': 'fail' if failed else 'pass',
            'seconds': time.perf_counter() - start, 'checks': results, 'time_ratio': ratio,
            'timing': timing, 'torch': torch}


# ----------------------------------------------------------------------------- worker processes

def _worker_init() -> None:
    from reference import checks  # noqa: F401  (imports torch once per worker, before any case)
    _pin_threads()


def _worker_run(case_id: str, options: Options) -> dict[str, Any]:
    from reference.registry import get
    return run_case(get(case_id), options)


def _cost(case) -> int:
    """A rough cost estimate (entries to differentiate), to start the big cases first."""
    try:
        layer, x, _ = case.make(np.random.default_rng(0), np.float64)
        return int(x.size + sum(p.size for p in layer.parameters().values()))
    except Exception:
        return 0


def _run_all(cases: list, options: Options, jobs: int, progress) -> list[dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    if jobs <= 1 or len(cases) <= 1:
        _pin_threads()
        for case in cases:
            progress.describe(case.id)
            results[case.id] = run_case(case, options)
            progress.advance(results[case.id])
        return [results[c.id] for c in cases]

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Never plain fork (forking a process that holds torch's and the progress bar's threads
    # can deadlock). A fork server imports torch once and forks clean workers from it: on a
    # busy 2-core machine that is ~3 s to ready workers, where spawn (each worker importing
    # torch itself) took 4-10 s.
    if 'forkserver' in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context('forkserver')
        context.set_forkserver_preload(['reference.checks'])
    else:
        context = multiprocessing.get_context('spawn')
    order = sorted(cases, key=_cost, reverse=True)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init)
    try:
        futures = {pool.submit(_worker_run, case.id, options): case for case in order}
        for future in as_completed(futures):
            case = futures[future]
            try:
                results[case.id] = future.result()
            except Exception as err:  # the worker itself died (not a failing check)
                results[case.id] = _broken_case(case, options, err)
            progress.describe(case.id)
            progress.advance(results[case.id])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [results[c.id] for c in cases]


def _broken_case(case, options: Options, err: BaseException) -> dict[str, Any]:
    message = f'worker process failed on this case: {_crash_message(err)}'
    return {'id': case.id, 'layer': case.layer.__name__, 'status': 'fail', 'seconds': 0.0,
            'checks': {'harness': {'check': 'harness', 'dtype': None, 'status': 'fail', 'measurements': {},
                                   'message': message, 'tensor': None, 'seconds': 0.0}},
            'time_ratio': None, 'timing': {'dtype': None, 'nn_seconds': None, 'torch_seconds': None,
                                           'note': 'not timed: the worker failed'},
            'torch': None}


class _Progress:
    """A tqdm bar on stderr (only on a terminal, unless forced), or nothing."""

    def __init__(self, total: int, enabled: bool | None) -> None:
        self.bar = None
        if enabled is False:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, unit='case', desc='nn-verify', file=sys.stderr, leave=False,
                        disable=None if enabled is None else False, dynamic_ncols=True)
        self.failed = 0

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def advance(self, result: dict[str, Any]) -> None:
        if self.bar is not None:
            if result['status'] == 'fail':
                self.failed += 1
                self.bar.set_description(f'nn-verify ({self.failed} failed)', refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the user's layer

def load_layer_class(spec: str) -> type:
    """``package.module:Class`` or ``path/to/file.py:Class`` -> the class (a `nn.layer.Layer`)."""
    from nn.layer import Layer
    target, sep, attr = spec.rpartition(':')
    if not sep or not target or not attr:
        raise UsageError(f'--layer expected MODULE:CLASS or FILE.py:CLASS, got {spec!r}')
    try:
        if target.endswith('.py') or os.sep in target or '/' in target:
            path = os.path.abspath(target)
            if not os.path.isfile(path):
                raise UsageError(f'--layer {spec!r}: no such file {path}')
            name = 'nn_verify_user_' + re.sub(r'\W', '_', os.path.splitext(os.path.basename(path))[0])
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            folder = os.path.dirname(path)
            if folder not in sys.path:
                sys.path.insert(0, folder)       # so the file can import its neighbours
            module_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # as `python -m` would
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as err:
        raise UsageError(f'--layer {spec!r}: importing {target} failed: {_crash_message(err)}') from err
    obj: Any = module
    for part in attr.split('.'):
        if not hasattr(obj, part):
            raise UsageError(f'--layer {spec!r}: {target} has no attribute {attr!r}')
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Layer)):
        raise UsageError(f'--layer {spec!r}: expected a subclass of nn.Layer, got {obj!r}')
    return obj


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in re.split(r'[,x\s]+', text.strip().strip('()[]')) if s)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UsageError(f'--shape expected positive sizes such as 4,7 or 2x5x3, got {text!r}')
    return shape


def user_case(spec: str, shape: tuple[int, ...], init_args: str | None, int_input: int | None,
              batch_independent: bool):
    """A registry `Case` for the user's layer: randomized parameters, a random input of `shape`."""
    from reference.registry import Case, randomize
    cls = load_layer_class(spec)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if init_args:
        try:
            value = json.loads(init_args)
        except json.JSONDecodeError as err:
            raise UsageError(f'--init-args expected JSON (an object of keyword arguments or a list of '
                             f'positional ones), got {init_args!r}: {err}') from None
        if isinstance(value, dict):
            kwargs = value
        elif isinstance(value, list):
            args = value
        else:
            raise UsageError(f'--init-args expected a JSON object or list, got {init_args!r}')

    def build(rng: np.random.Generator):
        return randomize(cls(*args, **kwargs), rng)

    try:
        build(np.random.default_rng(0))
    except Exception as err:
        raise UsageError(f'--layer {spec!r}: could not build {cls.__name__}(*{args}, **{kwargs}) and '
                         f'randomize its parameters: {_crash_message(err)}') from err

    if int_input is not None:
        def make_input(rng: np.random.Generator) -> np.ndarray:
            return rng.integers(0, int_input, size=shape)
    else:
        def make_input(rng: np.random.Generator) -> np.ndarray:
            return rng.standard_normal(shape)
    if batch_independent and shape[0] < 2:
        raise UsageError(f'--batch-independent needs a batch of at least 2 (the first axis of --shape), '
                         f'got shape {shape}')
    return Case('x'.join(map(str, shape)), cls, build, make_input, batch_independent=batch_independent)


# ----------------------------------------------------------------------------- reports

_GREEN, _RED, _YELLOW, _DIM, _BOLD, _RESET = '\033[32m', '\033[31m', '\033[33m', '\033[2m', '\033[1m', '\033[0m'


def use_color(mode: str, stream) -> bool:
    """--color always/never win; auto: a terminal, NO_COLOR unset or empty (no-color.org), TERM not dumb."""
    if mode == 'always':
        return True
    if mode == 'never':
        return False
    if os.environ.get('NO_COLOR'):
        return False
    if os.environ.get('TERM') == 'dumb':
        return False
    return hasattr(stream, 'isatty') and stream.isatty()


def _num(value: Any) -> str:
    if value is None:
        return '-'
    value = float(value)
    if value == 0.0:
        return '0'
    if not math.isfinite(value):
        return str(value)
    return f'{value:.1e}'


def _not_applicable(result: dict[str, Any]) -> bool:
    """A skip because torch or a torch mirror is missing, not one the case declared."""
    message = result['message'] or ''
    return message.startswith(_NO_TORCH) or message == _NO_MIRROR


def _cell(result: dict[str, Any] | None, field: str = 'max_rel_err') -> tuple[str, str]:
    """(text, kind) of one check's cell; kind picks the colour."""
    if result is None:
        return '', ''
    if result['status'] == 'fail':
        return 'FAIL', 'fail'
    if result['status'] == 'skip':
        return ('n/a', 'dim') if _not_applicable(result) else ('skip', 'skip')
    if field == 'status':
        return 'pass', 'pass'
    return _num(result['measurements'].get(field)), ''


def _columns(report: dict[str, Any]) -> list[tuple[str, str, Callable[[dict[str, Any]], tuple[str, str]]]]:
    """(header, alignment, cell function) of the table, shared by the terminal and markdown."""
    cols: list[tuple[str, str, Callable[[dict[str, Any]], tuple[str, str]]]] = [
        ('case', '<', lambda c: (c['id'], ''))]
    short = {'float64': 'f64', 'float32': 'f32'}
    for dtype in report['dtypes']:
        cols.append((f'fwd {short[dtype]}', '>', lambda c, d=dtype: _cell(c['checks'].get(f'forward[{d}]'))))
    for dtype in report['dtypes']:
        cols.append((f'bwd {short[dtype]}', '>', lambda c, d=dtype: _cell(c['checks'].get(f'backward[{d}]'))))
    cols.append(('fd', '>', lambda c: _cell(c['checks'].get('finite_differences'))))
    cols.append(('kinks', '>', lambda c: _kinks(c['checks'].get('finite_differences'))))
    cols.append(('gradcheck', '^', lambda c: _gradcheck_cell(c['checks'].get('gradcheck'))))
    cols.append(('other', '<', _other))
    cols.append(('nn/torch', '>', _ratio))
    cols.append(('result', '^', lambda c: ('PASS', 'pass') if c['status'] == 'pass' else ('FAIL', 'fail')))
    return cols


def _gradcheck_cell(result: dict[str, Any] | None) -> tuple[str, str]:
    text, kind = _cell(result, 'status')
    if text == 'pass':
        text = 'fast pass' if result['measurements'].get('fast_mode') else 'full pass'
    return text, kind


def _kinks(result: dict[str, Any] | None) -> tuple[str, str]:
    if result is None or result['status'] != 'pass':
        return '', ''
    return str(int(result['measurements'].get('kinks', 0))), ''


def _other(case: dict[str, Any]) -> tuple[str, str]:
    rows = [r for r in case['checks'].values() if r['check'] not in _OWN_COLUMNS]
    failed = [r['check'] for r in rows if r['status'] == 'fail']
    ran = [r for r in rows if r['status'] != 'skip']
    if failed:
        return 'FAIL ' + ','.join(failed), 'fail'
    if not ran:
        return ('n/a', 'dim') if all(_not_applicable(r) for r in rows) else ('skip', 'skip')
    return f'{len(ran)}/{len(ran)} pass', ''


def _ratio(case: dict[str, Any]) -> tuple[str, str]:
    ratio = case.get('time_ratio')
    if ratio is None:
        return '-', ''
    return f'{ratio:.2f}x', ''


def summarize(cases: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    checks = [r for c in cases for r in c['checks'].values()]
    failed_cases = sum(c['status'] == 'fail' for c in cases)
    failed = sum(r['status'] == 'fail' for r in checks)
    return {'cases': len(cases), 'cases_passed': len(cases) - failed_cases, 'cases_failed': failed_cases,
            'checks': len(checks), 'passed': sum(r['status'] == 'pass' for r in checks), 'failed': failed,
            'skipped': sum(r['status'] == 'skip' for r in checks), 'seconds': round(seconds, 2),
            'ok': failed == 0 and failed_cases == 0}


def summary_line(report: dict[str, Any]) -> str:
    s = report['summary']
    torch = report['torch']
    verdict = 'PASSED' if s['ok'] else 'FAILED'
    tail = [f'torch {torch["version"]}' if torch['available'] else 'torch not installed: torch checks skipped',
            '+'.join(report['dtypes']), f'seed {report["seed"]}']
    return (f'nn-verify {verdict}: {s["cases_passed"]}/{s["cases"]} cases passed, {s["cases_failed"]} failed; '
            f'{s["checks"]} checks: {s["passed"]} passed, {s["failed"]} failed, {s["skipped"]} skipped '
            f'({", ".join(tail)}) in {s["seconds"]:.1f} s')


def _no_torch_note(report: dict[str, Any]) -> str | None:
    torch = report['torch']
    if torch['available']:
        return None
    return (f'torch is not installed ({torch["error"]}): running the finite-difference checks and the '
            f'other torch-free checks (purity, accumulation, re-entrancy, linearity, batch independence) '
            f'only; forward/backward vs torch, torch.autograd.gradcheck, the batch-of-one check and the '
            f'time ratios are skipped.')


def _failures(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f'{c["id"]} {key}', r) for c in report['cases'] for key, r in c['checks'].items()
            if r['status'] == 'fail']


def _skip_groups(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for case in report['cases']:
        for key, r in case['checks'].items():
            if r['status'] == 'skip':
                groups.setdefault(r['message'], []).append(f'{case["id"]} {key}')
    return list(groups.items())


def _listing(items: list[str], limit: int = 4) -> str:
    if len(items) <= limit:
        return ', '.join(items)
    return ', '.join(items[:limit]) + f' and {len(items) - limit} more'


def _legend(report: dict[str, Any]) -> list[str]:
    timing = 'float32' if 'float32' in report['dtypes'] else report['dtypes'][0]
    return [
        'fwd, bwd: max relative error vs torch (of y; of dx and every parameter gradient), '
        'relative to the largest reference entry',
        'fd: the same vs central finite differences in float64; kinks: entries skipped at kinks',
        f'gradcheck: torch.autograd.gradcheck, full Jacobians or fast mode (one random projection; '
        f'--gradcheck {report["gradcheck_mode"]})',
        'other: purity, accumulation, re-entrancy, linearity, batch independence, batch of one',
        f'nn/torch: forward+backward time of nn over torch on the case\'s small shapes, {timing}, one thread '
        'each (below 1: nn is faster)',
    ]


def render_text(report: dict[str, Any], color: bool) -> str:
    paint = {'fail': _RED + _BOLD, 'pass': _GREEN, 'skip': _YELLOW, 'dim': _DIM, 'head': _BOLD} if color else {}
    cols = _columns(report)
    rows = [[fn(case) for _, _, fn in cols] for case in report['cases']]
    widths = [max([len(h)] + [len(r[i][0]) for r in rows]) for i, (h, _, _) in enumerate(cols)]

    def line(cells: list[tuple[str, str]]) -> str:
        out = []
        for (text, kind), width, (_, align, _) in zip(cells, widths, cols, strict=True):
            padded = f'{text:{align}{width}}'
            out.append(f'{paint[kind]}{padded}{_RESET}' if kind in paint else padded)
        return '  '.join(out).rstrip()

    lines = []
    note = _no_torch_note(report)
    if note:
        lines += [note, '']
    if report['mode'] == 'layer':
        layer = report['layer']
        kind = (f'integer indices in [0, {layer["int_input"]})' if layer['int_input'] is not None
                else 'Gaussian')
        lines += [f'checking your layer {layer["spec"]} on an input of shape {tuple(layer["shape"])} ({kind}), '
                  f'its parameters randomized', '']
    lines.append(line([(h, 'head') for h, _, _ in cols]))
    lines += [line(r) for r in rows]
    lines.append('')
    lines += ['  ' + text for text in _legend(report)]
    skips = _skip_groups(report)
    if skips:
        lines += ['', 'skipped:']
        for reason, items in skips:
            lines.append(f'  {_listing(items)}: {reason}')
    failures = _failures(report)
    if failures:
        lines += ['', f'{paint.get("fail", "")}failures ({len(failures)}):{_RESET if color else ""}']
        for where, r in failures:
            tensor = f' (tensor {r["tensor"]})' if r['tensor'] else ''
            lines.append(f'{paint.get("fail", "")}FAIL{_RESET if color else ""} {where}{tensor}:')
            lines += ['    ' + text for text in (r['message'] or '').splitlines()]
    lines.append('')
    verdict = summary_line(report)
    kind = 'pass' if report['summary']['ok'] else 'fail'
    lines.append(f'{paint[kind]}{verdict}{_RESET}' if color else verdict)
    return '\n'.join(lines) + '\n'


def render_markdown(report: dict[str, Any]) -> str:
    """A pull-request comment: verdict, summary, the table, failures and skips folded."""
    s = report['summary']
    cols = _columns(report)
    align = {'<': ':--', '>': '--:', '^': ':-:'}
    icon = '✅' if s['ok'] else '❌'
    out = [f'## {icon} nn-verify: {s["cases_passed"]}/{s["cases"]} cases passed', '',
           f'`{summary_line(report)}`', '']
    note = _no_torch_note(report)
    if note:
        out += [f'> {note}', '']

    def esc(text: str) -> str:
        return text.replace('|', '\\|')

    out.append('| ' + ' | '.join(h for h, _, _ in cols) + ' |')
    out.append('| ' + ' | '.join(align[a] for _, a, _ in cols) + ' |')
    for case in report['cases']:
        cells = []
        for i, (_, _, fn) in enumerate(cols):
            text, kind = fn(case)
            text = f'`{text}`' if i == 0 else esc(text)
            cells.append(f'**{text}**' if kind == 'fail' else text)
        out.append('| ' + ' | '.join(cells) + ' |')
    out += [''] + [f'{text}  ' for text in _legend(report)]
    failures = _failures(report)
    if failures:
        out += ['', f'### Failures ({len(failures)})', '']
        for where, r in failures:
            tensor = f' (tensor `{r["tensor"]}`)' if r['tensor'] else ''
            out += [f'<details><summary><code>{where}</code>{tensor}</summary>', '', '```text',
                    (r['message'] or '').replace('```', "'''"), '```', '</details>', '']
    skips = _skip_groups(report)
    if skips:
        out += ['', '<details><summary>Skipped checks</summary>', '']
        out += [f'- {esc(_listing(items, 8))}: {esc(reason)}' for reason, items in skips]
        out += ['', '</details>']
    return '\n'.join(out) + '\n'


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='nn-verify',
        description='Verify every layer of nn (or your own): forward and backward against torch and '
                    'finite differences, torch.autograd.gradcheck, purity, accumulation, re-entrancy, '
                    'linearity, batch independence, and forward+backward time against torch. '
                    'Exit status 1 if any check fails.',
        epilog='Examples: nn-verify -k "LayerNorm or Softmax"; nn-verify --json report.json; '
               'nn-verify --layer mypkg.layers:MyLayer --shape 4,7 --init-args \'{"size": 7}\'')
    parser.add_argument('-k', dest='pattern', metavar='PATTERN',
                        help='only cases whose id matches: substrings combined with and/or/not/() '
                             '(as pytest -k), e.g. "Dense and not 4d"')
    parser.add_argument('--json', metavar='FILE', help='also write the report as JSON (schema: pydoc nn.verify)')
    parser.add_argument('--markdown', metavar='FILE', help='also write the report as a markdown PR comment')
    parser.add_argument('--dtype', choices=sorted(DTYPE_CHOICES), default='both',
                        help='dtypes of the comparisons with torch (default both)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random draws; 0 (default) draws what the pytest suite draws')
    parser.add_argument('-j', '--jobs', type=int, default=None,
                        help='worker processes (default: 2 on a multi-core machine when there are '
                             'many cases, else 1)')
    parser.add_argument('--no-timing', action='store_true', help='skip the time ratios vs torch')
    parser.add_argument('--gradcheck', choices=('auto', 'fast', 'full'), default='auto',
                        help='torch.autograd.gradcheck with full Jacobians (as the pytest suite), in fast '
                             'mode (one random projection), or auto (default, as the suite): full up to '
                             '512 entries of input, parameters and output, fast above')
    parser.add_argument('--color', choices=('auto', 'always', 'never'), default='auto',
                        help='colour the table: auto = on a terminal unless NO_COLOR is set')
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument('--progress', dest='progress', action='store_true', default=None,
                          help='show the progress bar (on stderr) even when it is not a terminal')
    progress.add_argument('--no-progress', dest='progress', action='store_false')
    parser.add_argument('--list', action='store_true', help='list the selected case ids and exit')
    user = parser.add_argument_group('your own layer')
    user.add_argument('--layer', metavar='MODULE:CLASS',
                      help='check your layer class instead of the registry: package.module:Class or '
                           'path/to/file.py:Class')
    user.add_argument('--shape', help='input shape for --layer, e.g. 4,7 (batch first)')
    user.add_argument('--init-args', metavar='JSON',
                      help='constructor arguments for --layer: a JSON object (keywords) or list (positional)')
    user.add_argument('--int-input', type=int, metavar='HIGH',
                      help='feed integer indices in [0, HIGH) instead of a Gaussian input (embeddings)')
    user.add_argument('--batch-independent', action='store_true',
                      help='also check that output sample i depends on input sample i only')
    return parser


def _select(args) -> tuple[list, str]:
    if args.layer:
        if args.pattern:
            raise UsageError('-k selects registry cases; it cannot be combined with --layer')
        if not args.shape:
            raise UsageError('--layer needs --shape (the input shape, e.g. --shape 4,7)')
        case = user_case(args.layer, parse_shape(args.shape), args.init_args, args.int_input,
                         args.batch_independent)
        return [case], 'layer'
    for flag in ('shape', 'init_args', 'int_input'):
        if getattr(args, flag) is not None:
            raise UsageError(f'--{flag.replace("_", "-")} is for --layer only')
    if args.batch_independent:
        raise UsageError('--batch-independent is for --layer only (registry cases declare it themselves)')
    from reference.registry import CASES
    cases = list(CASES)
    if args.pattern:
        predicate = match_expression(args.pattern)
        cases = [c for c in cases if predicate(c.id)]
        if not cases:
            raise UsageError(f'-k {args.pattern!r} matches no case (nn-verify --list shows them)')
    return cases, 'registry'


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nn-verify``; returns the exit status."""
    start = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.seed < 0:
            raise UsageError(f'--seed expected a non-negative integer, got {args.seed}')
        if args.jobs is not None and args.jobs < 1:
            raise UsageError(f'--jobs expected at least 1, got {args.jobs}')
        cases, mode = _select(args)
    except UsageError as err:
        print(f'nn-verify: error: {err}', file=sys.stderr)
        return 2
    except Exception as err:  # a broken case module: report it, fail the gate
        print(f'nn-verify: error: could not load the registry: {_crash_message(err)}', file=sys.stderr)
        return 1
    if args.list:
        print('\n'.join(c.id for c in cases))
        return 0

    options = Options(dtypes=DTYPE_CHOICES[args.dtype], seed=args.seed, timing=not args.no_timing,
                      gradcheck=args.gradcheck, user=mode == 'layer')
    jobs = args.jobs
    if jobs is None:
        jobs = 2 if (os.cpu_count() or 1) >= 2 and len(cases) >= 12 else 1
    progress = _Progress(len(cases), args.progress)
    try:
        results = _run_all(cases, options, jobs, progress)
    except KeyboardInterrupt:
        progress.close()
        print('nn-verify: interrupted', file=sys.stderr)
        return 130
    progress.close()

    torch = next((r['torch'] for r in results if r.get('torch')), None) or torch_info()
    for r in results:
        r.pop('torch', None)
    import nn
    report = {
        'version': SCHEMA_VERSION, 'tool': 'nn-verify', 'nn_version': nn.__version__,
        'numpy_version': np.__version__, 'mode': mode, 'filter': args.pattern,
        'layer': ({'spec': args.layer, 'shape': list(parse_shape(args.shape)),
                   'init_args': json.loads(args.init_args) if args.init_args else None,
                   'int_input': args.int_input}
                  if mode == 'layer' else None),
        'seed': args.seed, 'dtype': args.dtype, 'dtypes': list(options.dtypes),
        'gradcheck_mode': args.gradcheck, 'torch': torch,
        'cases': results,
    }
    report['summary'] = summarize(results, time.perf_counter() - start)
    sys.stdout.write(render_text(report, use_color(args.color, sys.stdout)))
    sys.stdout.flush()
    try:
        if args.json:
            with open(args.json, 'w', encoding='utf-8') as f:
                json.dump(_json_ready(report), f, indent=1, allow_nan=False)
                f.write('\n')
        if args.markdown:
            with open(args.markdown, 'w', encoding='utf-8') as f:
                f.write(render_markdown(report))
    except OSError as err:
        print(f'nn-verify: error: could not write the report: {err}', file=sys.stderr)
        return 2
    return 0 if report['summary']['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
