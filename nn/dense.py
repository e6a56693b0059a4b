"""Dense (fully connected) layer."""

from __future__ import annotations

import numpy as np

from nn import initializers
from nn.layer import Cache, Layer, Parameters


class Dense(Layer):
    """Affine map over the last axis: ``y = x @ W + b``.

    Shapes: x ``[..., in_dim]``, W ``(in_dim, out_dim)``, b ``(out_dim,)``,
    y ``[..., out_dim]``. W starts Xavier-uniform and b at zero.

    Backward, with the leading dims folded into one axis of size N
    (x2 ``[N, in]``, dy2 ``[N, out]``)::

        dW = x2^T @ dy2        db = sum_N dy2        dx = dy2 @ W^T

    Folding makes each product one GEMM: numpy's batched matmul over small
    stacks was measured ~11x slower than the single GEMM here.
    """

    needs_cache = False

    def __init__(self, in_dim: int, out_dim: int, use_bias: bool = True, name: str = 'Dense') -> None:
        super().__init__(name)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.use_bias = use_bias
        self.set_parameter('W', initializers.xavier_uniform(in_dim, out_dim, (in_dim, out_dim)))
        if use_bias:
            self.set_parameter('b', initializers.zeros((out_dim,)))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, last_dim=self.in_dim)
        W = self.get_parameter('W')
        y = x.reshape(-1, self.in_dim) @ W
        if self.use_bias:
            y += self.get_parameter('b')
        return y.reshape(*x.shape[:-1], self.out_dim), {}

    def backward_impl(self, x: np.ndarray, cache: Cache, backwards_gradient: np.ndarray,
                      gradients: Parameters) -> np.ndarray:
        x2 = x.reshape(-1, self.in_dim)
        dy2 = backwards_gradient.reshape(-1, self.out_dim)
        self.accumulate(gradients, 'W', x2.T @ dy2)
        if self.use_bias:
            self.accumulate(gradients, 'b', dy2.sum(axis=0))
        return (dy2 @ self.get_parameter('W').T).reshape(x.shape)
