"""Parameter initializers.

Each takes the fans and the shape and returns a float32 array (pass `dtype` to
change it) drawn from `rng` (a `np.random.Generator`; NumPy's global generator
when omitted, as the original library did). Definitions follow torch.nn.init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _uniform(bound: float, shape: Sequence[int], rng: np.random.Generator | None, dtype) -> np.ndarray:
    draw = np.random.uniform if rng is None else rng.uniform
    return np.asarray(draw(-bound, bound, size=tuple(shape)), dtype=dtype)


def _normal(std: float, shape: Sequence[int], rng: np.random.Generator | None, dtype) -> np.ndarray:
    draw = np.random.normal if rng is None else rng.normal
    return np.asarray(draw(0.0, std, size=tuple(shape)), dtype=dtype)


def xavier_uniform(fan_in: int, fan_out: int, shape: Sequence[int], *,
                   gain: float = 1.0, rng: np.random.Generator | None = None,
                   dtype=np.float32) -> np.ndarray:
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    return _uniform(gain * math.sqrt(6.0 / (fan_in + fan_out)), shape, rng, dtype)


def xavier_normal(fan_in: int, fan_out: int, shape: Sequence[int], *,
                  gain: float = 1.0, rng: np.random.Generator | None = None,
                  dtype=np.float32) -> np.ndarray:
    """Glorot normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    return _normal(gain * math.sqrt(2.0 / (fan_in + fan_out)), shape, rng, dtype)


def kaiming_uniform(fan_in: int, shape: Sequence[int], *, gain: float = math.sqrt(2.0),
                    rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """He uniform: U(-a, a) with a = gain * sqrt(3 / fan_in) (gain sqrt(2) suits ReLU)."""
    return _uniform(gain * math.sqrt(3.0 / fan_in), shape, rng, dtype)


def kaiming_normal(fan_in: int, shape: Sequence[int], *, gain: float = math.sqrt(2.0),
                   rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """He normal: N(0, std^2) with std = gain / sqrt(fan_in)."""
    return _normal(gain / math.sqrt(fan_in), shape, rng, dtype)


def zeros(shape: Sequence[int], *, dtype=np.float32) -> np.ndarray:
    """All zeros (biases)."""
    return np.zeros(tuple(shape), dtype=dtype)


def ones(shape: Sequence[int], *, dtype=np.float32) -> np.ndarray:
    """All ones (normalization scales)."""
    return np.ones(tuple(shape), dtype=dtype)
