"""Cases for Conv1D, Conv2D, MaxPool2D, AvgPool2D, BatchNorm2D and Embedding.

Coverage the issue asks for: kernels 1, 3, 4 (and 5, and a 2x3 one); strides 1, 2
(and 3); padding 0, 1, 2; dilation 1 and 2; non-square images and kernels that
do not divide the input; use_bias=False; a batch of one. MaxPool inputs have one
maximum per window (distinct values, far apart compared with the
finite-difference step), and two tie cases pin torch's choice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import nn
from reference.registry import Case, Tol, normal, randomize

BATCH_OF_ONE = 'a batch of one sample has no other sample to leave unchanged'
TIES_ARE_KINKS = ('the input has exact ties inside windows: max is not differentiable there, '
                  'so finite differences disagree with any one-sided choice (forward and backward '
                  'vs torch pin the choice)')


def distinct(*shape: int, gap: float = 0.05) -> Callable[[np.random.Generator], np.ndarray]:
    """Input factory for max-pooling: all values distinct, at least `gap` apart, in random order,
    so every window has a unique maximum that a finite-difference step cannot overtake."""
    def make(rng: np.random.Generator) -> np.ndarray:
        n = int(np.prod(shape))
        values = (rng.permutation(n) - n / 2) * gap
        return (values + rng.uniform(0, gap / 4, n)).reshape(shape)
    return make


def ties(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    """Input factory with many exact ties: small integers (negative ones too, against the -inf padding)."""
    return lambda rng: rng.integers(-2, 3, shape).astype(np.float64)


def shifted(*shape: int, loc: float = 1.5, scale: float = 2.0) -> Callable[[np.random.Generator], np.ndarray]:
    """Input factory for batch norm: per-channel means and spreads far from 0 and 1."""
    def make(rng: np.random.Generator) -> np.ndarray:
        channels = shape[-1]
        return (loc * rng.standard_normal(channels)
                + scale * rng.uniform(0.5, 1.5, channels) * rng.standard_normal(shape))
    return make


def ids(num_embeddings: int, *shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: rng.integers(0, num_embeddings, shape)


def bn_eval(rng: np.random.Generator) -> nn.BatchNorm2D:
    layer = randomize(nn.BatchNorm2D(5, eps=1e-3, name='BNEval'), rng)
    layer.running_mean = rng.standard_normal(5).astype(np.float32)
    layer.running_var = rng.uniform(0.3, 3.0, 5).astype(np.float32)
    return layer.eval()


CASES = [
    # Conv2D: x [B, H, W, Cin], W (Kh, Kw, Cin, Cout).
    Case('k3-s1-p1', nn.Conv2D, lambda rng: randomize(nn.Conv2D(3, 4, 3), rng), normal(2, 5, 7, 3)),
    Case('k3-s2-p1-odd', nn.Conv2D, lambda rng: randomize(nn.Conv2D(2, 5, 3, stride=2), rng),
         normal(3, 7, 6, 2)),
    Case('k4-s2-p2', nn.Conv2D, lambda rng: randomize(nn.Conv2D(3, 4, 4, stride=2, padding=2), rng),
         normal(2, 9, 6, 3)),
    Case('k4-s1-p0', nn.Conv2D, lambda rng: randomize(nn.Conv2D(2, 3, 4, padding=0), rng), normal(2, 6, 7, 2)),
    Case('k3-d2-p2', nn.Conv2D, lambda rng: randomize(nn.Conv2D(2, 3, 3, padding=2, dilation=2), rng),
         normal(2, 8, 7, 2)),
    Case('k3-s2-p0-d2-no-bias', nn.Conv2D,
         lambda rng: randomize(nn.Conv2D(3, 2, 3, stride=2, padding=0, dilation=2, use_bias=False), rng),
         normal(2, 9, 11, 3)),
    Case('k1-p0-no-bias', nn.Conv2D, lambda rng: randomize(nn.Conv2D(6, 4, 1, padding=0, use_bias=False), rng),
         normal(3, 4, 5, 6)),
    Case('k2x3-s2x1-p1x0', nn.Conv2D,
         lambda rng: randomize(nn.Conv2D(3, 4, (2, 3), stride=(2, 1), padding=(1, 0), name='Conv2DRect'), rng),
         normal(2, 7, 6, 3)),
    # Cin == Cout: a missing transpose of W[i, j] would still have the right shape.
    Case('batch1-k3-p1', nn.Conv2D, lambda rng: randomize(nn.Conv2D(3, 3, 3), rng), normal(1, 6, 5, 3),
         skips={'batch_independence': BATCH_OF_ONE}),

    # Conv1D: x [B, T, Cin], W (K, Cin, Cout).
    Case('k3-p1', nn.Conv1D, lambda rng: randomize(nn.Conv1D(4, 5), rng), normal(3, 11, 4)),
    Case('k4-s2-p2', nn.Conv1D, lambda rng: randomize(nn.Conv1D(3, 4, 4, stride=2, padding=2), rng),
         normal(2, 13, 3)),
    Case('k3-d2-p2-no-bias', nn.Conv1D,
         lambda rng: randomize(nn.Conv1D(3, 3, 3, padding=2, dilation=2, use_bias=False), rng), normal(2, 10, 3)),
    Case('k1-p0', nn.Conv1D, lambda rng: randomize(nn.Conv1D(5, 2, 1, padding=0), rng), normal(2, 7, 5)),
    Case('k5-s3-p0', nn.Conv1D, lambda rng: randomize(nn.Conv1D(2, 3, 5, stride=3, padding=0), rng),
         normal(2, 14, 2)),
    Case('batch1-k3', nn.Conv1D, lambda rng: randomize(nn.Conv1D(3, 3, 3, name='Conv1DB1'), rng), normal(1, 9, 3),
         skips={'batch_independence': BATCH_OF_ONE}),

    # MaxPool2D: distinct inputs, so the max of every window is unique (no kinks).
    Case('k2', nn.MaxPool2D, lambda rng: nn.MaxPool2D(2), distinct(2, 6, 8, 3)),
    Case('k2-odd', nn.MaxPool2D, lambda rng: nn.MaxPool2D(2), distinct(2, 7, 5, 3)),
    Case('k3-s2-p1', nn.MaxPool2D, lambda rng: nn.MaxPool2D(3, stride=2, padding=1), distinct(2, 7, 9, 2)),
    Case('k3-s1', nn.MaxPool2D, lambda rng: nn.MaxPool2D(3, stride=1), distinct(2, 6, 5, 3)),
    Case('k4-s2-p2', nn.MaxPool2D, lambda rng: nn.MaxPool2D(4, stride=2, padding=2), distinct(2, 9, 6, 2)),
    Case('k2x3-s1x2-p1', nn.MaxPool2D, lambda rng: nn.MaxPool2D((2, 3), stride=(1, 2), padding=1),
         distinct(2, 5, 7, 2)),
    Case('batch1-k2', nn.MaxPool2D, lambda rng: nn.MaxPool2D(2), distinct(1, 6, 6, 2),
         skips={'batch_independence': BATCH_OF_ONE}),
    # Exact ties: torch gives the gradient to the first maximum in row-major window order.
    # Disjoint windows make forward and backward pure selections, so they must match torch exactly.
    Case('ties-k2', nn.MaxPool2D, lambda rng: nn.MaxPool2D(2), ties(3, 6, 8, 4),
         tol={'float64': Tol(rtol=0.0, atol=0.0), 'float32': Tol(rtol=0.0, atol=0.0)},
         skips={'finite_differences': TIES_ARE_KINKS, 'gradcheck': TIES_ARE_KINKS}),
    Case('ties-k3-s2-p1', nn.MaxPool2D, lambda rng: nn.MaxPool2D(3, stride=2, padding=1), ties(2, 7, 6, 3),
         skips={'finite_differences': TIES_ARE_KINKS, 'gradcheck': TIES_ARE_KINKS}),

    # AvgPool2D: padding counts in the divisor (count_include_pad=True).
    Case('k2', nn.AvgPool2D, lambda rng: nn.AvgPool2D(2), normal(2, 6, 8, 3)),
    Case('k3-s2-p1', nn.AvgPool2D, lambda rng: nn.AvgPool2D(3, stride=2, padding=1), normal(2, 7, 9, 2)),
    Case('k3-s1', nn.AvgPool2D, lambda rng: nn.AvgPool2D(3, stride=1), normal(2, 6, 5, 3)),
    Case('k4-s3-p2', nn.AvgPool2D, lambda rng: nn.AvgPool2D(4, stride=3, padding=2), normal(2, 9, 7, 2)),
    Case('k2x3-s1x2-p1', nn.AvgPool2D, lambda rng: nn.AvgPool2D((2, 3), stride=(1, 2), padding=1),
         normal(2, 5, 7, 2)),

    # BatchNorm2D: training couples the samples through the batch statistics.
    Case('train', nn.BatchNorm2D, lambda rng: randomize(nn.BatchNorm2D(6), rng), shifted(4, 5, 3, 6),
         batch_independent=False),
    Case('train-eps-momentum', nn.BatchNorm2D,
         lambda rng: randomize(nn.BatchNorm2D(5, eps=1e-3, momentum=0.3, name='BN'), rng), shifted(3, 4, 6, 5),
         batch_independent=False),
    Case('train-batch1', nn.BatchNorm2D, lambda rng: randomize(nn.BatchNorm2D(3), rng), shifted(1, 4, 5, 3),
         batch_independent=False),
    Case('eval', nn.BatchNorm2D, bn_eval, shifted(3, 4, 5, 5), mode='eval'),

    # Embedding: integer ids (no dx); repeated ids accumulate into the same row of dW.
    Case('2d', nn.Embedding, lambda rng: randomize(nn.Embedding(11, 6), rng), ids(11, 3, 5)),
    Case('repeated-ids', nn.Embedding, lambda rng: randomize(nn.Embedding(4, 7, name='Tok'), rng), ids(4, 6, 9)),
    Case('3d', nn.Embedding, lambda rng: randomize(nn.Embedding(9, 5), rng), ids(9, 2, 3, 4)),
]
