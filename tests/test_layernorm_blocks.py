"""LayerNorm's row blocks: forward and backward agree with torch however the rows are split.

LayerNorm runs its passes over blocks of rows (`nn.normalization._block_rows`
rows each, from `_BLOCK_BYTES`) so that they stay in cache, and its backward
rebuilds the centred rows from x and the cached (mean, rstd). The registry's
cases are small enough to fit in one block; here the block is shrunk so that
the same cases span many blocks, including a last, shorter one, and blocks of
one row, and they go through the harness's own forward and backward checks
(torch mirror, the case's tolerances). The parameter gradients are summed
across blocks, so a block dropped, repeated or misaligned shows up in them as
well as in dx.
"""

from __future__ import annotations

import numpy as np
import pytest

import nn
import nn.normalization
from reference import checks, layout
from reference.mirrors import torch_forward
from reference.registry import CASES, randomize

torch = pytest.importorskip('torch')

pytestmark = pytest.mark.torch

LAYER_NORM_CASES = [case for case in CASES if case.layer is nn.LayerNorm]


def _split_rows(monkeypatch, rows: int) -> None:
    monkeypatch.setattr(nn.normalization, '_block_rows', lambda size, dtype: rows)


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
@pytest.mark.parametrize('rows_per_block', [1, 5, 1000])
@pytest.mark.parametrize('case', LAYER_NORM_CASES, ids=lambda c: c.id)
def test_blocks_match_torch(monkeypatch, case, rows_per_block, dtype):
    _split_rows(monkeypatch, rows_per_block)
    checks.check_forward(case, dtype)
    checks.check_backward(case, dtype)


def _nn_layer_norm(layer: nn.LayerNorm, x: np.ndarray, dy: np.ndarray) -> list[np.ndarray]:
    y, cache = layer.forward(x)
    grads: dict[str, np.ndarray] = {}
    dx = layer.backward(x, cache, dy, grads)
    return [y, dx, *(grads[key] for key in layer.parameters())]


def _torch_layer_norm(layer: nn.LayerNorm, x: np.ndarray, dy: np.ndarray) -> list[np.ndarray]:
    """Output, dx and the parameter gradients from the harness's torch mirror."""
    params = layout.params_to_torch(layer.parameters())
    x_t = layout.to_torch(x, requires_grad=True)
    y_t = torch_forward(layer, params, x_t)
    grads = torch.autograd.grad(y_t, (x_t, *params.values()), layout.to_torch(dy))
    return [layout.to_numpy(t) for t in (y_t, *grads)]


def test_block_split_changes_only_rounding(monkeypatch, rng):
    """Many blocks against one block, float64: the same numbers up to summation order."""
    layer = randomize(nn.LayerNorm(24), rng).astype(np.float64)
    x, dy = rng.standard_normal((3, 11, 24)), rng.standard_normal((3, 11, 24))
    one = _nn_layer_norm(layer, x, dy)
    _split_rows(monkeypatch, 5)
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
    shape = (4, 101, 24)            # one block of rows, enough that sums of uncentred terms would show
    layer = randomize(nn.LayerNorm(24), rng).astype(np.float32)
    x = (rng.standard_normal(shape) + 1000.0).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    exact = _torch_layer_norm(layer.astype(np.float64), x.astype(np.float64), dy.astype(np.float64))
    layer.astype(np.float32)
    for name, got, torch32, want in zip(['y', 'dx', 'dscale', 'dshift'], _nn_layer_norm(layer, x, dy),
                                        _torch_layer_norm(layer, x, dy), exact, strict=True):
        ours, theirs = np.abs(got - want).max(), np.abs(torch32 - want).max()
        # The 1e-6 term (float32 rounding of the largest value) only matters if torch happened to be exact.
        assert ours <= 2 * theirs + 1e-6 * np.abs(want).max(), f'{name}: error {ours:.2e}, torch float32 {theirs:.2e}'
