"""The layer contract beyond gradients: parameters, dtypes, errors, the empty cache, extremes, io."""

from __future__ import annotations

import importlib
import pickle
import warnings

import numpy as np
import pytest

import nn
from reference.registry import CASES, randomize

# --------------------------------------------------------------------------- compatibility
MODULES = ['layer', 'dense', 'activations', 'losses', 'loss_base', 'normalization', 'regularization',
           'attention', 'convolution', 'transformer', 'optimizers', 'initializers']


@pytest.mark.parametrize('module', MODULES)
def test_original_module_names_import(module):
    importlib.import_module(f'nn.{module}')


def test_import_nn_needs_no_torch():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; import nn; "
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]; print('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'ok'


# ------------------------------------------------------------------------------ parameters
def test_parameters_are_float32_by_default_and_keyed_by_name():
    dense = nn.Dense(3, 4, name='Dense2')
    assert set(dense.parameters()) == {'Dense2/W', 'Dense2/b'}
    assert all(v.dtype == np.float32 for v in dense.parameters().values())
    assert dense.parameters()['Dense2/W'].shape == (3, 4)


def test_parameters_returns_a_new_dict(rng):
    layer = nn.Sequential(nn.Dense(3, 4, name='A'), nn.LayerNorm(4, name='LN'))
    params = layer.parameters()
    params['junk'] = np.zeros(1)
    del params['A/W']
    assert set(layer.parameters()) == {'A/W', 'A/b', 'LN/scale', 'LN/shift'}


def test_update_parameters_is_all_or_nothing(rng):
    layer = nn.Sequential(nn.Dense(3, 4, name='A'), nn.Dense(4, 2, name='B'))
    before = {k: v.copy() for k, v in layer.parameters().items()}
    good = {k: rng.standard_normal(v.shape) for k, v in before.items()}
    for bad, error in [({**good, 'B/W': rng.standard_normal((2, 4))}, ValueError),    # transposed shape
                       ({k: v for k, v in good.items() if k != 'B/b'}, ValueError),      # missing key
                       ({**good, 'B/b': np.arange(2)}, TypeError)]:                       # integer values
        with pytest.raises(error, match="'B'"):
            layer.update_parameters(bad)
        for k, v in layer.parameters().items():
            np.testing.assert_array_equal(v, before[k])
    layer.update_parameters({**good, 'Other/W': np.zeros(3)})   # other layers' keys are ignored
    for k, v in layer.parameters().items():
        np.testing.assert_allclose(v, good[k].astype(np.float32))
        assert v.dtype == np.float32       # values take the layer's dtype; astype changes it


def test_astype_casts_recursively(rng):
    layer = nn.Sequential(nn.Dense(3, 4, name='A'), nn.LayerNorm(4, name='LN'))
    assert layer.astype(np.float64) is layer
    assert all(v.dtype == np.float64 for v in layer.parameters().values())
    with pytest.raises(TypeError, match='floating dtype'):
        layer.astype(np.int32)


def test_sequential_rejects_duplicate_keys():
    with pytest.raises(ValueError, match="'Dense/W' appears twice"):
        nn.Sequential(nn.Dense(2, 2), nn.Dense(2, 2))


def test_layer_used_twice_accumulates(rng):
    dense = randomize(nn.Dense(4, 4), rng).astype(np.float64)
    x = rng.standard_normal((3, 4))
    dy = rng.standard_normal((3, 4))
    y1, c1 = dense.forward(x)
    _, c2 = dense.forward(y1)
    grads: dict = {}
    dense.backward(x, c1, dense.backward(y1, c2, dy, grads), grads)
    W = dense.parameters()['Dense/W']
    expected = y1.T @ dy + x.T @ (dy @ W.T)
    np.testing.assert_allclose(grads['Dense/W'], expected, rtol=1e-12)


# ------------------------------------------------------------------------------ empty cache
def _no_kwargs_cases():
    return [c for c in CASES if not c.kwargs(np.random.default_rng(0), c.input(np.random.default_rng(0)))]


@pytest.mark.parametrize('case', _no_kwargs_cases(), ids=lambda c: c.id)
def test_backward_accepts_an_empty_cache(case, rng):
    layer, x, kwargs = case.make(rng, np.float64)
    case.prepare(layer)
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    g_cache, g_empty = {}, {}
    dx = layer.backward(x, cache, dy, g_cache)
    if isinstance(layer, nn.Dropout) and layer.training:
        with pytest.raises(ValueError, match='expected the cache from forward'):
            layer.backward(x, {}, dy, g_empty)
        return
    case.prepare(layer)
    dx_empty = layer.backward(x, {}, dy, g_empty)
    if np.issubdtype(x.dtype, np.floating):
        np.testing.assert_allclose(dx_empty, dx, rtol=1e-12, atol=1e-14)
    assert g_empty.keys() == g_cache.keys()
    for k in g_cache:
        np.testing.assert_allclose(g_empty[k], g_cache[k], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize('layer, x, error, words', [
    (nn.Dense(4, 3), np.zeros((2, 5), np.float32), ValueError, 'expected last dim 4, got shape (2, 5)'),
    (nn.Dense(4, 3), np.arange(8).reshape(2, 4), TypeError, 'expected a floating dtype, got int64'),
    (nn.Dense(4, 3), [[0.5, 1.5, 2.5, 3.5]], TypeError, 'expected a numpy array, got list'),
    (nn.LayerNorm(6), np.zeros((3, 5)), ValueError, 'expected last dim 6, got shape (3, 5)'),
    (nn.Softmax(dim=2), np.zeros((3, 5)), ValueError, 'dim 2 expected within rank'),
    (nn.ReLU(), np.arange(3), TypeError, 'expected a floating dtype'),
    (nn.Flatten(), np.float32(3.0), TypeError, 'numpy array'),
], ids=['dense-last-dim', 'dense-int', 'dense-list', 'layernorm-last-dim', 'softmax-dim', 'relu-int',
        'flatten-scalar'])
def test_bad_input_names_the_layer(layer, x, error, words):
    with pytest.raises(error) as info:
        layer.forward(x)
    message = str(info.value)
    assert type(layer).__name__ in message and words in message


@pytest.mark.parametrize('p', [-0.1, 1.5, float('nan'), '0.5'])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"Dropout 'Dropout': p expected a probability in \[0, 1\]"):
        nn.Dropout(p)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="GELU 'GELU': approximate expected 'none' or 'tanh', got 'fast'"):
        nn.GELU('fast')


# --------------------------------------------------------------------------------- dropout
def test_dropout_semantics(rng):
    x = rng.standard_normal((200, 50)).astype(np.float32)
    drop = nn.Dropout(0.3, seed=1)
    y, cache = drop.forward(x)
    kept = y != 0
    assert y.dtype == np.float32
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(nn.Dropout(0.3, seed=1)(x), y)           # seeded: reproducible
    assert not np.array_equal(drop(x), y)                                    # a new mask per call
    np.testing.assert_array_equal(nn.Dropout(0.3).eval()(x), x)             # eval: identity
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    np.testing.assert_array_equal(nn.Dropout(1.0)(x), np.zeros_like(x))     # p = 1: zeros, as torch


# -------------------------------------------------------------------------------- extremes
EXTREME = [nn.Sigmoid(), nn.Tanh(), nn.Softmax(), nn.Softmax(dim=0), nn.GELU(), nn.GELU('tanh'),
           nn.ReLU(), nn.LeakyReLU(0.1)]


@pytest.mark.parametrize('dtype', [np.float32, np.float64], ids=['float32', 'float64'])
@pytest.mark.parametrize('layer', EXTREME,
                         ids=lambda l: f'{type(l).__name__}-{getattr(l, "approximate", getattr(l, "dim", ""))}')
def test_extreme_inputs_are_finite_and_warning_free(layer, dtype, rng):
    import torch
    x = np.concatenate([np.linspace(-1e4, 1e4, 41), [-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4]])
    x = np.stack([x, rng.permutation(x)]).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(all='raise', under='ignore'), warnings.catch_warnings():
        warnings.simplefilter('error')
        y, cache = layer.forward(x)
        dx = layer.backward(x, cache, dy, {})
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    from reference.mirrors import torch_forward
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = torch_forward(layer, {}, xt)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol * np.abs(x).max() * 1e-3)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)


# -------------------------------------------------------------------------------------- io
def test_save_load_roundtrip(tmp_path, rng):
    model = randomize(nn.Sequential(nn.Dense(3, 5, name='A'), nn.LayerNorm(5, name='LN')), rng)
    path = tmp_path / 'params.npz'
    nn.save_parameters(path, model.parameters())
    fresh = nn.Sequential(nn.Dense(3, 5, name='A'), nn.LayerNorm(5, name='LN'))
    loaded = nn.load_parameters(path, fresh)
    assert set(loaded) == set(model.parameters())
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(fresh.parameters()[k], v)


@pytest.mark.parametrize('corrupt, error, words', [
    (lambda p: {k: v for k, v in p.items() if k != 'LN/shift'}, ValueError, "'LN/shift'"),
    (lambda p: {**p, 'A/W': np.zeros((5, 3), np.float32)}, ValueError, 'expected shape (3, 5), got (5, 3)'),
], ids=['missing-key', 'wrong-shape'])
def test_load_refuses_bad_files_and_changes_nothing(tmp_path, rng, corrupt, error, words):
    model = randomize(nn.Sequential(nn.Dense(3, 5, name='A'), nn.LayerNorm(5, name='LN')), rng)
    path = tmp_path / 'bad.npz'
    np.savez(path, **corrupt(model.parameters()))
    target = randomize(nn.Sequential(nn.Dense(3, 5, name='A'), nn.LayerNorm(5, name='LN')), rng)
    before = {k: v.copy() for k, v in target.parameters().items()}
    with pytest.raises(error) as info:
        nn.load_parameters(path, [target])
    assert words in str(info.value)
    for k, v in target.parameters().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / 'evil.npz'
    np.savez(path, **{'A/W': np.array([{'x': 1}], dtype=object)})
    with pytest.raises(ValueError, match='pickled'):
        nn.load_parameters(path)
    assert pickle  # the file above holds a pickle; np.load must not run it


def test_save_refuses_objects(tmp_path):
    with pytest.raises(TypeError, match='numeric numpy array'):
        nn.save_parameters(tmp_path / 'x.npz', {'A/W': np.array([None], dtype=object)})
