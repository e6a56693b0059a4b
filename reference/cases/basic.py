"""Cases for Dense, the activations, Softmax, LayerNorm, Dropout and the containers."""

from __future__ import annotations

import numpy as np

import nn
from reference.registry import Case, away_from_zero, normal, randomize


def reseed(seed: int):
    """before_forward for stochastic layers: every forward draws the same mask."""
    def reset(layer: nn.Layer) -> None:
        for sub in layer.layers():
            if isinstance(sub, nn.Dropout):
                sub.rng = np.random.default_rng(seed)
    return reset


CASES = [
    # Dense: leading dims folded, odd shapes; a square weight makes a missing transpose visible.
    Case('3d', nn.Dense, lambda rng: randomize(nn.Dense(7, 4), rng), normal(3, 5, 7)),
    Case('2d-wide', nn.Dense, lambda rng: randomize(nn.Dense(5, 9), rng), normal(6, 5)),
    Case('square-no-bias', nn.Dense, lambda rng: randomize(nn.Dense(6, 6, use_bias=False), rng), normal(4, 6)),
    Case('4d', nn.Dense, lambda rng: randomize(nn.Dense(3, 5, name='Dense2'), rng), normal(2, 3, 2, 3)),

    # Kinked activations get inputs away from the kink.
    Case('3d', nn.ReLU, lambda rng: nn.ReLU(), away_from_zero(4, 3, 5)),
    Case('slope-0.2', nn.LeakyReLU, lambda rng: nn.LeakyReLU(0.2), away_from_zero(5, 7)),
    Case('3d', nn.Sigmoid, lambda rng: nn.Sigmoid(), normal(3, 4, 5, scale=2.0)),
    Case('2d', nn.Tanh, lambda rng: nn.Tanh(), normal(5, 7, scale=1.5)),
    Case('erf', nn.GELU, lambda rng: nn.GELU(), normal(3, 4, 5, scale=2.0)),
    Case('tanh', nn.GELU, lambda rng: nn.GELU('tanh'), normal(4, 7, scale=2.0)),

    Case('last-dim', nn.Softmax, lambda rng: nn.Softmax(), normal(3, 4, 5, scale=2.0)),
    Case('dim1', nn.Softmax, lambda rng: nn.Softmax(dim=1), normal(3, 6, 5, scale=2.0)),
    Case('dim0', nn.Softmax, lambda rng: nn.Softmax(dim=0), normal(5, 3, 2, scale=2.0),
         batch_independent=False),   # normalizes across the batch axis itself

    Case('3d', nn.LayerNorm, lambda rng: randomize(nn.LayerNorm(7), rng), normal(3, 4, 7, scale=2.0)),
    Case('2d-eps', nn.LayerNorm, lambda rng: randomize(nn.LayerNorm(6, eps=1e-3, name='LN'), rng),
         normal(5, 6)),

    Case('train-p0.3', nn.Dropout, lambda rng: nn.Dropout(0.3, seed=3), normal(4, 5, 7), before_forward=reseed(11)),
    Case('train-p0.7', nn.Dropout, lambda rng: nn.Dropout(0.7), normal(6, 5), before_forward=reseed(5)),
    Case('eval', nn.Dropout, lambda rng: nn.Dropout(0.5), normal(3, 7), mode='eval'),

    Case('4d', nn.Flatten, lambda rng: nn.Flatten(), normal(3, 4, 5, 2)),
    Case('mlp', nn.Sequential,
         lambda rng: randomize(nn.Sequential(nn.Dense(5, 8, name='D1'), nn.Tanh(), nn.LayerNorm(8),
                                             nn.Dense(8, 3, name='D2')), rng),
         normal(4, 5)),
]
