"""Property tests over random shapes for the shape-generic layers (hypothesis).

For any shape hypothesis draws, forward and backward match torch in float64, the
output keeps the input's dtype, and Softmax sums to one along any axis.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nn
from nn.gradcheck import assert_close
from reference import layout
from reference.mirrors import torch_forward
from reference.registry import randomize

pytestmark = pytest.mark.torch
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def _compare(layer, x, rng, rtol=1e-10, atol=1e-12):
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    grads: dict = {}
    dx = layer.backward(x, cache, dy, grads)
    params = layout.params_to_torch(layer.parameters())
    xt = layout.to_torch(x, requires_grad=True)
    yt = torch_forward(layer, params, xt)
    yt.backward(layout.to_torch(dy))
    context = f'{layer!r} on shape {x.shape}'
    assert_close('y', yt.detach().numpy(), y, rtol=rtol, atol=atol, context=context)
    assert_close('dx', xt.grad.numpy(), dx, rtol=rtol, atol=atol, context=context)
    for key, p in params.items():
        assert_close(key, p.grad.numpy(), grads[key], rtol=rtol, atol=atol, context=context)
    return y


@given(shape=shapes, out_dim=st.integers(1, 7), use_bias=st.booleans(), seed=seeds)
def test_dense_any_shape(shape, out_dim, use_bias, seed):
    rng = np.random.default_rng(seed)
    layer = randomize(nn.Dense(shape[-1], out_dim, use_bias=use_bias), rng).astype(np.float64)
    _compare(layer, rng.standard_normal(shape), rng)


@given(shape=shapes, kind=st.sampled_from(['Sigmoid', 'Tanh', 'GELU-none', 'GELU-tanh', 'ReLU', 'LeakyReLU']),
       scale=st.sampled_from([0.1, 1.0, 10.0]), seed=seeds)
def test_activations_any_shape(shape, kind, scale, seed):
    rng = np.random.default_rng(seed)
    name, _, variant = kind.partition('-')
    layer = getattr(nn, name)(variant) if variant else getattr(nn, name)()
    x = scale * rng.standard_normal(shape)
    x[np.abs(x) < 1e-3] = 0.5     # stay off the kink of ReLU/LeakyReLU (torch picks the same side anyway)
    _compare(layer, x, rng)


@given(shape=shapes, data=st.data(), seed=seeds)
def test_softmax_any_dim(shape, data, seed):
    rng = np.random.default_rng(seed)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label='dim')
    layer = nn.Softmax(dim=dim)
    y = _compare(layer, 3 * rng.standard_normal(shape), rng)
    np.testing.assert_allclose(y.sum(axis=dim), 1.0, rtol=1e-12)


@given(shape=shapes, eps=st.sampled_from([1e-5, 1e-3]), seed=seeds)
def test_layernorm_any_shape(shape, eps, seed):
    rng = np.random.default_rng(seed)
    layer = randomize(nn.LayerNorm(shape[-1], eps=eps), rng).astype(np.float64)
    # A last dim of 1 normalizes to exactly 0; cancellation then leaves ~1e-16 absolute noise.
    _compare(layer, 2 * rng.standard_normal(shape) + 1, rng, atol=1e-11)


@given(shape=shapes, kind=st.sampled_from(['Dense', 'LayerNorm', 'Softmax', 'GELU', 'Sigmoid']), seed=seeds)
def test_float32_stays_float32(shape, kind, seed):
    rng = np.random.default_rng(seed)
    layer = {'Dense': lambda: nn.Dense(shape[-1], 3), 'LayerNorm': lambda: nn.LayerNorm(shape[-1]),
             'Softmax': nn.Softmax, 'GELU': nn.GELU, 'Sigmoid': nn.Sigmoid}[kind]()
    randomize(layer, rng)
    x = rng.standard_normal(shape).astype(np.float32)
    y, cache = layer.forward(x)
    grads: dict = {}
    dx = layer.backward(x, cache, rng.standard_normal(y.shape).astype(np.float32), grads)
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
