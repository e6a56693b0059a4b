"""Regularization layers."""

from __future__ import annotations

import numpy as np

from nn.layer import Cache, Layer, Parameters


class Dropout(Layer):
    """Inverted dropout: in training each entry is kept with probability 1 - p
    and scaled by 1/(1 - p), so evaluation is the identity.

    ``y = x * m / (1 - p)``, m ~ Bernoulli(1 - p) drawn from the layer's own
    generator (`seed`); ``dx = dy * m / (1 - p)``. p = 1 drops everything
    (y = 0), as torch does. The mask is in the cache: backward needs it, so an
    empty cache in training mode is an error rather than a silently new mask.
    """

    def __init__(self, p: float, seed: int | None = None, name: str = 'Dropout') -> None:
        super().__init__(name)
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f'Dropout {name!r}: p expected a probability in [0, 1], got {p!r}')
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, min_ndim=0)
        if not self.training or self.p == 0.0:
            return x.copy(), {'mask': None}
        keep = self.rng.random(x.shape) >= self.p
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        mask = keep * x.dtype.type(scale)      # 0 or 1/(1-p), in x's dtype
        return x * mask, {'mask': mask}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        mask = cache['mask']
        return backwards_gradient.copy() if mask is None else backwards_gradient * mask

    def cache_for_backward(self, x: np.ndarray) -> Cache:
        if self.training and self.p > 0.0:
            raise ValueError(
                f'Dropout {self.name!r}: backward in training mode expected the cache from '
                'forward (it holds the random mask), got an empty cache')
        return {'mask': None}
