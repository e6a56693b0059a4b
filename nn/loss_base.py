"""The `Loss` base class: per-position losses and their reduction."""

from __future__ import annotations

import abc
import enum

import numpy as np


class Reduction(enum.Enum):
    """How per-position losses become one number."""
    MEAN = 'mean'
    SUM = 'sum'


class Loss(abc.ABC):
    """A loss L(x, y) of model output x and target y.

    ``forward(x, y)`` is the unreduced per-position loss (x's shape without the
    class axis `dim`), ``loss(x, y)`` the reduced scalar, and
    ``backward(x, y)`` dL/dx (x's shape and dtype) including the reduction.
    Subclasses implement `forward` and `backward_impl`, the gradient of the
    *sum* of per-position losses.
    """

    def __init__(self, reduction: Reduction | str = Reduction.MEAN, name: str = 'Loss', dim: int = -1) -> None:
        self.name = name
        try:
            self.reduction = Reduction(reduction)
        except ValueError:
            raise ValueError(f"{type(self).__name__} {name!r}: reduction expected 'mean' or 'sum', "
                             f'got {reduction!r}') from None
        self.dim = dim

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.float64:
        per_position = self.forward(x, y)
        total = per_position.sum(dtype=np.float64)
        if self.reduction == Reduction.MEAN:
            total /= max(per_position.size, 1)
        return np.float64(total)

    def backward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        grad = self.backward_impl(x, y)
        if self.reduction == Reduction.MEAN:
            grad *= grad.dtype.type(1.0 / self.num_positions(x))
        return grad

    def num_positions(self, x: np.ndarray) -> int:
        """How many per-position losses `forward` returns for x (the mean's divisor)."""
        return max(x.size // x.shape[self.dim], 1) if x.ndim else 1

    def check_pair(self, x: np.ndarray, y: np.ndarray) -> None:
        """x must be a floating array with a valid `dim`."""
        who = f'{type(self).__name__} {self.name!r}'
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f'{who}: x expected a floating numpy array, got '
                            f'{type(x).__name__} {getattr(x, "dtype", "")}')
        if not isinstance(y, np.ndarray):
            raise TypeError(f'{who}: target expected a numpy array, got {type(y).__name__}')
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f'{who}: dim {self.dim} expected within the rank of x, got shape {x.shape}')

    @abc.abstractmethod
    def forward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-position loss."""

    @abc.abstractmethod
    def backward_impl(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the sum of per-position losses with respect to x."""
