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

    mean(g) and mean(g * xhat) are the GEMVs ``dy @ scale / D`` and
    ``(dy * xhat) @ scale / D``, so no [N, D] temporary is spent on them.
    """

    def __init__(self, size: int, eps: float = 1e-5, name: str = 'LayerNorm') -> None:
        super().__init__(name)
        self.size = size
        self.eps = eps
        self.set_parameter('scale', initializers.ones((size,)))
        self.set_parameter('shift', initializers.zeros((size,)))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, last_dim=self.size)
        t = x.dtype.type
        x2 = x.reshape(-1, self.size)
        xhat = x2 - x2.mean(axis=1, keepdims=True)
        var = np.einsum('ij,ij->i', xhat, xhat)
        var *= t(1.0 / self.size)
        var += t(self.eps)
        rstd = np.sqrt(var, out=var)
        np.divide(1, rstd, out=rstd)
        rstd = rstd[:, None]
        xhat *= rstd
        y = xhat * self.get_parameter('scale')
        y += self.get_parameter('shift')
        return y.reshape(x.shape), {'xhat': xhat, 'rstd': rstd}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        t = x.dtype.type
        xhat, rstd = cache['xhat'], cache['rstd']
        scale = self.get_parameter('scale')
        dy = backwards_gradient.reshape(-1, self.size)
        dy_xhat = dy * xhat
        self.accumulate(gradients, 'scale', dy_xhat.sum(axis=0))
        self.accumulate(gradients, 'shift', dy.sum(axis=0))
        mean_g = (dy @ scale)[:, None]
        mean_g *= t(1.0 / self.size)
        mean_gx = (dy_xhat @ scale)[:, None]
        mean_gx *= t(1.0 / self.size)
        dx = dy * scale
        dx -= mean_g
        dx -= np.multiply(xhat, mean_gx, out=dy_xhat)   # reuse the buffer
        dx *= rstd
        return dx.reshape(x.shape)
