"""Deliberately broken layers: the bugs the harness (reference.checks) must flag.

Each class below is a small subclass of a real `nn` layer that reproduces exactly
one bug, and says in its docstring which bug it is and why a weaker test misses
it. Where it can, the subclass runs the real code and damages one result (a
parameter gradient scaled, a key dropped); where the bug sits inside a formula,
the backward is rewritten with that one line wrong.

`BROKEN` lists them with a case (random parameters, odd non-square inputs), the
checks expected to fail on it and the tensor each failure must name. Every entry
also carries the same case built from the real layer (same rng draws), which
must pass those checks: that is what shows the breakage, not the case, is
caught. tests/test_selftest.py runs them.

The first four are the original library's real bugs (see DESIGN.md, "Why this
exists"); the rest are the usual ways a hand-written backward goes wrong.

Check names are those of `reference.checks.CHECKS`; the ones that take a dtype
are written ``'backward[float32]'``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import special

import nn
from nn.layer import Cache, Layer, Parameters
from reference.registry import Case, away_from_zero, normal, randomize

try:  # the torch mirror of LossAsLayer; the torch-free checks run without it
    import torch.nn.functional as F

    from reference.mirrors import mirror
except ImportError:
    F = None
    mirror = None


def _add_into(gradients: Parameters, own: Parameters) -> None:
    """Adds gradients computed into a fresh dict into `gradients` (as `Layer.accumulate` does)."""
    for key, value in own.items():
        gradients[key] = gradients[key] + value if key in gradients else value


# ============================================================ the original library's bugs

class SoftmaxJacobianIndexBug(nn.Softmax):
    """The original's Softmax backward: its Jacobian uses s_i where s_j belongs.

    The true Jacobian is ``J[i, j] = dy_i/dx_j = s_i (delta_ij - s_j)``, so
    ``dx_i = sum_j J[i, j] dy_j = s_i dy_i - s_i sum_j s_j dy_j``. The original
    indexed the outer-product term wrongly; the form reproduced here is
    ``s_i s_i`` for ``s_i s_j`` (``J'[i, j] = s_i (delta_ij - s_i)``), which
    gives ``dx_i = s_i dy_i - s_i^2 sum_j dy_j``, written without the Jacobian.

    Missed because its tests fed all-ones inputs: every s_i is then 1/n, s_i and
    s_j are the same number, and the wrong index gives the right answer (with an
    all-ones upstream gradient both are exactly 0, too).
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        s = cache['y']
        dy = backwards_gradient
        return s * dy - s * s * dy.sum(axis=self.dim, keepdims=True)   # BUG: s_i s_i for s_i s_j


def _xhat(layer: nn.LayerNorm, x: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray]:
    """(xhat [N, D], rstd [N, 1]) rebuilt from LayerNorm's cache (it keeps only mean and rstd)."""
    rstd = cache['rstd'][:, None]
    return (x.reshape(-1, layer.size) - cache['mean'][:, None]) * rstd, rstd


class LayerNormScaleOneBug(nn.LayerNorm):
    """The original's LayerNorm backward: dx is right only when scale is 1.

    The normalisation backward must start from ``g = dy * scale``; the original
    used dy itself: ``dx = rstd (dy - mean(dy) - xhat mean(dy xhat))``. dscale
    and dshift (the real code's) are right.

    Missed because its tests left scale at its initial value, ones, where
    ``dy * scale == dy``.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        super().backward_impl(x, cache, backwards_gradient, gradients)   # dscale, dshift: right
        xhat, rstd = _xhat(self, x, cache)
        g = backwards_gradient.reshape(-1, self.size)                    # BUG: not multiplied by scale
        dx = g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True)
        return (dx * rstd).reshape(x.shape)


class AttentionMaskPolarityBug(nn.MaskedSelfAttention):
    """The original's attention backward: the score gradient is masked with the wrong polarity.

    The mask is True = blocked. The softmax backward gives the score gradient
    ``dS = P * (dP - rowsum(dP * P))``, which is zero at blocked keys already
    (P is 0 there); the original then multiplied it by the mask where ``~mask``
    belongs, keeping only the (zero) blocked entries. So dS = 0: no gradient
    reaches q and k (Wq, bq, Wk, bk get zeros, dx lacks the q/k paths), while v
    and the output projection are right.

    The backward is written out here (forward is the real one; the mask is kept
    in the cache for the backward); `polarity_bug = False` gives the correct
    backward, which tests/test_selftest.py checks too, so the one line marked
    BUG is the only difference.

    Missed because its tests fed all-ones inputs: all keys and values are then
    equal, every score row is constant, and the true dS is exactly 0 too.
    """

    polarity_bug = True

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None):
        y, cache = super().forward(x, mask=mask)
        return y, {**cache, 'selftest_mask': mask}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        B, T, C = x.shape
        H, D = self.n_heads, self.head_dim
        mask = cache['selftest_mask']

        def heads(t):                                   # [B, T, C] -> [B, H, T, D]
            return t.reshape(B, T, H, D).transpose(0, 2, 1, 3)

        def merge(t):                                   # [B, H, T, D] -> [B, T, C]
            return t.transpose(0, 2, 1, 3).reshape(B, T, C)

        scale = 1.0 / math.sqrt(D)
        q, k, v = (heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        S = (q @ k.transpose(0, 1, 3, 2)) * scale
        blocked = None if mask is None else (mask[:, None] if mask.ndim == 3 else mask)
        if blocked is not None:
            S = np.where(blocked, -np.inf, S)
        P = np.exp(S - S.max(axis=-1, keepdims=True))
        P /= P.sum(axis=-1, keepdims=True)
        O = merge(P @ v)

        dO = heads(self.output_proj.backward(O, {}, backwards_gradient, gradients))
        dv = P.transpose(0, 1, 3, 2) @ dO
        dP = dO @ v.transpose(0, 1, 3, 2)
        dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
        if blocked is not None:
            dS = dS * (blocked if self.polarity_bug else ~blocked)     # BUG: mask where ~mask belongs
        dq = (dS @ k) * scale
        dk = (dS.transpose(0, 1, 3, 2) @ q) * scale
        dx = self.q_proj.backward(x, {}, merge(dq), gradients)
        dx = dx + self.k_proj.backward(x, {}, merge(dk), gradients)
        return dx + self.v_proj.backward(x, {}, merge(dv), gradients)


class AttentionMaskPolarityFixed(AttentionMaskPolarityBug):
    """`AttentionMaskPolarityBug` with the mask's polarity right: must pass every check."""

    polarity_bug = False


class CrossEntropyMeanOverBatch(nn.CrossEntropy):
    """The original's CrossEntropy mean: divides by the batch size, not the number of positions.

    torch's mean (and `loss(x, y)`, the forward here) averages over every
    position: all axes but the class axis `dim`, B*T of them for ``[B, C, T]``
    logits with dim=1. The backward divides by ``x.shape[0]``, the batch size.
    Checked through `LossAsLayer`, whose forward is the (right) reduced loss.

    Invisible whenever the batch size is the number of positions, i.e. on the
    2-d ``[N, C]`` logits of a classifier; sequence models ``[B, T, C]`` (or
    ``[B, C, T]``) are where it shows.
    """

    def num_positions(self, x: np.ndarray) -> int:
        return x.shape[0]                                # BUG: B, not the B*T positions


class LossAsLayer(Layer):
    """A loss with a fixed target as a Layer, so the harness can check it.

    ``y = loss(x, target)``, the reduced loss, as a 0-d array of x's dtype;
    ``dx = loss.backward(x, target) * dy``. The torch mirror (registered below)
    is the matching `torch.nn.functional` loss with the same target.
    """

    needs_cache = False

    def __init__(self, loss: nn.Loss, target: np.ndarray, name: str = 'LossAsLayer') -> None:
        super().__init__(name)
        self.loss = loss
        self.target = target

    def forward(self, x: np.ndarray):
        self.check_input(x)
        return np.asarray(self.loss(x, self.target), dtype=x.dtype), {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        dx = self.loss.backward(x, self.target)
        dx *= backwards_gradient
        return dx


if mirror is not None:
    @mirror(LossAsLayer)
    def _loss_as_layer(layer: LossAsLayer, params, x):
        import torch
        loss = layer.loss
        if not isinstance(loss, nn.CrossEntropy):
            raise NotImplementedError(f'LossAsLayer mirror: no torch twin for {type(loss).__name__}')
        logits = x.movedim(loss.dim, 1)                  # torch's class axis is 1
        return F.cross_entropy(logits, torch.from_numpy(layer.target).long(),
                               reduction=loss.reduction.value)


# ============================================================ the usual backward bugs

class DenseMissingTranspose(nn.Dense):
    """dx = dy @ W instead of dy @ W^T.

    Only a square W lets the wrong product have the right shape; a test with
    in_dim != out_dim fails on the shape, and a symmetric W (identity, a
    constant) hides it.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        super().backward_impl(x, cache, backwards_gradient, gradients)     # dW, db: right
        dy2 = backwards_gradient.reshape(-1, self.out_dim)
        return (dy2 @ self.get_parameter('W')).reshape(x.shape)           # BUG: W, not W.T


class LayerNormScaleGradTimes101(nn.LayerNorm):
    """dscale 1% too large (``* 1.01``); dx and dshift right.

    Missed by a check at a loose tolerance (rtol 1e-2, as float32 finite
    differences need) or by one that checks only dx.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        own: Parameters = {}
        dx = super().backward_impl(x, cache, backwards_gradient, own)
        own[f'{self.name}/scale'] = own[f'{self.name}/scale'] * 1.01      # BUG
        _add_into(gradients, own)
        return dx


class TanhDxTimes1001(nn.Tanh):
    """dx 0.1% too large (``* 1.001``).

    Missed by any check looser than rtol 1e-3, e.g. finite differences run in
    float32.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return super().backward_impl(x, cache, backwards_gradient, gradients) * x.dtype.type(1.001)   # BUG


class DenseMissingBiasGradient(nn.Dense):
    """The bias gradient is never added to `gradients`; dW and dx are right.

    Missed by tests that check dx only, or only the keys backward did write.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        own: Parameters = {}
        dx = super().backward_impl(x, cache, backwards_gradient, own)
        own.pop(f'{self.name}/b')                                          # BUG
        _add_into(gradients, own)
        return dx


class DenseAssignsGradients(nn.Dense):
    """Parameter gradients assigned (``gradients[key] = g``) instead of added.

    Every value is right on a fresh dict, so every check that starts from ``{}``
    passes; a layer used twice (weight tying) or a caller adding several losses'
    gradients into one dict loses all but the last.
    """

    def accumulate(self, gradients: Parameters, parameter_name: str, grad: np.ndarray) -> None:
        gradients[f'{self.name}/{parameter_name}'] = grad                 # BUG: not added


class SoftmaxBackwardLastAxis(nn.Softmax):
    """The backward's sum runs over the last axis, whatever `dim` is.

    ``dx = s * (dy - sum(dy * s, axis=-1))``: with keepdims the shapes fit for
    every dim, so nothing fails loudly. Missed by tests that use the default
    dim=-1 only.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        s = cache['y']
        inner = (backwards_gradient * s).sum(axis=-1, keepdims=True)       # BUG: axis=self.dim
        return s * (backwards_gradient - inner)


class SigmoidBackwardFloat64(nn.Sigmoid):
    """The backward computes in float64 "for accuracy" and returns float64 dx for float32 x.

    The values are right (better, even), so every float64 check passes; the
    contract says float32 in, float32 out, and the upcast doubles memory and
    silently turns the rest of the backward pass into float64.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        cache64 = {'y': cache['y'].astype(np.float64)}                     # BUG: never cast back
        return super().backward_impl(x, cache64, backwards_gradient.astype(np.float64), gradients)


class ReLUWritesInput(nn.ReLU):
    """The forward clamps its input in place: ``np.maximum(x, 0, out=x)``.

    y and dx are right (dx reads x > 0, unchanged by the clamp), but the
    caller's x is changed. Missed by tests with positive inputs (all-ones!),
    where the clamp changes nothing, and by any test that never looks at x again.
    """

    def apply(self, x):
        return np.maximum(x, 0, out=x), {}                                  # BUG: out=x


# ============================================================ extras

class DropoutNewMaskInBackward(nn.Dropout):
    """The backward draws a new mask instead of using the forward's.

    Missed by tests that check only statistics (the mean is preserved either
    way), or p=0 / eval mode, where there is no mask.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        keep = self.rng.random(x.shape) >= self.p                           # BUG: a new draw
        return backwards_gradient * (keep * x.dtype.type(1.0 / (1.0 - self.p)))


class GELUErfWithTanhDerivative(nn.GELU):
    """The exact (erf) GELU forward with the tanh approximation's derivative.

    The two derivatives differ by at most ~9e-4, so a check at rtol 1e-3 or
    against the approximate form misses it.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        c = math.sqrt(2.0 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))                            # BUG: the tanh form's derivative
        grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        return (grad * backwards_gradient).astype(x.dtype, copy=False)


class LayerNormMeansOverBatch(nn.LayerNorm):
    """The backward's means run over axis 0 (the samples) instead of the last axis.

    ``dx = rstd (g - mean_0(g) - xhat mean_0(g xhat))``; keepdims makes the
    shapes fit for any input. A second wrong-axis bug, in a different layer.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        super().backward_impl(x, cache, backwards_gradient, gradients)     # dscale, dshift: right
        xhat, rstd = _xhat(self, x, cache)
        g = backwards_gradient.reshape(-1, self.size) * self.get_parameter('scale')
        dx = g - g.mean(axis=0, keepdims=True) - xhat * (g * xhat).mean(axis=0, keepdims=True)   # BUG: axis 0
        return (dx * rstd).reshape(x.shape)


class TanhBackwardWritesUpstream(nn.Tanh):
    """The backward multiplies the upstream gradient in place and returns it.

    dx is right, but the caller's dy is now dx: a second layer reading the same
    dy (a residual branch) gets the wrong one.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        y = cache['y']
        backwards_gradient *= 1 - y * y                                     # BUG: in place
        return backwards_gradient


class SigmoidBackwardWritesCache(nn.Sigmoid):
    """The backward reuses the cached y as its buffer: ``y *= 1 - y``.

    dx is right the first time, wrong on a second backward from the same cache
    (as gradient accumulation over micro-steps or a double backward does).
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        y = cache['y']
        y *= 1 - y                                                          # BUG: writes the cache
        return y * backwards_gradient


class SigmoidOutputOnSelf(nn.Sigmoid):
    """The forward keeps y on the layer (``self.y``), and the backward reads it from there.

    Right whenever backward follows its own forward directly; wrong when another
    forward runs in between (a layer applied twice, or activation
    checkpointing). The cache still carries y, so `Layer.backward` does not
    recompute it.
    """

    def apply(self, x):
        y, cache = super().apply(x)
        self.y = y                                                          # BUG: state on the layer
        return y, cache

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return super().backward_impl(x, {'y': self.y}, backwards_gradient, gradients)


class TanhClipsUpstream(nn.Tanh):
    """The backward clips the upstream gradient to [-1, 1] ("gradient clipping" in the wrong place).

    dx is no longer linear in dy. Right for any |dy| <= 1, so missed by
    upstream gradients of ones and by torch.autograd.gradcheck (its upstream
    gradients are unit vectors).
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return super().backward_impl(x, cache, np.clip(backwards_gradient, -1, 1), gradients)   # BUG


class DenseBiasGradSqueezed(nn.Dense):
    """db sums a squeezed dy: ``dy.squeeze().sum(axis=0)``.

    Meant to accept a trailing singleton axis; on a batch of one it squeezes the
    batch axis away and db becomes a scalar. Right for every batch of more than
    one sample.
    """

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        own: Parameters = {}
        dx = super().backward_impl(x, cache, backwards_gradient, own)
        own[f'{self.name}/b'] = backwards_gradient.squeeze().sum(axis=0)   # BUG: squeeze
        _add_into(gradients, own)
        return dx


class GELUForwardFloat64(nn.GELU):
    """The forward's CDF is computed in float64 and y comes out float64 for float32 x.

    Values right; float32 in, float64 out breaks the dtype contract (and every
    layer after it silently runs in float64).
    """

    def apply(self, x):
        cdf = special.ndtr(x.astype(np.float64))                            # BUG: upcast
        return x * cdf, {'cdf': cdf}


class SoftmaxGlobalShift(nn.Softmax):
    """The forward's stabilising shift is the maximum of the whole batch, not of each row.

    Exact in real arithmetic (softmax is shift-invariant per row), and within
    every tolerance of torch; but sample j's rounding, and with a large logit in
    another sample its underflow to 0/0, now depends on sample i.
    """

    def forward(self, x: np.ndarray):
        self.check_input(x, min_ndim=1)
        y = np.exp(x - x.max())                                             # BUG: global max
        y /= y.sum(axis=self.dim, keepdims=True)
        return y, {'y': y}


class LayerNormGlobalCentre(nn.LayerNorm):
    """The forward first centres the whole batch ("two-pass, for accuracy"), then each row.

    Exact in real arithmetic (LayerNorm ignores a constant shift of its input)
    and within every tolerance of torch, so forward, backward and finite
    differences pass; but every sample's rounding now depends on the batch mean,
    so sample j's output changes when sample i does.
    """

    def forward(self, x: np.ndarray):
        return super().forward(x - x.mean())                                # BUG: a batch-wide statistic


# ============================================================ the list

def causal(rng: np.random.Generator, x: np.ndarray) -> dict:
    """Forward kwargs: the causal mask for x (as reference/cases/attention.py draws it)."""
    return {'mask': nn.get_causal_mask(x)}


def reseed(seed: int) -> Callable[[Layer], None]:
    """before_forward for Dropout: every forward draws the same mask."""
    def reset(layer: Layer) -> None:
        layer.rng = np.random.default_rng(seed)
    return reset


#: The checks a gradient bug (a wrong gradient value) is expected to fail, each on its own.
GRADIENT_CHECKS = ('finite_differences', 'backward[float64]', 'backward[float32]', 'gradcheck')


@dataclasses.dataclass(frozen=True)
class Broken:
    """One broken layer and how the harness must catch it.

    Attributes:
        name: test id.
        case: the registry-style case built from the broken class.
        checks: the checks expected to fail on `case` (``'backward[float32]'`` style).
        tensor: the tensor every one of those failures must name.
        real: the same case (same builds, same rng draws) with the real layer; passes `checks`.
        gradient_bug: a gradient's value is wrong, so the finite-difference check and the
            torch backward check must each catch it on their own.
        harness_bugs: ``{check: what the harness does wrong}`` for checks in `checks` that do not
            (yet) flag this layer as they should (``'message:<check>'``: it is flagged, but the
            message does not name the tensor). The assertion stays as it is; the test runs as a
            strict xfail, so it fails again (XPASS) once the harness is fixed and the note must go.
    """
    name: str
    case: Case
    checks: tuple[str, ...]
    tensor: str
    real: Case
    gradient_bug: bool
    harness_bugs: Mapping[str, str] = dataclasses.field(default_factory=dict)


def real_class(cls: type) -> type:
    """The `nn` class a broken class derives from: its real, unbroken twin."""
    return next(c for c in cls.__mro__ if c.__module__.split('.')[0] == 'nn')


def broken(name: str, cls: type, make: Callable[[type, np.random.Generator], Layer],
           input: Callable[[np.random.Generator], np.ndarray], checks, tensor: str, *,
           gradient_bug: bool, real_cls: type | None = None, layer: type | None = None,
           harness_bugs: Mapping[str, str] | None = None, **case_kw) -> Broken:
    """An entry; ``make(cls, rng)`` builds the layer from either class (parameters then randomized)."""
    def build(c: type) -> Callable[[np.random.Generator], Layer]:
        return lambda rng: randomize(make(c, rng), rng)
    real_cls = real_cls or real_class(cls)
    case = Case(name, layer or cls, build(cls), input, **case_kw)
    real = Case(name, layer or real_cls, build(real_cls), input, **case_kw)
    checks = tuple(GRADIENT_CHECKS if checks == 'gradient' else checks)
    harness_bugs = dict(harness_bugs or {})
    if not {k.removeprefix('message:') for k in harness_bugs} <= set(checks):
        raise ValueError(f'{name}: harness_bugs {sorted(harness_bugs)} must be among its checks {checks}')
    return Broken(name, case, checks, tensor, real, gradient_bug, harness_bugs)


def _cross_entropy(loss_cls: type, rng: np.random.Generator) -> LossAsLayer:
    # Logits [B=3, C=5, T=4], classes on axis 1: 12 positions, batch size 3.
    return LossAsLayer(loss_cls(dim=1), rng.integers(0, 5, size=(3, 4)))


BROKEN: list[Broken] = [
    # The original library's bugs.
    broken('softmax-jacobian-s_i-for-s_j', SoftmaxJacobianIndexBug, lambda c, rng: c(),
           normal(3, 4, 5, scale=2.0), 'gradient', 'dx', gradient_bug=True),
    broken('layernorm-dx-right-only-at-scale-1', LayerNormScaleOneBug, lambda c, rng: c(7),
           normal(3, 4, 7, scale=2.0), 'gradient', 'dx', gradient_bug=True),
    broken('attention-mask-wrong-polarity', AttentionMaskPolarityBug, lambda c, rng: c(4, 2),
           normal(2, 5, 4), 'gradient', 'dx', gradient_bug=True, kwargs=causal),
    broken('cross-entropy-mean-over-batch', CrossEntropyMeanOverBatch, _cross_entropy,
           normal(3, 5, 4, scale=2.0), 'gradient', 'dx', gradient_bug=True,
           real_cls=nn.CrossEntropy, layer=LossAsLayer, batch_independent=False),
    # The usual ones.
    broken('dense-missing-transpose', DenseMissingTranspose, lambda c, rng: c(6, 6),
           normal(3, 5, 6), 'gradient', 'dx', gradient_bug=True),
    broken('layernorm-dscale-times-1.01', LayerNormScaleGradTimes101, lambda c, rng: c(7, name='LN'),
           normal(3, 4, 7, scale=2.0), 'gradient', 'LN/scale', gradient_bug=True),
    broken('tanh-dx-times-1.001', TanhDxTimes1001, lambda c, rng: c(),
           normal(5, 7, scale=1.5), 'gradient', 'dx', gradient_bug=True),
    broken('dense-missing-bias-gradient', DenseMissingBiasGradient, lambda c, rng: c(5, 3),
           normal(4, 5), (*GRADIENT_CHECKS, 'accumulation'), 'Dense/b', gradient_bug=True),
    broken('dense-gradient-assigned', DenseAssignsGradients, lambda c, rng: c(5, 3),
           normal(4, 5), ('accumulation',), 'Dense/W', gradient_bug=False),
    broken('softmax-backward-sums-last-axis', SoftmaxBackwardLastAxis, lambda c, rng: c(dim=1),
           normal(3, 6, 5, scale=2.0), 'gradient', 'dx', gradient_bug=True),
    broken('sigmoid-backward-float64', SigmoidBackwardFloat64, lambda c, rng: c(),
           normal(3, 4, 5, scale=2.0), ('backward[float32]',), 'dx', gradient_bug=False),
    broken('relu-forward-writes-input', ReLUWritesInput, lambda c, rng: c(),
           away_from_zero(4, 3, 5), ('purity',), 'x', gradient_bug=False),
    # Extras.
    broken('dropout-new-mask-in-backward', DropoutNewMaskInBackward, lambda c, rng: c(0.3),
           normal(4, 5, 7), (*GRADIENT_CHECKS, 'purity'), 'dx', gradient_bug=True,
           before_forward=reseed(11)),
    broken('gelu-erf-with-tanh-derivative', GELUErfWithTanhDerivative, lambda c, rng: c(),
           normal(3, 4, 5, scale=2.0), 'gradient', 'dx', gradient_bug=True),
    broken('layernorm-backward-means-over-batch', LayerNormMeansOverBatch, lambda c, rng: c(6),
           normal(5, 6), 'gradient', 'dx', gradient_bug=True),
    broken('tanh-backward-writes-dy', TanhBackwardWritesUpstream, lambda c, rng: c(),
           normal(5, 7, scale=1.5), ('purity',), 'dy', gradient_bug=False),
    broken('sigmoid-backward-writes-cache', SigmoidBackwardWritesCache, lambda c, rng: c(),
           normal(3, 4, 5, scale=2.0), ('purity',), 'cache', gradient_bug=False),
    broken('sigmoid-output-kept-on-layer', SigmoidOutputOnSelf, lambda c, rng: c(),
           normal(3, 4, 5, scale=2.0), ('reentrancy',), 'dx', gradient_bug=False),
    broken('tanh-clips-upstream', TanhClipsUpstream, lambda c, rng: c(),
           normal(5, 7, scale=1.5), ('finite_differences', 'backward[float64]', 'backward[float32]',
                                     'linearity'), 'dx', gradient_bug=True),
    broken('dense-bias-gradient-squeezed', DenseBiasGradSqueezed, lambda c, rng: c(6, 4),
           normal(5, 6), ('batch_one',), 'Dense/b', gradient_bug=False),
    broken('gelu-forward-float64', GELUForwardFloat64, lambda c, rng: c(),
           normal(3, 4, 5, scale=2.0), ('forward[float32]',), 'y', gradient_bug=False),
    broken('softmax-global-shift', SoftmaxGlobalShift, lambda c, rng: c(),
           normal(4, 3, 5, scale=2.0), ('batch_independence',), 'y', gradient_bug=False),
    broken('layernorm-global-centre', LayerNormGlobalCentre, lambda c, rng: c(5),
           normal(4, 3, 5, scale=2.0), ('batch_independence',), 'y', gradient_bug=False),
]
