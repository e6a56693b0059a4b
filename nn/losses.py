"""Cross entropy and mean squared error, with torch's definitions."""

from __future__ import annotations

import numpy as np

from nn.loss_base import Loss, Reduction


class CrossEntropy(Loss):
    """Cross entropy of logits x against targets, along the class axis `dim`.

    Targets are either class probabilities (one-hot included) with x's shape,
    or integer class indices with x's shape less the class axis. Per position::

        loss = -sum_c y_c log softmax(x)_c
        dloss/dx = softmax(x) * sum_c y_c - y        (= softmax(x) - onehot for indices)

    log-sum-exp is taken about the row maximum, so logits of 1e4 stay finite.
    The mean divides by the number of positions, as torch's CrossEntropyLoss.
    """

    def __init__(self, reduction: Reduction | str = Reduction.MEAN, name: str = 'CrossEntropy', dim: int = -1) -> None:
        super().__init__(reduction, name, dim)

    def _targets(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Validates y; returns True when y holds class indices."""
        self.check_pair(x, y)
        who = f'CrossEntropy {self.name!r}'
        if np.issubdtype(y.dtype, np.integer):
            expected = x.shape[:self.dim % x.ndim] + x.shape[self.dim % x.ndim + 1:]
            if y.shape != expected:
                raise ValueError(f'{who}: class-index target expected shape {expected}, got {y.shape}')
            n_classes = x.shape[self.dim]
            if y.size and (y.min() < 0 or y.max() >= n_classes):
                raise ValueError(f'{who}: class indices expected in [0, {n_classes}), '
                                 f'got values in [{y.min()}, {y.max()}]')
            return True
        if not np.issubdtype(y.dtype, np.floating):
            raise TypeError(f'{who}: target expected class indices or probabilities, got dtype {y.dtype}')
        if y.shape != x.shape:
            raise ValueError(f'{who}: probability target expected shape {x.shape}, got {y.shape}')
        return False

    def _log_softmax(self, x: np.ndarray) -> np.ndarray:
        z = x - x.max(axis=self.dim, keepdims=True)
        with np.errstate(under='ignore'):
            lse = np.log(np.exp(z).sum(axis=self.dim, keepdims=True))
        z -= lse
        return z

    def forward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        indices = self._targets(x, y)
        logp = self._log_softmax(x)
        if indices:
            picked = np.take_along_axis(logp, np.expand_dims(y, self.dim), axis=self.dim)
            return -np.squeeze(picked, axis=self.dim)
        return -(y * logp).sum(axis=self.dim)

    def backward_impl(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        indices = self._targets(x, y)
        with np.errstate(under='ignore'):
            grad = np.exp(self._log_softmax(x))
        if indices:
            index = np.expand_dims(y, self.dim)
            picked = np.take_along_axis(grad, index, axis=self.dim)
            np.put_along_axis(grad, index, picked - 1, axis=self.dim)
            return grad
        grad *= y.sum(axis=self.dim, keepdims=True).astype(x.dtype, copy=False)
        grad -= y
        return grad


class MSE(Loss):
    """Squared error, averaged (or summed) over the axis `dim` per position.

    ``forward = mean_dim (x - y)^2`` ('mean') or ``sum_dim`` ('sum'), so the
    reduced loss equals torch's MSELoss: the mean over every element, or the
    sum. ``dL/dx = 2 (x - y) / x.size`` ('mean') or ``2 (x - y)`` ('sum').
    """

    def __init__(self, reduction: Reduction | str = Reduction.MEAN, name: str = 'MSE', dim: int = -1) -> None:
        super().__init__(reduction, name, dim)

    def _check(self, x: np.ndarray, y: np.ndarray) -> None:
        self.check_pair(x, y)
        if y.shape != x.shape:
            raise ValueError(f'MSE {self.name!r}: target expected shape {x.shape}, got {y.shape}')

    def forward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self._check(x, y)
        sq = np.square(x - y)
        return sq.mean(axis=self.dim) if self.reduction == Reduction.MEAN else sq.sum(axis=self.dim)

    def backward_impl(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self._check(x, y)
        grad = np.subtract(x, y, dtype=x.dtype)
        scale = 2.0 / x.shape[self.dim] if self.reduction == Reduction.MEAN else 2.0
        grad *= x.dtype.type(scale)
        return grad
