"""The checks the harness runs on every registry case.

Each ``check_*(case, rng, ...)`` builds the case afresh, runs one property, and
either returns a small dict of measurements (for reports) or raises
`nn.gradcheck.GradcheckError` naming the case, the check, the tensor that is
wrong (``y``, ``dx`` or a parameter key) and the worst elements.
"""

from __future__ import annotations

import copy
import re
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from nn.gradcheck import GradcheckError, assert_close, check_layer_battery
from nn.layer import Layer
from reference.registry import Case

# Only the torch checks need torch; the others (finite differences, purity, ...) run without it.
try:
    import torch
except ImportError as _err:
    torch = None
    TORCH_ERROR = f'{type(_err).__name__}: {_err}'
else:
    TORCH_ERROR = ''
    # torch.autograd.gradcheck is the function; its error class lives in the module of that name.
    from torch.autograd.gradcheck import GradcheckError as TorchGradcheckError

    from reference import layout
    from reference.adapter import as_autograd_function
    from reference.mirrors import torch_forward
#: True when torch imported; the checks in TORCH_CHECKS need it.
TORCH_AVAILABLE = torch is not None
TORCH_CHECKS = ('forward', 'backward', 'gradcheck', 'batch_one')

DTYPES = {'float64': np.float64, 'float32': np.float32}


def _require_torch(what: str) -> None:
    if torch is None:
        raise ImportError(f'{what} needs torch, which could not be imported ({TORCH_ERROR}); '
                          f'install the test extra, or run only the checks not in TORCH_CHECKS')


def case_rng(case: Case, check: str, extra: str = '') -> np.random.Generator:
    """A generator seeded by the case and check alone: results do not depend on test order."""
    return np.random.default_rng(zlib.crc32(f'{case.id}/{check}/{extra}'.encode()))


def _fail(tensor: str, message: str) -> GradcheckError:
    err = GradcheckError(message)
    err.tensor = tensor
    return err


def _kwargs_to_torch(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: layout.to_torch(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def _max_errors(expected: np.ndarray, actual: np.ndarray, scale: float | None = None) -> tuple[float, float]:
    """Largest absolute error, and it relative to `scale` (default: the largest |expected|).

    Normwise, so entries that are ~0 do not make the relative error meaningless; pass the
    scale of all the tensors of a check, so a tensor whose true value is 0 (the attention
    key bias) reports its round-off relative to the others rather than to itself.
    """
    if expected.size == 0:
        return 0.0, 0.0
    err = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    scale = float(np.abs(expected).max()) if scale is None else scale
    return err, err / scale if scale > 0 else err


def torch_reference(case: Case, layer: Layer, x: np.ndarray, kwargs: dict[str, Any]):
    """(y_t, x_t, params_t): the mirror's output and its leaf tensors."""
    _require_torch(f'{case.id}: the torch reference')
    x_t = layout.to_torch(x, requires_grad=np.issubdtype(x.dtype, np.floating))
    params_t = layout.params_to_torch(layer.parameters())
    case.prepare(layer)
    y_t = torch_forward(layer, params_t, x_t, **_kwargs_to_torch(kwargs))
    return y_t, x_t, params_t


def _forward(case: Case, layer: Layer, x: np.ndarray, kwargs: dict[str, Any]):
    case.prepare(layer)
    return layer.forward(x, **kwargs)


def check_forward(case: Case, dtype: str, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Output vs the torch mirror in `dtype`; output dtype preserved."""
    rng = rng or case_rng(case, 'forward', dtype)
    layer, x, kwargs = case.make(rng, DTYPES[dtype])
    y, _ = _forward(case, layer, x, kwargs)
    y_t, _, _ = torch_reference(case, layer, x, kwargs)
    context = f'{case.id} forward vs torch [{dtype}]'
    if y.dtype != DTYPES[dtype]:
        raise _fail('y', f'{context}: tensor y: expected dtype {dtype}, got {y.dtype}')
    expected = layout.to_numpy(y_t)
    tol = case.tol[dtype]
    assert_close('y', expected, y, rtol=tol.rtol, atol=tol.atol, context=context,
                 expected_label='torch', actual_label='nn')
    abs_err, rel_err = _max_errors(expected, y)
    return {'max_abs_err': abs_err, 'max_rel_err': rel_err}


def check_backward(case: Case, dtype: str, rng: np.random.Generator | None = None,
                   batch: slice | None = None, label: str = 'backward') -> dict[str, float]:
    """dx and every parameter gradient vs torch autograd, random upstream gradient."""
    rng = rng or case_rng(case, label, dtype)
    layer, x, kwargs = case.make(rng, DTYPES[dtype])
    if batch is not None:
        x = x[batch]
        kwargs = case.kwargs(rng, x)
    y, cache = _forward(case, layer, x, kwargs)
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    grads: dict[str, np.ndarray] = {}
    dx = layer.backward(x, cache, dy, grads)

    y_t, x_t, params_t = torch_reference(case, layer, x, kwargs)
    y_t.backward(layout.to_torch(dy))
    context = f'{case.id} {label} vs torch autograd [{dtype}]'
    tol = case.tol[dtype]
    expected: dict[str, np.ndarray] = {}
    actual: dict[str, np.ndarray] = {}
    if x_t.requires_grad:
        expected['dx'] = layout.to_numpy(x_t.grad) if x_t.grad is not None else np.zeros_like(x)
        actual['dx'] = dx
    for key, p in params_t.items():
        if key not in grads:
            raise _fail(key, f'{context}: tensor {key}: no gradient for {key!r} '
                             f'(gradients has {sorted(grads)})')
        expected[key] = layout.to_numpy(p.grad) if p.grad is not None else np.zeros(p.shape, p.dtype)
        actual[key] = grads[key]
    worst = {'max_abs_err': 0.0, 'max_rel_err': 0.0}
    scale = max((float(np.abs(want).max()) for want in expected.values() if want.size), default=0.0)
    for name, want in expected.items():
        got = actual[name]
        if not isinstance(got, np.ndarray):
            raise _fail(name, f'{context}: tensor {name}: expected a numpy array of shape {want.shape}, '
                              f'got {type(got).__name__} {np.shape(got)}')
        if got.dtype != DTYPES[dtype]:
            raise _fail(name, f'{context}: tensor {name}: expected dtype {dtype}, got '
                              f'{getattr(got, "dtype", type(got).__name__)}')
        assert_close(name, want, got, rtol=tol.rtol, atol=tol.atol, context=context,
                     expected_label='torch', actual_label='nn')
        abs_err, rel_err = _max_errors(want, got, scale)
        worst['max_abs_err'] = max(worst['max_abs_err'], abs_err)
        worst['max_rel_err'] = max(worst['max_rel_err'], rel_err)
    return worst


def check_batch_one(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """The backward check on a batch of one sample."""
    return check_backward(case, 'float64', rng or case_rng(case, 'batch_one'), batch=slice(0, 1),
                          label='backward at batch size 1')


def check_finite_differences(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """dx and every parameter gradient vs central differences (float64), several upstream gradients."""
    rng = rng or case_rng(case, 'finite_differences')
    layer, x, kwargs = case.make(rng, np.float64)
    # Tensors above 256 entries are checked by 16 random probes (tolerance scaled by the probes'
    # norms, which still catches a 0.1% error at these sizes: tests/test_gradcheck.py): entry by
    # entry, the attention and Block weights cost ~10,000 forwards (8 s) per case.
    reports = check_layer_battery(layer, x, forward_kwargs=kwargs, rng=rng, rtol=case.fd_tol.rtol, max_full=256,
                                  atol=case.fd_tol.atol, before_forward=case.before_forward,
                                  context=f'{case.id} finite differences')
    rows = [row for report in reports for row in report.checks]
    return {'max_abs_err': max((r.max_abs_err for r in rows), default=0.0),
            'max_rel_err': max((r.max_rel_err for r in rows), default=0.0),
            'kinks': sum(r.n_kinks for r in rows),
            'checked': sum(r.n_checked for r in rows)}


#: `check_gradcheck` builds full Jacobians up to this many entries of x, the parameters and y.
GRADCHECK_FULL_MAX = 512


def gradcheck_size(case: Case) -> int:
    """Entries of the differentiable input, every parameter and the output of a case."""
    layer, x, kwargs = case.make(np.random.default_rng(0), np.float64)
    y, _ = _forward(case, layer, x, kwargs)
    n_x = x.size if np.issubdtype(x.dtype, np.floating) else 0
    return int(n_x + sum(p.size for p in layer.parameters().values()) + np.size(y))


def check_gradcheck(case: Case, rng: np.random.Generator | None = None,
                    fast_mode: bool | None = None) -> dict[str, float]:
    """`torch.autograd.gradcheck` on the layer wrapped as an autograd Function (float64).

    Full Jacobians for cases up to GRADCHECK_FULL_MAX entries; above that (the attention
    and Block cases, whose full Jacobians took 1-3 s each) torch's fast mode, one random
    projection u^T J v of each Jacobian. Fast mode can miss a subtle bug the full check
    catches, so it is kept for the large cases, whose gradients the finite-difference and
    backward-vs-torch checks still verify entry by entry. `fast_mode` True/False forces it.
    """
    _require_torch(f'{case.id}: torch.autograd.gradcheck')
    rng = rng or case_rng(case, 'gradcheck')
    if fast_mode is None:
        fast_mode = gradcheck_size(case) > GRADCHECK_FULL_MAX
    layer, x, kwargs = case.make(rng, np.float64)
    fn, keys = as_autograd_function(layer, kwargs, case.before_forward)
    x_t = layout.to_torch(x, requires_grad=np.issubdtype(x.dtype, np.floating))
    params = layout.params_to_torch(layer.parameters())
    inputs = (x_t, *(params[k] for k in keys))
    context = f'{case.id} torch.autograd.gradcheck' + (' (fast mode)' if fast_mode else '')
    try:
        torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast_mode)
    except GradcheckError as err:      # raised by the adapter itself (a missing gradient)
        raise _fail(err.tensor, f'{context}: tensor {err.tensor}: {err}') from None
    except TorchGradcheckError as err:
        match = re.search(r'with respect to input (\d+)', str(err))
        if match:
            index = int(match.group(1))
            tensor = 'dx' if index == 0 else keys[index - 1]
        else:   # e.g. 'Backward is not reentrant': find the tensor ourselves
            tensor = _nondeterministic_tensor(case, layer, x, kwargs, rng) or 'unknown'
        # torch's verdict comes first; its dump of whole Jacobians can run to pages.
        head = '\n'.join(str(err).splitlines()[:3]).rstrip(',') if fast_mode else str(err)
        raise _fail(tensor, f'{context}: tensor {tensor}: {head}') from None
    return {'passed': True, 'fast_mode': fast_mode}


def _nondeterministic_tensor(case: Case, layer: Layer, x: np.ndarray, kwargs: dict[str, Any],
                             rng: np.random.Generator) -> str | None:
    """The first tensor (dx, then parameters) that two identical backward calls disagree on."""
    y, cache = _forward(case, layer, x, kwargs)
    dy = rng.standard_normal(y.shape)
    (dx1, g1), (dx2, g2) = [(layer.backward(x, cache, dy, g := {}), g) for _ in range(2)]
    if np.issubdtype(x.dtype, np.floating) and not np.array_equal(dx1, dx2):
        return 'dx'
    return next((k for k in g1 if not np.array_equal(g1[k], g2.get(k))), None)


# ---------------------------------------------------------------------------------- purity
def _freeze(obj: Any) -> None:
    """Marks every array inside obj (dicts, lists, tuples) read-only."""
    if isinstance(obj, np.ndarray):
        obj.setflags(write=False)
    elif isinstance(obj, dict):
        for v in obj.values():
            _freeze(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _freeze(v)


def _readonly(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.setflags(write=False)
    return array


def _guard(what: str, tensor: str, context: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ValueError as err:
        if 'read-only' in str(err):
            raise _fail(tensor, f'{context}: {what}') from err
        raise


def _snapshot(layer: Layer) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in layer.parameters().items()}


def check_purity(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Forward and backward never write into x, the cache, dy or the parameters;
    backward called twice gives bit-identical results."""
    rng = rng or case_rng(case, 'purity')
    layer, x, kwargs = case.make(rng, np.float64)
    context = f'{case.id} purity'
    x = _readonly(x)
    _freeze(kwargs)
    before = _snapshot(layer)
    y, cache = _guard('forward wrote into its input x', 'x', context, lambda: _forward(case, layer, x, kwargs))
    dy = rng.standard_normal(y.shape)
    results = []
    for attempt in range(2):
        cache_copy = copy.deepcopy(cache)
        dy_copy = dy.copy()
        if attempt == 0:
            # Writable cache and dy first, so a write is caught by comparison and named.
            grads: dict[str, np.ndarray] = {}
            dx = _guard('backward wrote into its input x', 'x', context,
                        lambda g=grads: layer.backward(x, cache, dy, g))
            for name, original, now in (('dy', dy_copy, dy),):
                if not np.array_equal(original, now):
                    raise _fail(name, f'{context}: backward wrote into the upstream gradient dy')
            if not _equal_tree(cache_copy, cache):
                raise _fail('cache', f'{context}: backward wrote into the cache')
        else:
            _freeze(cache)
            dy.setflags(write=False)
            grads = {}
            dx = _guard('backward wrote into the cache or dy (read-only arrays)', 'cache', context,
                        lambda g=grads: layer.backward(x, cache, dy, g))
        results.append((dx, grads))
    (dx1, g1), (dx2, g2) = results
    if np.issubdtype(x.dtype, np.floating) and not np.array_equal(dx1, dx2):
        raise _fail('dx', f'{context}: tensor dx: a second backward with the same arguments gave a different dx')
    for key in g1:
        if not np.array_equal(g1[key], g2.get(key)):
            raise _fail(key, f'{context}: tensor {key}: a second backward gave a different gradient')
    after = layer.parameters()
    for key, value in before.items():
        if not np.array_equal(value, after[key]):
            raise _fail(key, f'{context}: tensor {key}: forward/backward changed the parameter')
    return {}


def _equal_tree(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal_tree(u, v) for u, v in zip(a, b, strict=True))
    return True


def check_accumulation(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Parameter gradients are added to what `gradients` already holds, never assigned,
    and the arrays already there are not written."""
    rng = rng or case_rng(case, 'accumulation')
    layer, x, kwargs = case.make(rng, np.float64)
    y, cache = _forward(case, layer, x, kwargs)
    dy = rng.standard_normal(y.shape)
    fresh: dict[str, np.ndarray] = {}
    layer.backward(x, cache, dy, fresh)
    prior = {k: rng.standard_normal(v.shape) for k, v in layer.parameters().items()}
    held = {k: v.copy() for k, v in prior.items()}
    layer.backward(x, cache, dy, held)
    context = f'{case.id} accumulation'
    tol = case.tol['float64']
    for key in prior:
        if key not in fresh:
            raise _fail(key, f'{context}: tensor {key}: no gradient for {key!r}')
        assert_close(key, prior[key] + fresh[key], held[key], rtol=tol.rtol, atol=tol.atol,
                     context=f'{context} (prior + gradient expected: gradients must be added, not assigned)')
    return {}


def check_reentrancy(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Another forward between a forward and its backward changes nothing."""
    rng = rng or case_rng(case, 'reentrancy')
    layer, x1, kwargs = case.make(rng, np.float64)
    x2 = case.input(rng).astype(x1.dtype) if np.issubdtype(x1.dtype, np.floating) else case.input(rng)
    y1, c1 = _forward(case, layer, x1, kwargs)
    dy = rng.standard_normal(y1.shape)
    _forward(case, layer, x2, case.kwargs(rng, x2))
    g_interleaved: dict[str, np.ndarray] = {}
    dx_interleaved = layer.backward(x1, c1, dy, g_interleaved)
    y1b, c1b = _forward(case, layer, x1, kwargs)
    g_direct: dict[str, np.ndarray] = {}
    dx_direct = layer.backward(x1, c1b, dy, g_direct)
    context = f'{case.id} re-entrancy (a second forward before backward)'
    if np.issubdtype(x1.dtype, np.floating) and not np.array_equal(dx_interleaved, dx_direct):
        assert_close('dx', dx_direct, dx_interleaved, rtol=0, atol=0, context=context)
    for key, g in g_direct.items():
        if not np.array_equal(g, g_interleaved.get(key)):
            assert_close(key, g, g_interleaved[key], rtol=0, atol=0, context=context)
    return {}


def check_linearity(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """backward(a dy1 + b dy2) = a backward(dy1) + b backward(dy2) for dx and every gradient."""
    rng = rng or case_rng(case, 'linearity')
    layer, x, kwargs = case.make(rng, np.float64)
    y, cache = _forward(case, layer, x, kwargs)
    dy1, dy2 = rng.standard_normal(y.shape), rng.standard_normal(y.shape)
    a, b = 0.7, -1.9
    outs = []
    for dy in (dy1, dy2, a * dy1 + b * dy2):
        grads: dict[str, np.ndarray] = {}
        dx = layer.backward(x, cache, dy, grads)
        outs.append((dx, grads))
    (dx1, g1), (dx2, g2), (dx3, g3) = outs
    tol = case.tol['float64']
    context = f'{case.id} linearity in the upstream gradient'
    if np.issubdtype(x.dtype, np.floating):
        assert_close('dx', a * dx1 + b * dx2, dx3, rtol=tol.rtol, atol=tol.atol, context=context)
    for key in g3:
        assert_close(key, a * g1[key] + b * g2[key], g3[key], rtol=tol.rtol, atol=tol.atol, context=context)
    return {}


def check_batch_independence(case: Case, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Changing sample i (axis 0) leaves every other sample's output bit-identical, for every i.

    Each sample in turn is replaced by a new draw at twice the scale, so a coupling through a
    batch-wide statistic (a max, a mean) held by any one sample shows.
    """
    rng = rng or case_rng(case, 'batch_independence')
    layer, x, kwargs = case.make(rng, np.float64)
    if x.shape[0] < 2:
        raise _fail('x', f'{case.id} batch independence: expected an input batch of at least 2, got {x.shape}')
    y, _ = _forward(case, layer, x, kwargs)
    for i in range(x.shape[0]):
        x_changed = x.copy()
        fresh = case.input(rng)[i]
        x_changed[i] = 2 * fresh.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else fresh
        y_changed, _ = _forward(case, layer, x_changed, kwargs)
        others = [j for j in range(x.shape[0]) if j != i]
        if not np.array_equal(y[others], y_changed[others]):
            diff = np.abs(y[others] - y_changed[others])
            raise _fail('y', f'{case.id} batch independence: tensor y: changing sample {i} changed the output '
                             f'of other samples (max change {diff.max():.3g}); a layer that couples samples '
                             'must declare batch_independent=False')
    return {}


CHECKS: dict[str, Callable[..., dict[str, float]]] = {
    'forward': check_forward,
    'backward': check_backward,
    'finite_differences': check_finite_differences,
    'gradcheck': check_gradcheck,
    'purity': check_purity,
    'accumulation': check_accumulation,
    'reentrancy': check_reentrancy,
    'linearity': check_linearity,
    'batch_independence': check_batch_independence,
    'batch_one': check_batch_one,
}
#: Checks that take a dtype argument.
DTYPED = ('forward', 'backward')
