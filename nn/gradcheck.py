"""Finite-difference gradient checking for `nn.layer.Layer` implementations.

Users run this on their own layers (NumPy only, no torch)::

    from nn.gradcheck import check_layer, check_layer_battery
    report = check_layer(my_layer, x)      # raises GradcheckError on a wrong gradient
    print(report)

Method
------
A layer maps ``x`` (and its parameters theta) to ``y``. Pick an upstream gradient
``g_y`` with y's shape (random Gaussian by default; never all-ones, which hides
transposes and makes the true gradient of softmax/normalisation layers ~0) and
check the scalar function

    L(x, theta) = sum(g_y * layer.forward(x)[0])

whose gradient is exactly what ``layer.backward(x, cache, g_y, grads)`` returns
(dx, and ``grads[key]`` for every parameter). Everything runs on a float64 deep
copy of the layer, so the caller's layer and input are never touched and the
finite differences are accurate.

Each tensor (dx first, then every parameter) is checked in one of two modes:

* ``full``: tensor.size <= max_full. Every entry i is perturbed on its own and
  the central difference ``(L(v + eps e_i) - L(v - eps e_i)) / 2eps`` is compared
  with the analytic gradient entry by entry (`assert_close`).
* ``probes``: larger tensors. ``n_probes`` random directions u (Rademacher +-1 or
  Gaussian) give directional derivatives ``(L(v + eps u) - L(v - eps u)) / 2eps``
  that are compared with ``<grad, u>``.

Differences are computed as ``sum(g_y * (y - y0))`` rather than ``L - L0``, so
outputs a perturbation does not reach cancel exactly and the rounding noise
scales with the outputs that change. One set of forward calls serves several
upstream gradients at once (`check_layer_battery`). Tolerances are meant for an
upstream gradient of unit scale; since L is linear in it, atol is multiplied by
max(1, RMS(g_y)).

Kinks (ReLU at 0, max-pool ties, ...) make a finite difference wrong even for a
correct gradient. The idea (as in Chainer's ``detect_nondifferentiable``) is to
look at the function on a 5-point stencil ``v + k eps u, k = -2..2``: a smooth
function is fitted by a quadratic up to O(eps^3), a kink is not. Concretely:

1. The central second difference ``d = L(+1) - 2 L(0) + L(-1)`` bounds the
   error a kink inside the central stencil causes: for a piecewise-linear
   function the central difference is off by exactly ``|d| / 2eps``. Entries
   whose ``|d|`` is within rounding noise, or could not cause an error of a
   quarter of the tolerance, are accepted as they are (no extra evaluations).
2. For the remaining (suspect) entries ``L(+-2)`` are evaluated too and a
   quadratic is fitted by least squares. A smooth function with large curvature
   fits well (residual O(eps^3) << d); a kink leaves a residual of at least
   0.15 eps |slope jump| (>= 0.22 |d|). Such entries are skipped, counted and
   reported ("k of n skipped at kinks"), never silently passed; if more than
   half the entries of a tensor are kinks the check is meaningless and fails.

Failures raise `GradcheckError` (an AssertionError) naming the tensor ('dx',
'y' or the parameter key), the worst elements (index, finite-difference value,
analytic value, absolute and relative error), the tolerance, and a diagnosis
of recognisable patterns (a constant factor such as x2 or x1/N, a sign flip, a
transpose, a missing gradient, errors confined to one slice).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layer import Layer

__all__ = [
    'GradcheckError',
    'GradcheckReport',
    'TensorCheck',
    'assert_close',
    'check_layer',
    'check_layer_battery',
    'diagnose',
]

# Rounding noise of one evaluation of L - L(centre) is estimated as this many
# ulps of sum(|g_y| * (|y| + |y0|)) over the outputs that changed. Generous on
# purpose: a smooth function must never be flagged as a kink because of rounding.
_NOISE_ULPS = 1000.0
# A kink is examined only if the error it could cause in the central difference
# (|d| / 2eps, see the module docstring) reaches this fraction of the tolerance.
_KINK_SCREEN = 0.25
# A suspect entry is a kink if the residual of the quadratic fit is at least this
# fraction of |d|. Kinks inside the central stencil give >= 0.22, smooth
# functions O(eps |L'''| / |L''|), i.e. ~1e-6.
_KINK_RESIDUAL = 0.05
# Projector onto the residual of a least-squares quadratic fit on k = -2..2.
_STENCIL = np.arange(-2.0, 3.0)
_VANDERMONDE = np.stack([np.ones(5), _STENCIL, _STENCIL ** 2], axis=1)
_RESIDUAL_PROJECTOR = np.eye(5) - _VANDERMONDE @ np.linalg.pinv(_VANDERMONDE)
# Number of entries recomputed in full mode after a probe failure.
_FOLLOW_UP_ENTRIES = 8


class GradcheckError(AssertionError):
    """A gradient (or forward) check failed.

    Attributes:
        tensor: The tensor that is wrong: ``'dx'``, ``'y'`` (forward output or
            upstream gradient) or a parameter key such as ``'Dense/W'``.
        message: The full explanation (also ``str(error)``).
    """

    def __init__(self, *args: str, tensor: str | None = None) -> None:
        # Both GradcheckError(tensor, message) and GradcheckError(message) (then
        # set .tensor, or pass tensor=) are accepted.
        if len(args) == 2:
            tensor, message = args
        elif len(args) == 1:
            message = args[0]
        else:
            raise TypeError('GradcheckError expected (tensor, message) or (message)')
        super().__init__(message)
        self.tensor = '' if tensor is None else tensor
        self.message = message


# --------------------------------------------------------------------------- comparing

def _index_str(index: tuple[int, ...]) -> str:
    return '(' + ', '.join(str(int(i)) for i in index) + (',)' if len(index) == 1 else ')')


def _mismatch(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float):
    """Elementwise |actual - expected| > atol + rtol*|expected| (NaN always mismatches).

    Returns (bad mask, abs error, tolerance), all of expected's shape.
    """
    with np.errstate(invalid='ignore', over='ignore'):
        diff = np.abs(actual - expected)
        tol = atol + rtol * np.abs(expected)
        ok = diff <= tol
        # inf == inf of the same sign is a match (their difference is NaN).
        ok |= np.isinf(expected) & (expected == actual)
    return ~ok, diff, tol


def _rel_err(diff: np.ndarray, expected: np.ndarray) -> np.ndarray:
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(expected != 0, diff / np.abs(expected), np.inf)


def _format_mismatch(
    tensor: str,
    expected: np.ndarray,
    actual: np.ndarray,
    *,
    rtol: float,
    atol: float,
    context: str,
    expected_label: str,
    actual_label: str,
    skip: np.ndarray | None = None,
    diagnose_axes: bool = True,
    tol_note: str = '',
) -> str | None:
    """The failure message for two same-shape arrays, or None if they match.

    Entries where `skip` is True (kinks) are left out of the comparison.
    """
    bad, diff, tol = _mismatch(expected, actual, rtol, atol)
    if skip is not None:
        bad &= ~skip
    n_bad = int(bad.sum())
    if n_bad == 0:
        return None
    n = expected.size - (0 if skip is None else int(skip.sum()))
    # Worst first: NaN, then by how many tolerances the error is.
    with np.errstate(divide='ignore', invalid='ignore'):
        score = np.where(np.isnan(diff), np.inf, diff / tol)
    flat_bad = np.flatnonzero(bad)
    order = flat_bad[np.argsort(-score.ravel()[flat_bad], kind='stable')][:5]
    rel = _rel_err(diff, expected)
    lines = []
    head = f'{context}: ' if context else ''
    lines.append(f'{head}tensor {tensor!r} {tuple(expected.shape)}: '
                 f'Mismatched elements {n_bad}/{n} ({100.0 * n_bad / max(n, 1):.1f}%)')
    if skip is not None and skip.any():
        lines.append(f'  ({int(skip.sum())} of {expected.size} entries skipped at kinks)')
    lines.append(f'  worst elements (index: {expected_label}, {actual_label}, abs err, rel err):')
    for flat in order:
        index = np.unravel_index(flat, expected.shape) if expected.ndim else ()
        e = expected.ravel()[flat]
        a = actual.ravel()[flat]
        lines.append(f'    {_index_str(index)}: {e:.8g}, {a:.8g}, '
                     f'{diff.ravel()[flat]:.3g}, {rel.ravel()[flat]:.3g}')
    lines.append(f'  tolerance: rtol={rtol:g}, atol={atol:g} '
                 f'(|{actual_label} - {expected_label}| <= atol + rtol*|{expected_label}|)'
                 f'{tol_note}')
    keep = np.ones(expected.shape, bool) if skip is None else ~skip
    diagnosis = _diagnose(np.where(keep, expected, 0.0), np.where(keep, actual, 0.0),
                          rtol=rtol, atol=atol, axes=diagnose_axes)
    if diagnosis:
        lines.append(f'  diagnosis: {diagnosis}')
    return '\n'.join(lines)


def assert_close(
    tensor: str,
    expected: np.ndarray,
    actual: np.ndarray,
    *,
    rtol: float,
    atol: float,
    context: str = '',
    expected_label: str = 'expected',
    actual_label: str = 'actual',
) -> None:
    """Raises `GradcheckError` unless ``|actual - expected| <= atol + rtol*|expected|``.

    Args:
        tensor: Name of the compared tensor ('dx', 'y', a parameter key); stored
            in the error's ``tensor`` attribute.
        expected, actual: Arrays of the same shape (a shape mismatch fails).
            NaN never matches; inf matches only the same inf.
        rtol, atol: Relative (to |expected|) and absolute tolerance.
        context: Prefix naming where the check ran (case id, which check).
        expected_label, actual_label: How the two sides are called in the
            message (e.g. 'finite-difference', 'analytic').

    The message names the context, the tensor, 'Mismatched elements k/n', up to
    five worst elements (index, expected, actual, abs err, rel err), the
    tolerance and, when the pattern is recognisable, a `diagnose` result.
    """
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    head = f'{context}: ' if context else ''
    if expected.shape != actual.shape:
        hint = ''
        if expected.ndim >= 2 and actual.shape == expected.shape[:-2] + expected.shape[-2:][::-1]:
            hint = ' (the last two axes are swapped: a transpose?)'
        raise GradcheckError(tensor, f'{head}tensor {tensor!r}: {actual_label} has shape '
                                     f'{actual.shape}, {expected_label} has shape '
                                     f'{expected.shape}{hint}')
    message = _format_mismatch(tensor, expected.astype(np.float64), actual.astype(np.float64),
                               rtol=rtol, atol=atol, context=context,
                               expected_label=expected_label, actual_label=actual_label)
    if message is not None:
        raise GradcheckError(tensor, message)


# --------------------------------------------------------------------------- diagnosis

def _format_factor(c: float) -> str:
    """Fewest decimals (at least 3) that still show `c` is not 1: 1.001, 1.0001."""
    for digits in range(3, 13):
        text = f'{c:.{digits}f}'
        if float(text) != 1.0:
            return text
    return f'{c:.12f}'


def _describe_factor(c: float) -> str:
    if abs(c + 1.0) <= 1e-4:
        return 'sign flip: actual ~= -expected (scaled by -1)'
    n = round(c)
    if abs(n) >= 2 and abs(c - n) <= 1e-4 * abs(c):
        return f'scaled by {c:.3f} (x{n}): actual ~= {n} * expected'
    inv = 1.0 / c
    n = round(inv)
    if abs(n) >= 2 and abs(inv - n) <= 1e-4 * abs(inv):
        sign = '-' if n < 0 else ''
        return f'scaled by {c:.4g} (x{sign}1/{abs(n)}): actual ~= expected / {n}'
    return f'scaled by {_format_factor(c)}: actual ~= {_format_factor(c)} * expected'


def _diagnose(expected, actual, *, rtol: float, atol: float, axes: bool) -> str | None:
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.size == 0:
        return None
    parts = []
    bad_a = ~np.isfinite(a)
    bad_e = ~np.isfinite(e)
    if bad_e.any():
        parts.append(f'expected has {int(bad_e.sum())} NaN/inf elements')
    if bad_a.any():
        parts.append(f'actual has {int(bad_a.sum())} NaN/inf elements')
    if parts:
        return '; '.join(parts)
    norm_e = float(np.linalg.norm(e))
    norm_a = float(np.linalg.norm(a))
    err = a - e
    norm_err = float(np.linalg.norm(err))
    if norm_err == 0.0:
        return None
    if norm_e > 0 and norm_a <= 1e-6 * norm_e:
        return 'actual is all ~0: gradient missing, not propagated, or overwritten'
    if norm_a > 0 and norm_e <= 1e-6 * norm_a:
        return ('expected is all ~0 but actual is not: the true gradient vanishes here '
                '(e.g. the output is invariant to this tensor along the upstream gradient)')
    # A constant factor: least-squares c with actual ~= c * expected explains
    # (almost) all of the error. Needs at least two non-zero expected entries.
    if np.count_nonzero(np.abs(e) > 1e-12 * norm_e) >= 2:
        c = float(np.vdot(e, a) / np.vdot(e, e))
        if np.linalg.norm(a - c * e) <= 0.05 * norm_err:
            return _describe_factor(c)
    # A transpose of square last-two-dims (expected must not be symmetric).
    if e.ndim >= 2 and e.shape[-1] == e.shape[-2] >= 2:
        e_t = np.swapaxes(e, -1, -2)
        if (np.linalg.norm(e - e_t) > 0.05 * norm_e
                and np.linalg.norm(a - e_t) <= 0.05 * norm_err):
            return 'transposed: actual ~= expected with its last two axes swapped (expected.T)'
    bad, _, _ = _mismatch(e, a, rtol, atol)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return None
    if n_bad < e.size and np.all(np.abs(a[bad]) <= 1e-6 * max(float(np.abs(e).max()), 1e-300)):
        parts.append('actual is ~0 at every mismatched element (a missing contribution?)')
    if axes and e.ndim >= 1:
        if n_bad == 1 and e.size > 1:
            index = np.unravel_index(int(np.flatnonzero(bad)[0]), e.shape)
            parts.append(f'only element {_index_str(index)} is wrong')
        elif n_bad > 1:
            for axis in range(e.ndim):
                size = e.shape[axis]
                if size < 2:
                    continue
                other = tuple(i for i in range(e.ndim) if i != axis)
                hit = np.flatnonzero(bad.any(axis=other))
                if len(hit) == 1:
                    parts.append(f'errors only at index {int(hit[0])} of axis {axis} '
                                 f'(size {size})')
                elif len(hit) <= size // 2:
                    parts.append(f'errors only at indices {hit.tolist()} of axis {axis} '
                                 f'(size {size})')
    return '; '.join(parts) if parts else None


def diagnose(expected, actual, *, rtol: float = 1e-5, atol: float = 1e-7) -> str | None:
    """Names a recognisable pattern in how `actual` differs from `expected`.

    Recognised (first match wins for the global ones):
      * NaN/inf elements;
      * actual all ~0 (a missing gradient), or expected ~0 but actual not;
      * a constant factor actual ~= c*expected: 'sign flip' (c = -1),
        'scaled by 2.000 (x2)', 'scaled by 0.25 (x1/4)', 'scaled by 1.001';
      * a transpose of square last-two-dims;
      * otherwise, where the mismatches (``rtol``/``atol`` as in `assert_close`)
        are: a single element, or one slice along an axis ('errors only at
        index 3 of axis 1'), and whether actual is ~0 there.

    Args:
        expected, actual: Arrays of the same shape.
    Returns:
        A short description, or None when nothing matches.
    """
    return _diagnose(expected, actual, rtol=rtol, atol=atol, axes=True)


# --------------------------------------------------------------------------- reports

@dataclass
class TensorCheck:
    """One row of a `GradcheckReport`.

    Attributes:
        tensor: 'dx' or the parameter key.
        mode: 'full' (every entry of the gradient) or 'probes' (random directions).
        n_checked: Entries (full) or probes compared, kinks excluded.
        n_kinks: Entries/probes skipped because they sit on a kink.
        max_abs_err: Largest |analytic - finite difference| over checked entries/probes.
        max_rel_err: Largest abs err / max(|finite difference|, atol/rtol) (full
            mode) or abs err / (max(||g||, atol/rtol) ||u||) (probes): a relative
            error that does not blow up at entries ~0. A pass implies <= 2 rtol.
    """

    tensor: str
    mode: str
    n_checked: int
    n_kinks: int
    max_abs_err: float
    max_rel_err: float


@dataclass
class GradcheckReport:
    """What `check_layer` checked for one upstream gradient.

    Attributes:
        layer: repr of the checked layer.
        checks: One `TensorCheck` per tensor (dx first, then parameters).
        upstream: Name of the upstream gradient ('gaussian', 'one-hot', 'large',
            'given', or a caller-chosen name).
        informative: False when the true input gradient is ~0 for this upstream
            gradient, so a passing dx check proves nothing (see
            `check_layer_battery`).
        note: Why the upstream gradient was judged uninformative.
    """

    layer: str
    checks: list[TensorCheck]
    upstream: str
    informative: bool = True
    note: str = ''

    def __str__(self) -> str:
        lines = [f'gradcheck {self.layer} (upstream gradient: {self.upstream})']
        if not self.informative:
            lines.append(f'  REJECTED, not counted as a pass: {self.note}')
        if not self.checks:
            lines.append('  nothing checked')
            return '\n'.join(lines)
        width = max(len('tensor'), *(len(c.tensor) for c in self.checks))
        lines.append(f'  {"tensor":<{width}}  {"mode":<6}  {"checked":>7}  {"kinks":>5}  '
                     f'{"max abs err":>11}  {"max rel err":>11}')
        for c in self.checks:
            lines.append(f'  {c.tensor:<{width}}  {c.mode:<6}  {c.n_checked:>7}  '
                         f'{c.n_kinks:>5}  {c.max_abs_err:>11.3g}  {c.max_rel_err:>11.3g}')
        for c in self.checks:
            if c.n_kinks:
                unit = 'entries' if c.mode == 'full' else 'probes'
                lines.append(f'  {c.tensor}: {c.n_kinks} of {c.n_kinks + c.n_checked} '
                             f'{unit} skipped at kinks (not checked)')
        return '\n'.join(lines)


# --------------------------------------------------------------------------- engine

class _Problem:
    """The float64 layer, its input and the upstream gradients.

    Evaluations return changes of L relative to the centre, computed as
    ``upstream @ (y - y0)`` rather than ``L(y) - L(y0)``: outputs a perturbation
    does not reach cancel exactly, so the rounding noise of a finite difference
    scales with the outputs that change, not with all of sum(|g_y * y|).
    Several upstream gradients are checked in one pass (one forward serves all).
    """

    def __init__(self, layer, x, forward_kwargs, before_forward):
        self.layer = layer
        self.x = x
        self.forward_kwargs = forward_kwargs
        self.before_forward = before_forward
        self.base_params = layer.parameters()
        # Set by set_centre once y0 and the upstream gradients are known.
        self.upstreams = self.abs_upstreams = self.y0 = self.abs_y0 = None

    def set_centre(self, y0: np.ndarray, upstreams: np.ndarray) -> None:
        """y0: output at the unperturbed point; upstreams: (m, y0.size)."""
        self.y0 = y0.reshape(-1)
        self.abs_y0 = np.abs(self.y0)
        self.upstreams = upstreams
        self.abs_upstreams = np.abs(upstreams)

    def forward(self, x=None):
        if self.before_forward is not None:
            self.before_forward(self.layer)
        return self.layer.forward(self.x if x is None else x, **self.forward_kwargs)

    def deltas(self, x=None) -> tuple[np.ndarray, np.ndarray]:
        """L_j(current) - L_j(centre) for every upstream gradient j, shape (m,), and
        sum(|g_y_j| * (|y| + |y0|)) over the outputs that changed (the scale of its
        rounding error), shape (m,)."""
        y = np.asarray(self.forward(x)[0]).reshape(-1)
        if y.shape != self.y0.shape:
            raise GradcheckError('y', f'forward output changed size from {self.y0.size} to '
                                      f'{y.size} under a small perturbation')
        diff = y - self.y0
        changed = diff != 0
        return (self.upstreams @ diff,
                self.abs_upstreams @ np.where(changed, self.abs_y0 + np.abs(y), 0.0))

    def setter(self, tensor: str) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """A function evaluating `deltas` with `tensor` replaced by a value."""
        if tensor == 'dx':
            return self.deltas

        owners = self._plain_owners(tensor)
        if owners is not None:
            def evaluate(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                # Direct write into every layer holding the key (a shared layer
                # appears once per use); restored by `restore` after the loop.
                for owner in owners:
                    owner._parameters[tensor] = value
                return self.deltas()
            return evaluate

        def evaluate(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # A layer overrides update_parameters (it may derive state from its
            # parameters): go through it, at the cost of revalidating every key.
            self.layer.update_parameters({**self.base_params, tensor: value})
            return self.deltas()
        return evaluate

    def _plain_owners(self, key: str) -> list | None:
        """The layers storing `key` in ``_parameters``, or None when writing there
        directly would bypass a layer's own update_parameters (which then must be
        used). Direct writes save revalidating every key per evaluation, about a
        third of the run time for a small MLP."""
        owners = []
        for layer in self.layer.layers():
            cls = type(layer)
            if (any(getattr(cls, name, None) is not getattr(Layer, name, None)
                    for name in ('update_parameters', 'validated_updates'))
                    or not isinstance(getattr(layer, '_parameters', None), dict)):
                return None
            if key in layer._parameters:
                owners.append(layer)
        return owners or None

    def restore(self) -> None:
        self.layer.update_parameters(self.base_params)


@dataclass
class _TensorResult:
    check: TensorCheck
    fd_norm: float  # ||finite-difference gradient|| (probes: RMS of directional derivatives)
    error: GradcheckError | None = None


@dataclass
class _Stencil:
    """L - L(centre) on the stencil v + k eps u_j, k = -2..2: F[j_upstream, j_direction, k + 2]."""

    F: np.ndarray
    kinks: np.ndarray  # (m, n_dirs) bool
    fd: np.ndarray     # (m, n_dirs) central differences


def _run_stencil(evaluate, point, m, n_dirs, eps, steps, tol_fn, detect_kinks):
    """Evaluates the central stencil, then screens and classifies kinks.

    Args:
        evaluate: value -> (L - L(centre), rounding scale), each (m,) (`_Problem.deltas`).
        point: (j, k) -> the tensor value at v + k eps u_j.
        m: Number of upstream gradients.
        n_dirs: Number of directions (entries or probes).
        steps: (n_dirs,) realised distance between the +1 and -1 points / eps.
        tol_fn: fd (m, n_dirs) -> tolerance of each directional derivative.
    """
    F = np.full((m, n_dirs, 5), np.nan)
    F[:, :, 2] = 0.0
    scale = np.zeros((m, n_dirs))
    for j in range(n_dirs):
        for k in (-1, 1):
            F[:, j, 2 + k], sc = evaluate(point(j, k))
            scale[:, j] = np.maximum(scale[:, j], sc)
    fd = (F[:, :, 3] - F[:, :, 1]) / (steps[None, :] * eps)
    kinks = np.zeros((m, n_dirs), bool)
    if detect_kinks:
        second = F[:, :, 3] - 2.0 * F[:, :, 2] + F[:, :, 1]
        noise = _NOISE_ULPS * np.finfo(np.float64).eps * scale
        # |second| / 2eps is what a kink inside [-eps, eps] can do to fd.
        with np.errstate(invalid='ignore'):
            suspect = np.abs(second) > np.maximum(noise, 2.0 * eps * _KINK_SCREEN * tol_fn(fd))
        cols = np.flatnonzero(suspect.any(axis=0))
        for j in cols:
            for k in (-2, 2):
                F[:, j, 2 + k], sc = evaluate(point(j, k))
                noise[:, j] = np.maximum(noise[:, j], _NOISE_ULPS * np.finfo(np.float64).eps * sc)
        if len(cols):
            residual = np.linalg.norm(F[:, cols, :] @ _RESIDUAL_PROJECTOR.T, axis=-1)
            kinks[:, cols] = suspect[:, cols] & (
                residual > np.maximum(noise[:, cols], _KINK_RESIDUAL * np.abs(second[:, cols])))
    return _Stencil(F, kinks, fd)


def _atol_note(atol: float, atol_base: float) -> str:
    if atol == atol_base:
        return ''
    return (f'; atol = {atol_base:g} x {atol / atol_base:.3g}, the RMS of the upstream '
            f'gradient (errors scale with it)')


def _too_many_kinks(tensor, n_kinks, n, where, unit='entries'):
    return GradcheckError(
        tensor, f'{where}: {n_kinks} of {n} {unit} of {tensor!r} sit on kinks (the function '
                f'is not differentiable there); more than half, so the check would be '
                f'meaningless. Move the input/parameters away from the kinks.')


def _check_full(problem, tensor, base, grads, eps, rtol, atol, atol_base,
                detect_kinks, contexts):
    """Full mode: every entry of `tensor` against the analytic gradients (m, *shape).

    `atol` holds one absolute tolerance per upstream gradient (see `_check`).
    """
    evaluate = problem.setter(tensor)
    flat = base.reshape(-1)
    n = flat.size

    def point(j, k):
        value = base.copy()
        value.reshape(-1)[j] = flat[j] + k * eps
        return value
    steps = ((flat + eps) - (flat - eps)) / eps  # the step actually taken, ~2
    stencil = _run_stencil(evaluate, point, len(grads), n, eps, steps,
                           lambda fd: atol[:, None] + rtol * np.abs(fd), detect_kinks)
    results = []
    for j_up, context in enumerate(contexts):
        a_j = float(atol[j_up])
        fd = stencil.fd[j_up].reshape(base.shape)
        kink = stencil.kinks[j_up].reshape(base.shape)
        g = grads[j_up]
        n_kinks = int(kink.sum())
        checked = ~kink
        diff = np.abs(g - fd)[checked]
        # Relative to max(|fd|, atol/rtol): a pass implies max_rel_err <= 2 rtol.
        ref = np.maximum(np.abs(fd)[checked], a_j / rtol if rtol > 0 else 0.0)
        with np.errstate(divide='ignore', invalid='ignore'):
            rel = np.where(ref > 0, diff / ref, np.where(diff > 0, np.inf, 0.0))
        check = TensorCheck(
            tensor=tensor, mode='full', n_checked=int(checked.sum()), n_kinks=n_kinks,
            max_abs_err=float(diff.max()) if diff.size else 0.0,
            max_rel_err=float(rel.max()) if rel.size else 0.0)
        fd_norm = float(np.linalg.norm(fd[checked]))
        error = None
        if n_kinks * 2 > n:
            error = _too_many_kinks(tensor, n_kinks, n, context)
        else:
            message = _format_mismatch(
                tensor, fd, g, rtol=rtol, atol=a_j, context=f'{context}, {tensor} full mode',
                expected_label='finite-difference', actual_label='analytic',
                skip=kink if n_kinks else None, tol_note=_atol_note(a_j, atol_base))
            if message is not None:
                error = GradcheckError(tensor, message)
        results.append(_TensorResult(check, fd_norm, error))
    return results


def _check_probes(problem, tensor, base, grads, eps, rtol, atol, atol_base,
                  n_probes, probe, rng, detect_kinks, contexts):
    """Probe mode: directional derivatives along random directions u."""
    evaluate = problem.setter(tensor)
    if probe == 'rademacher':
        U = rng.choice(np.array([-1.0, 1.0]), size=(n_probes,) + base.shape)
    elif probe == 'gaussian':
        U = rng.standard_normal((n_probes,) + base.shape)
    else:
        raise ValueError(f"check_layer: probe expected 'rademacher' or 'gaussian', got {probe!r}")
    u_norm = np.linalg.norm(U.reshape(n_probes, -1), axis=1)  # (P,)

    def point(j, k):
        return base + (k * eps) * U[j]

    def tol_fd(fd):
        # Kink screening uses finite differences only: RMS(fd) estimates ||g||.
        g_norm = np.sqrt(np.mean(fd ** 2, axis=1, keepdims=True))
        return atol[:, None] * u_norm[None, :] + rtol * g_norm * u_norm[None, :]
    stencil = _run_stencil(evaluate, point, len(grads), n_probes, eps,
                           np.full(n_probes, 2.0), tol_fd, detect_kinks)
    results = []
    for j_up, context in enumerate(contexts):
        a_j = float(atol[j_up])
        g = grads[j_up]
        fd = stencil.fd[j_up]
        kink = stencil.kinks[j_up]
        an = U.reshape(n_probes, -1) @ g.reshape(-1)
        g_norm = float(np.linalg.norm(g))
        # Tolerance of probe p: atol*||u|| + rtol*||g||*||u|| (Cauchy-Schwarz bound
        # of |<error, u>|). Deliberately NOT scaled by sum(u)*sum(v): with
        # Rademacher u those sums are O(sqrt(n)) and random-signed, and such a
        # tolerance let wrong gradients pass in PyTorch's fast mode.
        tol = a_j * u_norm + rtol * g_norm * u_norm
        with np.errstate(invalid='ignore'):
            err = np.abs(fd - an)
            bad = ~(err <= tol) & ~kink
        checked = ~kink
        n_kinks = int(kink.sum())
        # Relative to max(||g||, atol/rtol)*||u||: a pass implies max_rel_err <= 2 rtol.
        scale = max(g_norm, a_j / rtol if rtol > 0 else 0.0) * u_norm
        with np.errstate(divide='ignore', invalid='ignore'):
            rel = np.where(scale > 0, err / scale, np.where(err > 0, np.inf, 0.0))
        check = TensorCheck(
            tensor=tensor, mode='probes', n_checked=int(checked.sum()), n_kinks=n_kinks,
            max_abs_err=float(err[checked].max()) if checked.any() else 0.0,
            max_rel_err=float(rel[checked].max()) if checked.any() else 0.0)
        fd_norm = float(np.sqrt(np.mean(fd[checked] ** 2))) if checked.any() else 0.0
        error = None
        where = f'{context}, {tensor} probe mode'
        if n_kinks * 2 > n_probes:
            error = _too_many_kinks(tensor, n_kinks, n_probes, where, 'probes')
        elif bad.any():
            error = GradcheckError(tensor, _probe_message(
                problem, tensor, base, g, j_up, fd, an, err, tol, bad, kink, eps, rtol, a_j,
                where, _atol_note(a_j, atol_base)))
        results.append(_TensorResult(check, fd_norm, error))
    return results


def _probe_message(problem, tensor, base, g, j_up, fd, an, err, tol, bad, kink, eps, rtol, atol,
                   where, tol_note=''):
    """Failure message of probe mode, with a full-mode follow-up on a few entries."""
    n = len(fd)
    lines = [f'{where}: tensor {tensor!r} {tuple(base.shape)}: directional derivatives '
             f'along random probes u disagree: Mismatched probes {int(bad.sum())}/'
             f'{int((~kink).sum())}']
    if kink.any():
        lines.append(f'  ({int(kink.sum())} of {n} probes skipped at kinks)')
    lines.append('  worst probes (probe: finite-difference, analytic <g, u>, abs err, tolerance):')
    with np.errstate(divide='ignore', invalid='ignore'):
        score = np.where(np.isnan(err), np.inf, err / tol)
    for p in np.flatnonzero(bad)[np.argsort(-score[bad], kind='stable')][:5]:
        lines.append(f'    probe {int(p)}: {fd[p]:.8g}, {an[p]:.8g}, {err[p]:.3g}, {tol[p]:.3g}')
    lines.append(f'  tolerance per probe: atol*||u|| + rtol*||g||*||u|| with rtol={rtol:g}, '
                 f'atol={atol:g}{tol_note}')
    diagnosis = _diagnose(fd[~kink], an[~kink], rtol=rtol, atol=atol, axes=False)
    if diagnosis:
        lines.append(f'  diagnosis: {diagnosis}')
    follow = _follow_up(problem, tensor, base, g, j_up, eps, rtol, atol)
    if follow:
        lines.append(follow)
    return '\n'.join(lines)


def _follow_up(problem, tensor, base, g, j_up, eps, rtol, atol) -> str:
    """Central differences at the entries with the largest analytic gradient.

    Probes say *that* a gradient is wrong; a few entries say *where*.
    `j_up` selects the upstream gradient `g` belongs to.
    """
    flat_g = g.reshape(-1)
    if not np.all(np.isfinite(flat_g)):
        return ''
    k = min(_FOLLOW_UP_ENTRIES, flat_g.size)
    entries = np.argsort(-np.abs(flat_g), kind='stable')[:k]
    evaluate = problem.setter(tensor)
    flat = base.reshape(-1)
    fd = np.empty(k)
    try:
        for i, entry in enumerate(entries):
            plus = base.copy()
            plus.reshape(-1)[entry] = flat[entry] + eps
            minus = base.copy()
            minus.reshape(-1)[entry] = flat[entry] - eps
            step = plus.reshape(-1)[entry] - minus.reshape(-1)[entry]
            fd[i] = (evaluate(plus)[0][j_up] - evaluate(minus)[0][j_up]) / step
    finally:
        if tensor != 'dx':
            problem.restore()
    an = flat_g[entries]
    bad, diff, _ = _mismatch(fd, an, rtol, atol)
    rel = _rel_err(diff, fd)
    lines = [f'  follow-up, full mode at the {k} entries with the largest analytic gradient '
             f'(index: finite-difference, analytic, abs err, rel err), '
             f'{int(bad.sum())}/{k} mismatched:']
    for i, entry in enumerate(entries):
        index = np.unravel_index(int(entry), base.shape) if base.ndim else ()
        mark = '  <-' if bad[i] else ''
        lines.append(f'    {_index_str(index)}: {fd[i]:.8g}, {an[i]:.8g}, {diff[i]:.3g}, '
                     f'{rel[i]:.3g}{mark}')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- public checks

def _make_upstream(kind, shape, rng) -> tuple[str, np.ndarray]:
    """Builds a named upstream gradient of y's shape."""
    if isinstance(kind, tuple):
        name, value = kind
        return str(name), np.array(value, dtype=np.float64)
    if isinstance(kind, np.ndarray):
        return 'given', np.array(kind, dtype=np.float64)
    if kind == 'gaussian':
        return kind, rng.standard_normal(shape)
    if kind == 'large':
        return kind, rng.standard_normal(shape) * 1e3
    if kind == 'one-hot':
        # Sparse: one random entry, a random value away from 0.
        value = np.zeros(shape)
        size = int(np.prod(shape))
        if size:
            value.reshape(-1)[rng.integers(size)] = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
        return kind, value
    raise ValueError(f"gradcheck: upstream expected 'gaussian', 'one-hot', 'large', an array or "
                     f"a (name, array) pair, got {kind!r}")


def _check(layer, x, upstream_kinds: Sequence, *, forward_kwargs, rng, eps, rtol, atol,
           max_full, n_probes, probe, check_input, check_params, before_forward,
           detect_kinks, context) -> list[GradcheckReport]:
    """The engine behind `check_layer` and `check_layer_battery` (one pass, m upstreams)."""
    if probe not in ('rademacher', 'gaussian'):
        raise ValueError(f"check_layer: probe expected 'rademacher' or 'gaussian', got {probe!r}")
    rng = np.random.default_rng(0 if rng is None else rng)
    forward_kwargs = dict(forward_kwargs or {})
    layer64 = copy.deepcopy(layer).astype(np.float64)
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        x = np.array(x, dtype=np.float64, copy=True)
    else:
        # Integer input (token indices): not differentiable, only parameters are checked.
        x = np.array(x, copy=True)
        check_input = False
    name = repr(layer)
    where = f'{context}: {name}' if context else name

    # Forward at the centre, twice: a layer that draws randomness without
    # `before_forward` resetting it would make every finite difference garbage.
    problem = _Problem(layer64, x, forward_kwargs, before_forward)
    y0 = problem.forward()[0]
    if not isinstance(y0, np.ndarray) or not np.issubdtype(y0.dtype, np.floating):
        raise GradcheckError('y', f'{where}: forward expected to return a floating numpy array '
                                  f'as y, got {type(y0).__name__} {getattr(y0, "dtype", "")}')
    if y0.dtype != np.float64:
        raise GradcheckError('y', f'{where}: forward of a float64 layer on a float64 input '
                                  f'returned {y0.dtype}; expected float64 (no silent casts)')
    y0 = y0.copy()
    y1 = np.asarray(problem.forward()[0])
    if y1.shape != y0.shape or not np.array_equal(y0, y1, equal_nan=True):
        raise GradcheckError('y', f'{where}: two forward calls on the same input differ; the '
                                  f'layer is stochastic: pass before_forward to reset its RNG '
                                  f'(e.g. a Dropout seed) so every forward draws the same mask')

    named = [_make_upstream(kind, y0.shape, rng) for kind in upstream_kinds]
    for up_name, up in named:
        if up.shape != y0.shape:
            raise GradcheckError('y', f'{where}: upstream gradient {up_name!r} has shape '
                                      f'{up.shape}, expected y\'s shape {y0.shape}')
    contexts = [f'{where}, upstream {up_name!r}' for up_name, _ in named]
    problem.set_centre(y0, np.stack([up for _, up in named]).reshape(len(named), -1))

    # Analytic gradients, one backward per upstream gradient, each at a fresh
    # forward (so a layer's cache is exactly what it would be in training).
    params = layer64.parameters() if check_params else {}
    dxs, pgrads = [], []
    for (_, up), ctx in zip(named, contexts, strict=True):
        y, cache = problem.forward()
        grads: dict[str, np.ndarray] = {}
        dx = layer64.backward(x.copy(), cache, up.copy(), grads)
        if check_input:
            if not isinstance(dx, np.ndarray):
                raise GradcheckError('dx', f'{ctx}: backward returned {type(dx).__name__}, '
                                           f'expected dx of shape {x.shape}')
            if dx.shape != x.shape or dx.dtype != x.dtype:
                raise GradcheckError('dx', f'{ctx}: tensor \'dx\' has shape {dx.shape} dtype '
                                           f'{dx.dtype}, expected x\'s shape {x.shape} dtype '
                                           f'{x.dtype}')
            dxs.append(np.array(dx, dtype=np.float64))
        for key, value in params.items():
            if key not in grads:
                raise GradcheckError(key, f'{ctx}: no gradient for {key!r}: backward did not '
                                          f'add it to gradients (keys written: {sorted(grads)})')
            grad = grads[key]
            if (not isinstance(grad, np.ndarray) or grad.shape != value.shape
                    or grad.dtype != value.dtype):
                raise GradcheckError(key, f'{ctx}: gradient of {key!r} has shape '
                                          f'{getattr(grad, "shape", None)} dtype '
                                          f'{getattr(grad, "dtype", type(grad).__name__)}, '
                                          f'expected the parameter\'s shape {value.shape} '
                                          f'dtype {value.dtype}')
        pgrads.append({key: np.array(grads[key]) for key in params})

    # Tolerances are meant for an upstream gradient of unit scale. L is linear in
    # it, so every gradient and every absolute error (finite-difference rounding
    # noise included) scales with it: scale atol by max(1, RMS(upstream)). The
    # 'large' upstream (x1e3) would otherwise fail correct layers on rounding noise.
    atols = atol * np.maximum(1.0, np.sqrt(np.mean(problem.upstreams ** 2, axis=1)))

    tensors = []
    if check_input and x.size:
        tensors.append(('dx', x, np.stack(dxs)))
    for key, value in params.items():
        if value.size:
            tensors.append((key, value, np.stack([p[key] for p in pgrads])))

    per_upstream: list[list[_TensorResult]] = [[] for _ in named]
    for tensor, base, grads in tensors:
        try:
            if base.size <= max_full:
                results = _check_full(problem, tensor, base, grads, eps, rtol, atols,
                                      atol, detect_kinks, contexts)
            else:
                # Probes are drawn once per tensor and shared by all upstreams.
                results = _check_probes(problem, tensor, base, grads, eps, rtol,
                                        atols, atol, n_probes, probe, rng, detect_kinks,
                                        contexts)
        finally:
            if tensor != 'dx':
                problem.restore()
        for j_up, result in enumerate(results):
            per_upstream[j_up].append(result)

    reports = []
    for (up_name, up), results in zip(named, per_upstream, strict=True):
        for result in results:
            if result.error is not None:
                raise result.error
        report = GradcheckReport(layer=name, checks=[r.check for r in results], upstream=up_name)
        if check_input and x.size:
            fd_norm = results[0].fd_norm
            threshold = 1e-8 * float(np.linalg.norm(up)) * math.sqrt(x.size)
            if fd_norm < threshold:
                report.informative = False
                report.note = (f'the true input gradient is ~0 for this upstream gradient '
                               f'(||finite-difference dx|| = {fd_norm:.3g} < {threshold:.3g}), '
                               f'so the dx check proves nothing')
        reports.append(report)
    return reports


def check_layer(
    layer,
    x,
    *,
    forward_kwargs: dict[str, Any] | None = None,
    upstream: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    max_full: int = 2000,
    n_probes: int = 16,
    probe: str = 'rademacher',
    check_input: bool = True,
    check_params: bool = True,
    before_forward: Callable[[Any], None] | None = None,
    detect_kinks: bool = True,
    context: str = '',
) -> GradcheckReport:
    """Checks a layer's backward (dx and every parameter gradient) by finite differences.

    Works on ``copy.deepcopy(layer).astype(float64)`` and a float64 copy of `x`;
    the caller's layer and input are never modified.

    Args:
        layer: An `nn.layer.Layer`.
        x: Input. Floating inputs are cast to float64; integer inputs (token
            indices) stay as they are and only parameters are checked.
        forward_kwargs: Keyword arguments of every forward call (e.g. a mask).
        upstream: dL/dy of y's shape; default a Gaussian drawn from `rng`.
        rng: Generator or seed for the upstream gradient and probes
            (default ``np.random.default_rng(0)``).
        eps: Finite-difference step (central differences).
        rtol, atol: Tolerance. Full mode: ``|analytic - fd| <= atol + rtol*|fd|``
            per entry. Probe mode: ``<= atol*||u|| + rtol*||g||*||u||`` per probe.
        max_full: Tensors with at most this many entries are checked entry by
            entry; larger ones with `n_probes` random directions.
        probe: 'rademacher' (+-1 entries) or 'gaussian' probe directions.
        check_input, check_params: Which gradients to check.
        before_forward: Called with the float64 layer before every forward
            (e.g. to reseed Dropout so every call draws the same mask).
        detect_kinks: Skip (and count) entries where L is not differentiable.
        context: Prefix of every failure message (e.g. the test case id).

    Returns:
        A `GradcheckReport` (``informative`` is False when the true dx is ~0
        for this upstream gradient).

    Raises:
        GradcheckError: A gradient is wrong, missing, or has the wrong shape or
            dtype; the forward is not deterministic; or more than half of a
            tensor's entries sit on kinks.
    """
    kind = 'gaussian' if upstream is None else ('given', upstream)
    return _check(layer, x, [kind], forward_kwargs=forward_kwargs, rng=rng, eps=eps, rtol=rtol,
                  atol=atol, max_full=max_full, n_probes=n_probes, probe=probe,
                  check_input=check_input, check_params=check_params,
                  before_forward=before_forward, detect_kinks=detect_kinks, context=context)[0]


def check_layer_battery(layer, x, *, upstreams: Sequence = ('gaussian', 'one-hot', 'large'),
                        **kwargs) -> list[GradcheckReport]:
    """`check_layer` with several upstream gradients, sharing one set of forward calls.

    The default upstream gradients are 'gaussian', 'one-hot' (a single random
    entry set to a random value, so sparse) and 'large' (gaussian * 1e3).

    An upstream gradient whose true input gradient is ~0 (finite-difference
    ||dx|| < 1e-8 * ||upstream|| * sqrt(x.size)) cannot show a wrong dx: its
    report is marked ``informative=False`` (rejected, not counted as a pass). If
    every upstream gradient is uninformative for a differentiable input, the
    battery fails.

    Args:
        layer, x: As in `check_layer`.
        upstreams: Names ('gaussian', 'one-hot', 'large') and/or
            ``(name, array)`` pairs of y's shape.
        **kwargs: Any other `check_layer` keyword except `upstream`.

    Returns:
        One `GradcheckReport` per upstream gradient, in order.
    """
    if 'upstream' in kwargs:
        raise TypeError('check_layer_battery: pass upstream gradients as upstreams=[(name, array)]')
    options = dict(forward_kwargs=None, rng=None, eps=1e-6, rtol=1e-5, atol=1e-7, max_full=2000,
                   n_probes=16, probe='rademacher', check_input=True, check_params=True,
                   before_forward=None, detect_kinks=True, context='')
    unknown = set(kwargs) - set(options)
    if unknown:
        raise TypeError(f'check_layer_battery: unexpected keyword arguments {sorted(unknown)}')
    options.update(kwargs)
    reports = _check(layer, x, list(upstreams), **options)
    if reports and all(not r.informative for r in reports):
        where = f'{options["context"]}: {reports[0].layer}' if options['context'] \
            else reports[0].layer
        raise GradcheckError('dx', f'{where}: every upstream gradient '
                                   f'({", ".join(r.upstream for r in reports)}) gives a true '
                                   f'input gradient of ~0, so dx was never really checked:\n'
                                   + '\n'.join(f'  {r.upstream}: {r.note}' for r in reports))
    return reports
