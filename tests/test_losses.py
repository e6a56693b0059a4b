"""Losses against torch: CrossEntropy (probabilities, one-hot, class indices; any dim) and MSE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nn
from nn.gradcheck import assert_close

pytestmark = pytest.mark.torch
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1.3e-6, atol=1e-5)}


def _torch_loss(fn, x, y, **kw):
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y)
    loss = fn(xt, yt, **kw)
    loss.backward()
    return loss.item(), xt.grad.numpy()


def _target(kind, rng, shape, dim, dtype):
    dim = dim % len(shape)
    n = shape[dim]
    if kind == 'indices':
        return rng.integers(0, n, size=shape[:dim] + shape[dim + 1:])
    if kind == 'one-hot':
        idx = rng.integers(0, n, size=shape[:dim] + shape[dim + 1:])
        return np.moveaxis(np.eye(n, dtype=dtype)[idx], -1, dim)
    p = rng.random(shape) + 0.1
    return (p / p.sum(axis=dim, keepdims=True)).astype(dtype)


@pytest.mark.parametrize('dtype', [np.float64, np.float32], ids=['float64', 'float32'])
@pytest.mark.parametrize('reduction', ['mean', 'sum'])
@pytest.mark.parametrize('kind', ['indices', 'one-hot', 'probabilities'])
@pytest.mark.parametrize('shape, dim', [((7, 5), -1), ((3, 5, 4), 1), ((4, 3, 6), -1), ((6, 4), 0)],
                         ids=['2d', 'classes-dim1', '3d-last', 'classes-dim0'])
def test_cross_entropy_matches_torch(rng, shape, dim, kind, reduction, dtype):
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    y = _target(kind, rng, shape, dim, dtype)
    loss_fn = nn.CrossEntropy(reduction=reduction, dim=dim)
    # torch puts the class axis at 1; move ours there for the reference.
    xt = np.moveaxis(x, dim, 1) if x.ndim > 1 else x
    yt = y if kind == 'indices' else np.moveaxis(y, dim, 1)
    if kind == 'indices':
        yt = np.asarray(y, dtype=np.int64)
    want_loss, want_grad = _torch_loss(F.cross_entropy, xt, yt, reduction=reduction)
    want_grad = np.moveaxis(want_grad, 1, dim)
    got = loss_fn.backward(x, y)
    assert got.dtype == dtype
    assert np.isclose(loss_fn(x, y), want_loss, rtol=TOL[dtype]['rtol'] * 10, atol=TOL[dtype]['atol'])
    assert_close('dx', want_grad, got, context=f'CrossEntropy {kind} {reduction} dim={dim}', **TOL[dtype])


@pytest.mark.parametrize('dtype', [np.float64, np.float32], ids=['float64', 'float32'])
@pytest.mark.parametrize('reduction', ['mean', 'sum'])
def test_mse_matches_torch(rng, reduction, dtype):
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    y = rng.standard_normal((4, 3, 5)).astype(dtype)
    loss_fn = nn.MSE(reduction=reduction)
    want_loss, want_grad = _torch_loss(F.mse_loss, x, y, reduction=reduction)
    got = loss_fn.backward(x, y)
    assert got.dtype == dtype
    assert np.isclose(loss_fn(x, y), want_loss, rtol=TOL[dtype]['rtol'] * 10, atol=TOL[dtype]['atol'])
    assert_close('dx', want_grad, got, context=f'MSE {reduction}', **TOL[dtype])
    assert loss_fn.forward(x, y).shape == (4, 3)


def test_cross_entropy_default_dim_is_last_axis(rng):
    """The original library defaulted to dim=0, which silently normalised over the batch."""
    x = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, size=6)
    assert nn.CrossEntropy().dim == -1
    want, _ = _torch_loss(F.cross_entropy, x, y)
    assert np.isclose(nn.CrossEntropy()(x, y), want, rtol=1e-12)


@pytest.mark.parametrize('dtype', [np.float64, np.float32], ids=['float64', 'float32'])
def test_cross_entropy_extreme_logits_finite_and_warning_free(rng, dtype):
    x = (1e4 * np.sign(rng.standard_normal((5, 7)))).astype(dtype)
    x[:, 0] = dtype(-1e4)
    y = rng.integers(0, 7, size=5)
    with np.errstate(all='raise', under='ignore'):
        loss = nn.CrossEntropy()(x, y)
        grad = nn.CrossEntropy().backward(x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    want, want_grad = _torch_loss(F.cross_entropy, x.astype(np.float64), y)
    assert np.isclose(loss, want, rtol=1e-6)
    assert_close('dx', want_grad, grad.astype(np.float64), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('bad, error, words', [
    (lambda rng: (rng.standard_normal((4, 5)), rng.integers(0, 5, size=3)), ValueError, 'expected shape (4,)'),
    (lambda rng: (rng.standard_normal((4, 5)), rng.standard_normal((4, 6))), ValueError, 'expected shape (4, 5)'),
    (lambda rng: (rng.standard_normal((4, 5)), np.array([0, 1, 5, 2])), ValueError, 'class indices'),
    (lambda rng: (rng.integers(0, 3, size=(4, 5)), rng.integers(0, 5, size=4)), TypeError, 'floating'),
    (lambda rng: (rng.standard_normal((4, 5)), np.array(['a'] * 4)), TypeError, 'dtype'),
], ids=['index-shape', 'prob-shape', 'index-range', 'int-logits', 'string-target'])
def test_cross_entropy_bad_input(rng, bad, error, words):
    x, y = bad(rng)
    with pytest.raises(error, match='CrossEntropy') as info:
        nn.CrossEntropy()(x, y)
    assert words in str(info.value)


def test_mse_bad_input(rng):
    with pytest.raises(ValueError, match=r"MSE 'MSE': target expected shape \(3, 4\), got \(3, 5\)"):
        nn.MSE()(rng.standard_normal((3, 4)), rng.standard_normal((3, 5)))


@pytest.mark.parametrize('loss_cls', [nn.CrossEntropy, nn.MSE])
def test_unknown_reduction_is_rejected(loss_cls):
    with pytest.raises(ValueError, match=f"{loss_cls.__name__} .*reduction expected 'mean' or 'sum', got 'max'"):
        loss_cls(reduction='max')


def test_reduction_enum_and_strings_agree(rng):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert nn.MSE(nn.Reduction.SUM)(x, y) == nn.MSE('sum')(x, y)
    assert nn.loss_base.Reduction('mean') is nn.Reduction.MEAN
