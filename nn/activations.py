"""Elementwise activations and Softmax.

Each forward computes y with NumPy's SIMD ufuncs, writing into temporaries it
owns (``out=``) rather than allocating one array per operation; each backward
is the closed-form derivative, elementwise, never a Jacobian. Extreme inputs
(|x| up to 1e4, float32 or float64) stay finite and raise no floating-point
warning other than underflow.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from nn.layer import Cache, Layer, Parameters


class _Elementwise(Layer):
    """Shared input check: any shape, floating dtype."""

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, min_ndim=0)
        return self.apply(x)

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        raise NotImplementedError


class ReLU(_Elementwise):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]`` (the derivative at the kink 0 is 0, as in torch)."""

    needs_cache = False

    def __init__(self, name: str = 'ReLU') -> None:
        super().__init__(name)

    def apply(self, x):
        return np.maximum(x, 0), {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return np.where(x > 0, backwards_gradient, 0).astype(x.dtype, copy=False)


class LeakyReLU(_Elementwise):
    """``y = x if x > 0 else negative_slope * x``; ``dx = dy`` or ``negative_slope * dy``.

    The derivative at 0 is `negative_slope`, as in torch.
    """

    needs_cache = False

    def __init__(self, negative_slope: float = 0.01, name: str = 'LeakyReLU') -> None:
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def apply(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope)), {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        dy = backwards_gradient
        return np.where(x > 0, dy, dy * dy.dtype.type(self.negative_slope)).astype(x.dtype, copy=False)


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``.

    `scipy.special.expit` is one pass and saturates to exactly 0 or 1 without
    the overflow a naive ``exp(-x)`` raises at x = -1e4.
    """

    def __init__(self, name: str = 'Sigmoid') -> None:
        super().__init__(name)

    def apply(self, x):
        return (y := special.expit(x)), {'y': y}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        y = cache['y']
        dx = np.subtract(1, y)          # fresh temporary: safe to update in place
        dx *= y
        dx *= backwards_gradient
        return dx


class Tanh(_Elementwise):
    """``y = tanh(x)``; ``dx = dy * (1 - y^2)``."""

    def __init__(self, name: str = 'Tanh') -> None:
        super().__init__(name)

    def apply(self, x):
        return (y := np.tanh(x)), {'y': y}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        y = cache['y']
        dx = np.multiply(y, y)
        np.subtract(1, dx, out=dx)
        dx *= backwards_gradient
        return dx


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_CUBIC = 0.044715


class GELU(_Elementwise):
    """Gaussian error linear unit, torch's two definitions.

    ``approximate='none'``: ``y = x * Phi(x)`` with Phi the standard normal CDF;
    ``dx = dy * (Phi(x) + x * phi(x))``, phi the normal density.

    ``approximate='tanh'``: ``y = x/2 * (1 + tanh(u))``,
    ``u = sqrt(2/pi) * (x + 0.044715 x^3)``;
    ``dx = dy * (1/2 (1 + t) + x/2 (1 - t^2) sqrt(2/pi) (1 + 3*0.044715 x^2))``, t = tanh(u).
    """

    def __init__(self, approximate: str = 'none', name: str = 'GELU') -> None:
        super().__init__(name)
        if approximate not in ('none', 'tanh'):
            raise ValueError(f"GELU {name!r}: approximate expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def apply(self, x):
        t = x.dtype.type
        if self.approximate == 'none':
            cdf = special.ndtr(x)
            return x * cdf, {'cdf': cdf}
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
        t = x.dtype.type
        if self.approximate == 'none':
            # phi(x) = exp(-x^2/2)/sqrt(2 pi); underflows to 0 for |x| > ~38, which is exact enough.
            dx = np.multiply(x, x)
            dx *= t(-0.5)
            with np.errstate(under='ignore'):
                np.exp(dx, out=dx)
            dx *= x
            dx *= t(_INV_SQRT_2PI)
            dx += cache['cdf']
            dx *= backwards_gradient
            return dx
        th = cache['tanh']
        # x/2 (1 - t^2) sqrt(2/pi) (1 + 3c x^2) + (1 + t)/2
        dx = np.multiply(x, x)
        dx *= t(3 * _GELU_CUBIC)
        dx += 1
        dx *= t(0.5 * _SQRT_2_OVER_PI)
        dx *= x
        one_minus_t2 = np.multiply(th, th)
        np.subtract(1, one_minus_t2, out=one_minus_t2)
        dx *= one_minus_t2
        dx += t(0.5)
        half_t = np.multiply(th, t(0.5), out=one_minus_t2)   # buffer reused
        dx += half_t
        dx *= backwards_gradient
        return dx


class Softmax(Layer):
    """``y = exp(x - max) / sum exp(x - max)`` along `dim` (any axis).

    Backward without the Jacobian: with s = y,
    ``dx = s * (dy - sum(dy * s, dim))``. Shapes: x, y, dy, dx all alike.
    """

    def __init__(self, dim: int = -1, name: str = 'Softmax') -> None:
        super().__init__(name)
        self.dim = dim

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, min_ndim=1)
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f'Softmax {self.name!r}: dim {self.dim} expected within rank, got shape {x.shape}')
        y = np.subtract(x, x.max(axis=self.dim, keepdims=True))
        with np.errstate(under='ignore'):
            np.exp(y, out=y)
        y /= y.sum(axis=self.dim, keepdims=True)
        return y, {'y': y}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        s = cache['y']
        dx = np.multiply(backwards_gradient, s)
        inner = dx.sum(axis=self.dim, keepdims=True)
        np.subtract(backwards_gradient, inner, out=dx)
        dx *= s
        return dx
