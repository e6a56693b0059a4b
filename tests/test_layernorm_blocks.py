"""LayerNorm's row blocks: forward and backward agree with torch however the rows are split.

LayerNorm runs its passes over blocks of rows (`nn.normalization._BLOCK_BYTES`
bytes each) so that they stay in cache, and its backward rebuilds the centred
rows from x and the cached (mean, rstd). The registry's cases are small enough
to fit in one block; here the block is shrunk so that the same small inputs
span many blocks, including a last, shorter one, and a block of one row. The
parameter gradients are summed across blocks, so a block dropped, repeated or
misaligned shows up in them as well as in dx.
"""

from __future__ import annotations

import numpy as np
import pytest

import nn
import nn.normalization
from reference import layout
from reference.registry import DEFAULT_TOL, randomize

torch = pytest.importorskip('torch')

pytestmark = pytest.mark.torch

SIZE = 24
SHAPE = (3, 11, SIZE)                         # 33 rows


def _torch_layer_norm(layer: nn.LayerNorm, x: np.ndarray, dy: np.ndarray):
    params = layout.params_to_torch(layer.parameters(), requires_grad=True)
    scale, shift = params['LayerNorm/scale'], params['LayerNorm/shift']
    xt = layout.to_torch(x, requires_grad=True)
    yt = torch.nn.functional.layer_norm(xt, (layer.size,), scale, shift, eps=layer.eps)
    grads = torch.autograd.grad(yt, (xt, scale, shift), layout.to_torch(dy))
    return [layout.to_numpy(t) for t in (yt, *grads)]


def _nn_layer_norm(layer: nn.LayerNorm, x: np.ndarray, dy: np.ndarray):
    y, cache = layer.forward(x)
    grads: dict[str, np.ndarray] = {}
    dx = layer.backward(x, cache, dy, grads)
    return [y, dx, grads['LayerNorm/scale'], grads['LayerNorm/shift']]


@pytest.mark.parametrize('dtype', [np.float64, np.float32], ids=['float64', 'float32'])
@pytest.mark.parametrize('rows_per_block', [1, 4, 7, 32, 33, 1000])
def test_blocks_match_torch(monkeypatch, rng, dtype, rows_per_block):
    monkeypatch.setattr(nn.normalization, '_BLOCK_BYTES', rows_per_block * SIZE * np.dtype(dtype).itemsize)
    layer = randomize(nn.LayerNorm(SIZE), rng).astype(dtype)
    x = (rng.standard_normal(SHAPE) * 1.7 + 0.4).astype(dtype)
    dy = rng.standard_normal(SHAPE).astype(dtype)
    tol = DEFAULT_TOL[np.dtype(dtype).name]
    for name, got, expected in zip(['y', 'dx', 'dscale', 'dshift'], _nn_layer_norm(layer, x, dy),
                                   _torch_layer_norm(layer, x, dy), strict=True):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got, expected, rtol=tol.rtol, atol=tol.atol, err_msg=name)


def test_block_split_changes_only_rounding(monkeypatch, rng):
    """Many blocks against one block, float64: the same numbers up to summation order."""
    layer = randomize(nn.LayerNorm(SIZE), rng).astype(np.float64)
    x, dy = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    one = _nn_layer_norm(layer, x, dy)
    monkeypatch.setattr(nn.normalization, '_BLOCK_BYTES', 5 * SIZE * 8)
    for got, expected in zip(_nn_layer_norm(layer, x, dy), one, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)


def test_large_mean_as_accurate_as_torch(rng):
    """Rows with |mean| = 1000 std: float32 keeps torch's accuracy.

    Both sides round x - mean at |x| = 1000 (ulp 6e-5, against a std of 1), so
    neither matches the exact result at the default tolerance; the check is that
    nn's error against the float64 result on the same float32 numbers is at most
    twice torch's. The one-pass variance ``mean(x**2) - mean**2`` would lose every
    digit here, and a dscale summed from uncentred ``dy * x`` fails this at ~6x torch's error.
    """
    shape = (4, 101, SIZE)          # one block of rows, enough that sums of uncentred terms would show
    layer = randomize(nn.LayerNorm(SIZE), rng).astype(np.float32)
    x = (rng.standard_normal(shape) + 1000.0).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    exact = _torch_layer_norm(layer.astype(np.float64), x.astype(np.float64), dy.astype(np.float64))
    layer.astype(np.float32)
    for name, got, torch32, want in zip(['y', 'dx', 'dscale', 'dshift'], _nn_layer_norm(layer, x, dy),
                                        _torch_layer_norm(layer, x, dy), exact, strict=True):
        ours, theirs = np.abs(got - want).max(), np.abs(torch32 - want).max()
        assert ours <= 2 * theirs + 1e-6 * np.abs(want).max(), f'{name}: error {ours:.2e}, torch float32 {theirs:.2e}'
