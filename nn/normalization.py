"""Normalization layers."""

from __future__ import annotations

import numpy as np

from nn import initializers
from nn.layer import Cache, Layer, Parameters


class LayerNorm(Layer):
    """Normalizes the last axis, then scales and shifts (torch's LayerNorm).

    Shapes: x, y ``[..., size]``; scale, shift ``(size,)``. With mean mu and
    biased variance var over the last axis, rstd = 1/sqrt(var + eps)::

        xhat = (x - mu) * rstd        y = xhat * scale + shift

    Backward, means taken over the last axis (size D)::

        g = dy * scale
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dscale = sum(dy * xhat)   dshift = sum(dy)    (sums over the leading axes)

    Every reduction is a GEMV: the row means ``x @ (1/D)``, mean(g) and
    mean(g * xhat) as ``dy @ scale / D`` and ``(dy * xhat) @ scale / D``, the
    column sums as ``ones @ (...)``; BLAS runs them faster than NumPy's
    reductions and they need no [N, D] temporary. (Running the elementwise
    chain over cache-sized row blocks was measured too: no faster here.)
    """

    def __init__(self, size: int, eps: float = 1e-5, name: str = 'LayerNorm') -> None:
        super().__init__(name)
        self.size = size
        self.eps = eps
        self.set_parameter('scale', initializers.ones((size,)))
        self.set_parameter('shift', initializers.zeros((size,)))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, last_dim=self.size)
        t, D = x.dtype.type, self.size
        x2 = x.reshape(-1, D)
        xhat = x2 - (x2 @ np.full(D, 1.0 / D, dtype=x.dtype))[:, None]     # row means by GEMV
        rstd = np.einsum('ij,ij->i', xhat, xhat)
        rstd *= t(1.0 / D)
        rstd += t(self.eps)
        np.sqrt(rstd, out=rstd)
        np.divide(1, rstd, out=rstd)
        rstd = rstd[:, None]
        xhat *= rstd
        y = xhat * self.get_parameter('scale')
        y += self.get_parameter('shift')
        return y.reshape(x.shape), {'xhat': xhat, 'rstd': rstd}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        t, D = x.dtype.type, self.size
        xhat, rstd = cache['xhat'], cache['rstd']
        scale = self.get_parameter('scale')
        dy = backwards_gradient.reshape(-1, D)
        dy_xhat = dy * xhat
        ones = np.ones(dy.shape[0], dtype=x.dtype)
        self.accumulate(gradients, 'scale', ones @ dy_xhat)       # column sums by GEMV
        self.accumulate(gradients, 'shift', ones @ dy)
        mean_g = dy @ scale
        mean_g *= t(1.0 / D)
        mean_gx = dy_xhat @ scale
        mean_gx *= t(1.0 / D)
        dx = dy * scale
        dx -= mean_g[:, None]
        dx -= np.multiply(xhat, mean_gx[:, None], out=dy_xhat)    # reuse the buffer
        dx *= rstd
        return dx.reshape(x.shape)


class BatchNorm2D(Layer):
    """Batch normalization of channels-last images (torch's BatchNorm2d, momentum and all).

    Shapes: x, y ``[B, H, W, C]``; scale, shift ``(C,)``. Statistics are per channel
    over the N = B*H*W positions of the batch. In training, with the batch mean mu
    and *biased* variance var, rstd = 1/sqrt(var + eps)::

        xhat = (x - mu) * rstd        y = xhat * scale + shift

    and the running statistics (buffers, not parameters: they are not in
    `parameters()` and get no gradient) move towards the batch's, exactly as
    torch updates them, with the *unbiased* variance::

        running_mean = momentum * mu + (1 - momentum) * running_mean
        running_var  = momentum * var * N/(N-1) + (1 - momentum) * running_var

    In eval mode mu, var are the running statistics (a fixed affine map).
    The buffers start at 0 and 1 (float32) and take the parameters' dtype when
    they are updated, as torch's ``module.double()`` casts buffers too.

    Backward in training, sums over the N positions (mu and var depend on every
    sample, so samples are coupled)::

        dscale = sum(dy * xhat)      dshift = sum(dy)
        dx = scale * rstd * (dy - dshift/N - xhat * dscale/N)

    (the LayerNorm formula with g = dy * scale, whose means over N reduce to the
    two parameter gradients). In eval mode ``dx = dy * scale * rstd``.

    Backward with an empty cache recomputes the statistics from x without
    updating the running ones again (`cache_for_backward`).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 name: str = 'BatchNorm2D') -> None:
        super().__init__(name)
        who = f'BatchNorm2D {name!r}'
        if not isinstance(num_features, (int, np.integer)) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f'{who}: num_features expected a positive int, got {num_features!r}')
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
            raise ValueError(f'{who}: eps expected a number >= 0, got {eps!r}')
        if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0 <= momentum <= 1:
            raise ValueError(f'{who}: momentum expected a number in [0, 1], got {momentum!r}')
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.set_parameter('scale', initializers.ones((num_features,)))
        self.set_parameter('shift', initializers.zeros((num_features,)))
        self.running_mean = initializers.zeros((num_features,))
        self.running_var = initializers.ones((num_features,))
        self.num_batches_tracked = 0

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, ndim=4, last_dim=self.num_features)
        if not self.training:
            return self._normalize_running(x)
        y, cache, mean, var, n = self._normalize_batch(x)
        m = self.momentum
        dtype = self.get_parameter('scale').dtype
        running_mean = self.running_mean.astype(dtype, copy=False)
        running_var = self.running_var.astype(dtype, copy=False)
        # New arrays (not in-place), so a running-stat array someone holds is never changed under them.
        self.running_mean = (m * mean.astype(dtype, copy=False) + (1 - m) * running_mean).astype(dtype, copy=False)
        self.running_var = (m * (var.astype(dtype, copy=False) * (n / (n - 1))) + (1 - m) * running_var
                            ).astype(dtype, copy=False)
        self.num_batches_tracked += 1
        return y, cache

    def cache_for_backward(self, x: np.ndarray) -> Cache:
        """The cache forward would return, without a second running-statistics update."""
        self.check_input(x, ndim=4, last_dim=self.num_features)
        return self._normalize_batch(x)[1] if self.training else self._normalize_running(x)[1]

    def _normalize_batch(self, x: np.ndarray):
        t = x.dtype.type
        x2 = x.reshape(-1, self.num_features)
        n = x2.shape[0]
        if n < 2:
            raise ValueError(f'BatchNorm2D {self.name!r}: training expected more than 1 value per '
                             f'channel (B*H*W > 1), got input shape {x.shape}')
        mean = x2.mean(axis=0)
        xhat = x2 - mean
        var = np.einsum('ij,ij->j', xhat, xhat)
        var *= t(1.0 / n)
        rstd = np.sqrt(var + t(self.eps))
        np.divide(1, rstd, out=rstd)
        xhat *= rstd
        y = xhat * self.get_parameter('scale')
        y += self.get_parameter('shift')
        return y.reshape(x.shape), {'xhat': xhat, 'rstd': rstd, 'training': True}, mean, var, n

    def _normalize_running(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        t = x.dtype.type
        x2 = x.reshape(-1, self.num_features)
        rstd = np.sqrt(self.running_var.astype(x.dtype) + t(self.eps))
        np.divide(1, rstd, out=rstd)
        xhat = x2 - self.running_mean.astype(x.dtype)
        xhat *= rstd
        y = xhat * self.get_parameter('scale')
        y += self.get_parameter('shift')
        return y.reshape(x.shape), {'xhat': xhat, 'rstd': rstd, 'training': False}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        xhat, rstd = cache['xhat'], cache['rstd']
        dy = backwards_gradient.reshape(-1, self.num_features)
        dscale = np.einsum('ij,ij->j', dy, xhat)
        dshift = dy.sum(axis=0)
        self.accumulate(gradients, 'scale', dscale)
        self.accumulate(gradients, 'shift', dshift)
        k = self.get_parameter('scale') * rstd
        if not cache['training']:
            return (dy * k).reshape(x.shape)
        n = dy.shape[0]
        t = x.dtype.type
        dx = xhat * (dscale * t(-1.0 / n))
        dx += dy
        dx -= dshift * t(1.0 / n)
        dx *= k
        return dx.reshape(x.shape)
