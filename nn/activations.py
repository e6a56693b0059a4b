"""Elementwise activations and Softmax.

Forward and backward are built from NumPy's SIMD ufuncs, writing into
temporaries the layer owns (``out=``) rather than allocating one array per
operation. Two measured rules shape them:

- ``np.where`` and ``where=`` masks run ~20x slower than arithmetic on random
  signs (branchy inner loop), so masks enter as a multiplication by a bool array;
- every pass over a large array costs about the same as a copy, so the backward
  reuses what the forward cached (y, Phi(x), phi(x)) instead of recomputing.

Extreme inputs (|x| up to 1e4, float32 and float64) stay finite and raise no
floating-point warning beyond underflow.
"""

from __future__ import annotations

import math

import numpy as np

from nn.layer import Cache, Layer, Parameters
from nn.special import normal_cdf_pdf


class _Elementwise(Layer):
    """Any shape, floating dtype; y and dx keep x's shape and dtype."""

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, min_ndim=0)
        return self.apply(x)

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        raise NotImplementedError


class ReLU(_Elementwise):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]``.

    The derivative at the kink x = 0 is taken as 0, as torch does.
    """

    needs_cache = False

    def __init__(self, name: str = 'ReLU') -> None:
        super().__init__(name)

    def apply(self, x):
        return np.maximum(x, x.dtype.type(0)), {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return np.multiply(backwards_gradient, x > 0, dtype=x.dtype)


class LeakyReLU(_Elementwise):
    """``y = x`` for x > 0, ``negative_slope * x`` otherwise;
    ``dx = dy`` or ``negative_slope * dy``. The derivative at 0 is
    `negative_slope`, as torch takes it.
    """

    needs_cache = False

    def __init__(self, negative_slope: float = 0.01, name: str = 'LeakyReLU') -> None:
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def apply(self, x):
        slope = x.dtype.type(self.negative_slope)
        # For 0 <= slope <= 1 the larger of x and slope*x is the right branch on both sides.
        if 0.0 <= self.negative_slope <= 1.0:
            y = np.multiply(x, slope)
            return np.maximum(x, y, out=y), {}
        y = np.multiply(x, x > 0, dtype=x.dtype)
        y += np.multiply(x, x <= 0, dtype=x.dtype) * slope
        return y, {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        t = x.dtype.type
        # factor = slope + (1 - slope) [x > 0]
        factor = np.multiply(x > 0, t(1.0 - self.negative_slope), dtype=x.dtype)
        factor += t(self.negative_slope)
        factor *= backwards_gradient
        return factor


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``.

    For x -> -inf, exp(-x) overflows to inf and y = 1/inf = 0, which is the
    right limit: the overflow is expected and silenced. Unlike the
    ``(1 + tanh(x/2)) / 2`` form, this keeps full relative accuracy in the
    negative tail (y ~ e^x).
    """

    def __init__(self, name: str = 'Sigmoid') -> None:
        super().__init__(name)

    def apply(self, x):
        y = np.negative(x)
        with np.errstate(over='ignore', under='ignore'):
            np.exp(y, out=y)
        y += 1
        np.divide(1, y, out=y)
        return y, {'y': y}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        y = cache['y']
        dx = np.subtract(1, y)
        dx *= y
        dx *= backwards_gradient
        return dx


class Tanh(_Elementwise):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def __init__(self, name: str = 'Tanh') -> None:
        super().__init__(name)

    def apply(self, x):
        y = np.tanh(x)
        return y, {'y': y}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        y = cache['y']
        dx = np.multiply(y, y)
        np.subtract(1, dx, out=dx)
        dx *= backwards_gradient
        return dx


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


class GELU(_Elementwise):
    """Gaussian error linear unit, with torch's two definitions.

    ``approximate='none'``: ``y = x Phi(x)``, Phi the standard normal CDF;
    ``dx = dy (Phi(x) + x phi(x))``, phi its density. Both come from
    `nn.special.normal_cdf_pdf` in one pass, so the backward needs no exp.

    ``approximate='tanh'``: ``y = x/2 (1 + t)``, ``t = tanh(u)``,
    ``u = sqrt(2/pi) (x + 0.044715 x^3)``;
    ``dx = dy ((1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))``.
    """

    def __init__(self, approximate: str = 'none', name: str = 'GELU') -> None:
        super().__init__(name)
        if approximate not in ('none', 'tanh'):
            raise ValueError(f"GELU {name!r}: approximate expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def apply(self, x):
        if self.approximate == 'none':
            cdf, pdf = normal_cdf_pdf(x)
            return x * cdf, {'cdf': cdf, 'pdf': pdf}
        t = x.dtype.type
        u = np.multiply(x, x)
        u *= t(_GELU_CUBIC)
        u += 1
        u *= x
        u *= t(_SQRT_2_OVER_PI)
        th = np.tanh(u, out=u)
        y = th + 1
        y *= x
        y *= t(0.5)
        return y, {'tanh': th}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        if self.approximate == 'none':
            dx = np.multiply(x, cache['pdf'])
            dx += cache['cdf']
            dx *= backwards_gradient
            return dx
        t = x.dtype.type
        th = cache['tanh']
        dx = np.multiply(x, x)
        dx *= t(3 * _GELU_CUBIC)
        dx += 1
        dx *= t(0.5 * _SQRT_2_OVER_PI)
        dx *= x
        buf = np.multiply(th, th)
        np.subtract(1, buf, out=buf)
        dx *= buf                                   # x/2 (1 - t^2) u'
        np.multiply(th, t(0.5), out=buf)
        dx += buf
        dx += t(0.5)                                # + (1 + t)/2
        dx *= backwards_gradient
        return dx


class Softmax(Layer):
    """``y = exp(x - max) / sum(exp(x - max))`` along `dim` (any axis).

    Backward without the Jacobian: with s = y,
    ``dx = s * (dy - sum(dy * s, dim))``. x, y, dy and dx share one shape.
    The max is subtracted only when exp could overflow or underflow
    (`_exp_is_safe`); NaN inputs take that path too and propagate as in torch.
    Along the last axis (the common case) the row sums are matrix-vector
    products, which BLAS does faster than NumPy's reductions.
    """

    def __init__(self, dim: int = -1, name: str = 'Softmax') -> None:
        super().__init__(name)
        self.dim = dim

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, min_ndim=1)
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f'Softmax {self.name!r}: dim {self.dim} expected within rank, got shape {x.shape}')
        if self._exp_is_safe(x):
            y = np.exp(x)
        else:
            y = np.subtract(x, x.max(axis=self.dim, keepdims=True))
            with np.errstate(under='ignore'):
                np.exp(y, out=y)
        y *= np.reciprocal(self._sum(y))
        return y, {'y': y}

    def _exp_is_safe(self, x: np.ndarray) -> bool:
        """True when exp(x) can neither overflow nor underflow for any entry, nor can a row
        sum overflow: then softmax needs no max subtraction (it is shift-invariant, and the
        relative rounding of exp does not depend on the shift). Two SIMD reductions over
        x cost a fifth of the row maxima and the subtraction they save."""
        if x.size == 0:
            return False
        info = np.finfo(x.dtype)
        hi = math.log(float(info.max)) - math.log(x.shape[self.dim]) - 1.0
        lo = math.log(float(info.tiny)) + 1.0
        return bool(lo < x.min() and x.max() < hi)

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        s = cache['y']
        if self._last_axis(s):
            n = s.shape[-1]
            inner = np.einsum('ij,ij->i', backwards_gradient.reshape(-1, n), s.reshape(-1, n))
            inner = inner.reshape(s.shape[:-1] + (1,))
        else:
            inner = np.multiply(backwards_gradient, s).sum(axis=self.dim, keepdims=True)
        dx = np.subtract(backwards_gradient, inner)
        dx *= s
        return dx

    def _last_axis(self, a: np.ndarray) -> bool:
        return self.dim % a.ndim == a.ndim - 1 and a.flags.c_contiguous

    def _sum(self, a: np.ndarray) -> np.ndarray:
        """Sum along `dim`, kept as a broadcastable axis."""
        if self._last_axis(a):
            n = a.shape[-1]
            return (a.reshape(-1, n) @ np.ones(n, a.dtype)).reshape(a.shape[:-1] + (1,))
        return a.sum(axis=self.dim, keepdims=True)
