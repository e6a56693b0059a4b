"""Convolution, pooling, batch-norm and embedding checks the generic harness cannot express.

- output sizes (and values) vs torch over a grid of configurations, including ones torch rejects;
- BatchNorm2D running statistics vs torch.nn.BatchNorm2d over several steps, then eval mode;
  no second update from a backward with an empty cache; buffers are not parameters;
- Embedding: repeated ids accumulate, bad ids are refused without changing anything;
- MaxPool2D ties, NaN and all -inf windows, as torch decides them;
- bad input raises errors naming the layer and changes no state;
- Conv2D peak memory: one im2col buffer beyond its results, plus O(1)-sized temporaries (stride 1 and 2);
- benchmarks (pytest-benchmark, skipped unless --benchmark-only): the issue's three shapes, nn and torch
  side by side in one group each.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

import nn
from reference import layout
from reference.registry import randomize

torch = pytest.importorskip('torch')
F = torch.nn.functional

pytestmark = pytest.mark.torch


def _rand_params(layer: nn.Layer, rng: np.random.Generator) -> nn.Layer:
    return randomize(layer, rng).astype(np.float64)


# ------------------------------------------------------------------------- output sizes vs torch
CONV2D_GRID = list(itertools.product([(5, 7), (8, 6)], [1, 2, 3, 4, (2, 3)], [1, 2, 3], [0, 1, 2], [1, 2]))


def _check_against_torch(layer, x, torch_conv, to_torch_weight, config):
    """Output size and values of a channels-last conv vs torch's; a config torch rejects must be
    rejected by the layer too, with a clear error."""
    name = type(layer).__name__
    params = layer.parameters()
    weight = to_torch_weight(layout.to_torch(params[f'{name}/W']))
    try:
        expected = torch_conv(layout.channels_first(layout.to_torch(x)), weight,
                              layout.to_torch(params[f'{name}/b']), **config)
    except RuntimeError:
        with pytest.raises(ValueError, match=rf"{name} '{name}': input expected spatial size"):
            layer(x)
        return
    y = layer(x)
    assert y.shape == tuple(layout.channels_last(expected).shape)
    np.testing.assert_allclose(y, layout.to_numpy(layout.channels_last(expected)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('hw, kernel, stride, padding, dilation', CONV2D_GRID,
                         ids=[f'{h}x{w}-k{k}-s{s}-p{p}-d{d}' for (h, w), k, s, p, d in CONV2D_GRID])
def test_conv2d_output_size_and_values_match_torch(hw, kernel, stride, padding, dilation, rng):
    layer = _rand_params(nn.Conv2D(3, 2, kernel, stride=stride, padding=padding, dilation=dilation), rng)
    _check_against_torch(layer, rng.standard_normal((2, *hw, 3)), F.conv2d, layout.conv2d_weight,
                         dict(stride=stride, padding=padding, dilation=dilation))


CONV1D_GRID = list(itertools.product([5, 9, 12], [1, 3, 4, 5], [1, 2, 3], [0, 1, 2], [1, 2]))


@pytest.mark.parametrize('t, kernel, stride, padding, dilation', CONV1D_GRID,
                         ids=[f'T{t}-k{k}-s{s}-p{p}-d{d}' for t, k, s, p, d in CONV1D_GRID])
def test_conv1d_output_size_and_values_match_torch(t, kernel, stride, padding, dilation, rng):
    layer = _rand_params(nn.Conv1D(2, 3, kernel, stride=stride, padding=padding, dilation=dilation), rng)
    _check_against_torch(layer, rng.standard_normal((2, t, 2)), F.conv1d, layout.conv1d_weight,
                         dict(stride=stride, padding=padding, dilation=dilation))


POOL_GRID = list(itertools.product(['max', 'avg'], [(5, 7), (8, 6)], [1, 2, 3, 4, (2, 3)],
                                   [None, 1, 2, 3, (1, 2)], [0, 1, 2]))


@pytest.mark.parametrize('kind, hw, kernel, stride, padding', POOL_GRID,
                         ids=[f'{kind}-{h}x{w}-k{k}-s{s}-p{p}' for kind, (h, w), k, s, p in POOL_GRID])
def test_pool_output_size_and_values_match_torch(kind, hw, kernel, stride, padding, rng):
    cls, fn = (nn.MaxPool2D, F.max_pool2d) if kind == 'max' else (nn.AvgPool2D, F.avg_pool2d)
    x = rng.standard_normal((2, *hw, 3))
    x_cf = layout.channels_first(layout.to_torch(x))
    try:
        expected = fn(x_cf, kernel, stride, padding)
    except RuntimeError:
        with pytest.raises(ValueError, match=f"{cls.__name__} '{cls.__name__}': "):
            cls(kernel, stride, padding)(x)
        return
    y = cls(kernel, stride, padding)(x)
    assert y.shape == tuple(layout.channels_last(expected).shape)
    np.testing.assert_allclose(y, layout.to_numpy(layout.channels_last(expected)), rtol=1e-12, atol=1e-14)


def test_conv1d_is_conv2d_on_a_single_row(rng):
    conv1 = _rand_params(nn.Conv1D(3, 4, 4, stride=2, padding=2, dilation=2), rng)
    conv2 = nn.Conv2D(3, 4, (1, 4), stride=(1, 2), padding=(0, 2), dilation=(1, 2), name='Conv1D').astype(np.float64)
    params = conv1.parameters()
    conv2.update_parameters({'Conv1D/W': params['Conv1D/W'][None], 'Conv1D/b': params['Conv1D/b']})
    x = rng.standard_normal((3, 13, 3))
    y1, c1 = conv1.forward(x)
    y2, c2 = conv2.forward(x[:, None])
    np.testing.assert_allclose(y1, y2[:, 0], rtol=1e-13)
    dy = rng.standard_normal(y1.shape)
    g1, g2 = {}, {}
    np.testing.assert_allclose(conv1.backward(x, c1, dy, g1), conv2.backward(x[:, None], c2, dy[:, None], g2)[:, 0],
                               rtol=1e-13)
    np.testing.assert_allclose(g1['Conv1D/W'], g2['Conv1D/W'][0], rtol=1e-13)


@pytest.mark.parametrize('layer', [nn.Conv2D(3, 4, 3, stride=2), nn.MaxPool2D(3, 2, 1), nn.AvgPool2D(2),
                                   nn.BatchNorm2D(3)], ids=lambda l: type(l).__name__)
def test_non_contiguous_input_gives_the_same_result(layer, rng):
    randomize(layer, rng).astype(np.float64)
    base = rng.standard_normal((2, 7, 9, 3))
    strided = np.swapaxes(np.swapaxes(base, 1, 2).copy(), 1, 2)     # same values, transposed strides
    assert not strided.flags.c_contiguous
    y1, c1 = layer.forward(base)
    y2, c2 = layer.forward(strided)
    np.testing.assert_allclose(y2, y1, rtol=1e-13, atol=1e-15)
    dy = rng.standard_normal(y1.shape)
    g1, g2 = {}, {}
    np.testing.assert_allclose(layer.backward(strided, c2, dy, g2), layer.backward(base, c1, dy, g1),
                               rtol=1e-13, atol=1e-15)
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=1e-13)


@pytest.mark.parametrize('layer, shape', [
    (nn.Conv2D(3, 4, 3), (0, 5, 6, 3)), (nn.Conv2D(3, 4, 3, stride=2), (0, 5, 6, 3)), (nn.Conv1D(3, 4), (0, 7, 3)),
    (nn.MaxPool2D(2), (0, 4, 5, 2)), (nn.AvgPool2D(3, 2, 1), (0, 4, 5, 2)),
], ids=['conv2d', 'conv2d-s2', 'conv1d', 'maxpool', 'avgpool'])
def test_empty_batch_gives_empty_outputs_and_zero_gradients(layer, shape, rng):
    randomize(layer, rng)
    x = np.zeros(shape, np.float32)
    y, cache = layer.forward(x)
    mirror = {nn.Conv2D: lambda t: F.conv2d(t, torch.zeros(4, 3, 3, 3), stride=layer.stride[0], padding=1),
              nn.Conv1D: lambda t: F.conv1d(t, torch.zeros(4, 3, 3), padding=1),
              nn.MaxPool2D: lambda t: F.max_pool2d(t, 2), nn.AvgPool2D: lambda t: F.avg_pool2d(t, 3, 2, 1)}
    expected = layout.channels_last(mirror[type(layer)](layout.channels_first(torch.zeros(shape))))
    assert y.shape == tuple(expected.shape) and y.dtype == np.float32
    grads: dict = {}
    dx = layer.backward(x, cache, np.zeros(y.shape, np.float32), grads)
    assert dx.shape == shape and dx.dtype == np.float32
    for key, value in layer.parameters().items():
        np.testing.assert_array_equal(grads[key], np.zeros_like(value))


# ------------------------------------------------------------------------------ BatchNorm2D
@pytest.mark.parametrize('dtype', [np.float64, np.float32], ids=['float64', 'float32'])
def test_batchnorm_running_statistics_follow_torch_then_eval(dtype, rng):
    C, momentum, eps = 5, 0.3, 1e-3
    layer = randomize(nn.BatchNorm2D(C, eps=eps, momentum=momentum), rng).astype(dtype)
    ref = torch.nn.BatchNorm2d(C, eps=eps, momentum=momentum).to(layout.to_torch(np.zeros(1, dtype)).dtype)
    with torch.no_grad():
        ref.weight.copy_(layout.to_torch(layer.parameters()['BatchNorm2D/scale']))
        ref.bias.copy_(layout.to_torch(layer.parameters()['BatchNorm2D/shift']))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
    for step in range(4):
        # Batches of different sizes and statistics, so the unbiased N/(N-1) factor varies.
        x = (3.0 + 2.0 * step + (1 + step) * rng.standard_normal((2 + step, 4, 3, C))).astype(dtype)
        y = layer(x)
        y_ref = layout.channels_last(ref(layout.channels_first(layout.to_torch(x))))
        np.testing.assert_allclose(y, layout.to_numpy(y_ref), **tol, err_msg=f'training output, step {step}')
        np.testing.assert_allclose(layer.running_mean, layout.to_numpy(ref.running_mean), **tol,
                                   err_msg=f'running_mean after step {step}')
        np.testing.assert_allclose(layer.running_var, layout.to_numpy(ref.running_var), **tol,
                                   err_msg=f'running_var after step {step}')
        assert layer.num_batches_tracked == int(ref.num_batches_tracked) == step + 1
    assert layer.running_mean.dtype == dtype and layer.running_var.dtype == dtype
    layer.eval()
    ref.eval()
    x = (5 + 3 * rng.standard_normal((3, 2, 5, C))).astype(dtype)
    before = (layer.running_mean.copy(), layer.running_var.copy())
    y, cache = layer.forward(x)
    np.testing.assert_allclose(y, layout.to_numpy(layout.channels_last(ref(layout.channels_first(layout.to_torch(x))))),
                               **tol)
    assert y.dtype == dtype
    np.testing.assert_array_equal(layer.running_mean, before[0])     # eval never updates them
    np.testing.assert_array_equal(layer.running_var, before[1])


def test_batchnorm_backward_with_empty_cache_does_not_update_running_stats_again(rng):
    layer = randomize(nn.BatchNorm2D(4), rng).astype(np.float64)
    x = 2 + rng.standard_normal((3, 4, 5, 4))
    y, cache = layer.forward(x)
    after_forward = (layer.running_mean.copy(), layer.running_var.copy(), layer.num_batches_tracked)
    dy = rng.standard_normal(y.shape)
    g_cache, g_empty = {}, {}
    dx = layer.backward(x, cache, dy, g_cache)
    dx_empty = layer.backward(x, {}, dy, g_empty)
    np.testing.assert_allclose(dx_empty, dx, rtol=1e-13, atol=1e-15)
    for key in g_cache:
        np.testing.assert_allclose(g_empty[key], g_cache[key], rtol=1e-13)
    np.testing.assert_array_equal(layer.running_mean, after_forward[0])
    np.testing.assert_array_equal(layer.running_var, after_forward[1])
    assert layer.num_batches_tracked == after_forward[2]


def test_batchnorm_running_stats_are_buffers_not_parameters(rng):
    layer = nn.BatchNorm2D(3, name='BN')
    assert set(layer.parameters()) == {'BN/scale', 'BN/shift'}
    x = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    _, cache = layer.forward(x)
    grads: dict = {}
    layer.backward(x, cache, rng.standard_normal(x.shape).astype(np.float32), grads)
    assert set(grads) == {'BN/scale', 'BN/shift'}
    assert layer.running_mean.dtype == np.float32 and not np.all(layer.running_mean == 0)


def test_batchnorm_eval_mode_uses_running_stats_and_backward_is_affine(rng):
    layer = randomize(nn.BatchNorm2D(3, eps=1e-4), rng).astype(np.float64).eval()
    layer.running_mean = rng.standard_normal(3)
    layer.running_var = rng.uniform(0.5, 2.0, 3)
    x = rng.standard_normal((2, 4, 3, 3))
    y, cache = layer.forward(x)
    scale, shift = layer.parameters()['BatchNorm2D/scale'], layer.parameters()['BatchNorm2D/shift']
    k = scale / np.sqrt(layer.running_var + 1e-4)
    np.testing.assert_allclose(y, (x - layer.running_mean) * k + shift, rtol=1e-13)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(x, cache, dy, {}), dy * k, rtol=1e-13)
    # One sample alone gives the same output in eval mode (no batch statistics).
    np.testing.assert_allclose(layer(x[:1]), y[:1], rtol=1e-13)


def test_batchnorm_refuses_one_value_per_channel_in_training(rng):
    layer = nn.BatchNorm2D(3)
    with pytest.raises(ValueError, match=r"BatchNorm2D 'BatchNorm2D': training expected more than 1 value per "
                                         r"channel \(B\*H\*W > 1\), got input shape \(1, 1, 1, 3\)"):
        layer.forward(np.ones((1, 1, 1, 3), np.float32) * rng.standard_normal(3).astype(np.float32))
    assert layer.num_batches_tracked == 0 and np.all(layer.running_mean == 0) and np.all(layer.running_var == 1)
    layer.eval()
    assert layer(rng.standard_normal((1, 1, 1, 3)).astype(np.float32)).shape == (1, 1, 1, 3)


# -------------------------------------------------------------------------------- Embedding
def test_embedding_repeated_ids_accumulate(rng):
    layer = randomize(nn.Embedding(6, 4), rng).astype(np.float64)
    x = np.array([[1, 4, 1, 1], [0, 4, 5, 1]])
    y, cache = layer.forward(x)
    np.testing.assert_array_equal(y, layer.parameters()['Embedding/W'][x])
    dy = rng.standard_normal(y.shape)
    grads: dict = {}
    assert layer.backward(x, cache, dy, grads) is None          # integer ids have no gradient
    expected = np.zeros((6, 4))
    for position, index in np.ndenumerate(x):
        expected[index] += dy[position]
    np.testing.assert_allclose(grads['Embedding/W'], expected, rtol=1e-14)
    assert not np.any(grads['Embedding/W'][[2, 3]])              # ids never seen get exactly 0
    # torch agrees.
    W = layout.to_torch(layer.parameters()['Embedding/W'], requires_grad=True)
    F.embedding(layout.to_torch(x), W).backward(layout.to_torch(dy))
    np.testing.assert_allclose(grads['Embedding/W'], layout.to_numpy(W.grad), rtol=1e-14)


@pytest.mark.parametrize('dtype', [np.int8, np.uint8, np.int32, np.int64, np.uint64])
def test_embedding_accepts_every_integer_dtype(dtype, rng):
    layer = randomize(nn.Embedding(7, 3), rng)
    x = rng.integers(0, 7, (4, 5)).astype(dtype)
    y, cache = layer.forward(x)
    assert y.dtype == np.float32 and y.shape == (4, 5, 3)
    grads: dict = {}
    layer.backward(x, cache, rng.standard_normal(y.shape).astype(np.float32), grads)
    assert grads['Embedding/W'].dtype == np.float32


@pytest.mark.parametrize('x, error, words', [
    (np.array([[0, 3, 7]]), ValueError, "Embedding 'Embedding': indices expected in [0, 7), got 7"),
    (np.array([2, -1, 3]), ValueError, "Embedding 'Embedding': indices expected in [0, 7), got -1"),
    (np.array([0.0, 1.0]), TypeError, "Embedding 'Embedding': indices expected a integer dtype, got float64"),
    (np.array([True, False]), TypeError, "Embedding 'Embedding': indices expected a integer dtype, got bool"),
    ([1, 2], TypeError, "Embedding 'Embedding': indices expected a numpy array, got list"),
], ids=['too-large', 'negative', 'float', 'bool', 'list'])
def test_embedding_refuses_bad_ids_and_changes_nothing(x, error, words, rng):
    layer = randomize(nn.Embedding(7, 3), rng)
    before = layer.parameters()['Embedding/W'].copy()
    with pytest.raises(error) as info:
        layer.forward(x)
    assert words in str(info.value)
    np.testing.assert_array_equal(layer.parameters()['Embedding/W'], before)


# -------------------------------------------------------------------------------- MaxPool2D
def _torch_pool(x, kernel, stride, padding, dy):
    x_t = layout.to_torch(x, requires_grad=True)
    y_t = layout.channels_last(F.max_pool2d(layout.channels_first(x_t), kernel, stride, padding))
    y_t.backward(layout.to_torch(dy))
    return layout.to_numpy(y_t), layout.to_numpy(x_t.grad)


def test_maxpool_tie_goes_to_the_first_maximum_in_row_major_window_order():
    # One 2x2 window per quadrant: ties at positions (0,1),(1,0),(1,1); (0,0),(1,0),(1,1); all four.
    x = np.array([[1., 3., 2., 1.],
                  [3., 3., 2., 2.],
                  [5., 5., 4., 4.],
                  [5., 5., 4., 4.]])[None, :, :, None]
    dy = np.array([[10., 20.], [30., 40.]])[None, :, :, None]
    layer = nn.MaxPool2D(2)
    y, cache = layer.forward(x)
    dx = layer.backward(x, cache, dy, {})
    expected = np.array([[0., 10., 20., 0.],
                         [0., 0., 0., 0.],
                         [30., 0., 40., 0.],
                         [0., 0., 0., 0.]])
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)
    y_t, dx_t = _torch_pool(x, 2, 2, 0, dy)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(dx, dx_t)


@pytest.mark.parametrize('kernel, stride, padding', [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)])
def test_maxpool_ties_nan_and_all_minus_inf_windows_match_torch(kernel, stride, padding, rng):
    x = rng.integers(-1, 2, (2, 6, 7, 3)).astype(np.float64)      # many ties
    x[0, 1, 1, 0] = x[0, 2, 2, 0] = x[1, 0, 3, 2] = np.nan             # NaN wins its windows (the last NaN)
    x[1, 3:, 4:, 1] = -np.inf                                        # windows of only -inf (and padding)
    layer = nn.MaxPool2D(kernel, stride, padding)
    y, cache = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(x, cache, dy, {})
    y_t, dx_t = _torch_pool(x, kernel, stride, padding, dy)
    np.testing.assert_array_equal(y, y_t)
    # A wrong choice moves a whole dy entry; overlapping windows add in another order (ulps).
    np.testing.assert_allclose(dx, dx_t, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------ bad inputs
BAD_INPUTS = [
    (nn.Conv2D(3, 4, 3), np.zeros((2, 5, 5, 2), np.float32), ValueError,
     'input expected last dim 3, got shape (2, 5, 5, 2)'),
    (nn.Conv2D(3, 4, 3), np.zeros((5, 5, 3), np.float32), ValueError, 'input expected rank 4, got shape (5, 5, 3)'),
    (nn.Conv2D(3, 4, 3), np.zeros((2, 5, 5, 3), np.int64), TypeError, 'input expected a floating dtype, got int64'),
    (nn.Conv2D(3, 4, 5, padding=0), np.zeros((2, 4, 9, 3)), ValueError, 'input expected spatial size at least the '
     'dilated kernel minus twice the padding (kernel (5, 5), stride (1, 1), padding (0, 0), dilation (1, 1)), '
     'got shape (2, 4, 9, 3)'),
    (nn.Conv1D(3, 4), np.zeros((2, 7, 3, 1)), ValueError, 'input expected rank 3, got shape (2, 7, 3, 1)'),
    (nn.Conv1D(3, 4), [[[0.0, 1.0, 2.0]]], TypeError, 'input expected a numpy array, got list'),
    (nn.MaxPool2D(2), np.zeros((2, 6, 6)), ValueError, 'input expected rank 4, got shape (2, 6, 6)'),
    (nn.MaxPool2D(3), np.zeros((2, 2, 6, 1)), ValueError, 'input expected spatial size at least kernel (3, 3) '
     'minus twice the padding (0, 0), got shape (2, 2, 6, 1)'),
    (nn.AvgPool2D(2), np.zeros((2, 6, 6, 1), np.int32), TypeError, 'input expected a floating dtype, got int32'),
    (nn.BatchNorm2D(4), np.zeros((2, 3, 3, 5)), ValueError, 'input expected last dim 4, got shape (2, 3, 3, 5)'),
    (nn.BatchNorm2D(4), np.zeros((6, 4)), ValueError, 'input expected rank 4, got shape (6, 4)'),
]


@pytest.mark.parametrize('layer, x, error, words', BAD_INPUTS,
                         ids=['conv2d-channels', 'conv2d-rank', 'conv2d-int', 'conv2d-too-small', 'conv1d-rank',
                              'conv1d-list', 'maxpool-rank', 'maxpool-too-small', 'avgpool-int', 'bn-channels',
                              'bn-rank'])
def test_bad_input_names_the_layer_and_changes_nothing(layer, x, error, words):
    params = {k: v.copy() for k, v in layer.parameters().items()}
    buffers = [getattr(layer, b).copy() for b in ('running_mean', 'running_var') if hasattr(layer, b)]
    with pytest.raises(error) as info:
        layer.forward(x)
    assert f"{type(layer).__name__} '{layer.name}': {words}" in str(info.value)
    for k, v in layer.parameters().items():
        np.testing.assert_array_equal(v, params[k])
    for before, name in zip(buffers, ('running_mean', 'running_var'), strict=False):
        np.testing.assert_array_equal(getattr(layer, name), before)


@pytest.mark.parametrize('make, words', [
    (lambda: nn.Conv2D(3, 4, 0), "Conv2D 'Conv2D': kernel_size expected an int >= 1 or a pair of them, got 0"),
    (lambda: nn.Conv2D(3, 4, 3, stride=0), "Conv2D 'Conv2D': stride expected an int >= 1 or a pair of them, got 0"),
    (lambda: nn.Conv2D(3, 4, 3, padding=-1), "Conv2D 'Conv2D': padding expected an int >= 0 or a pair of them, got -1"),
    (lambda: nn.Conv2D(3, 4, (3, 3, 3)), "Conv2D 'Conv2D': kernel_size expected an int >= 1 or a pair of them, "
                                         "got (3, 3, 3)"),
    (lambda: nn.Conv2D(3, 4, 2.5), "Conv2D 'Conv2D': kernel_size expected an int >= 1 or a pair of them, got 2.5"),
    (lambda: nn.Conv2D(0, 4, 3), "Conv2D 'Conv2D': in_channels expected an int >= 1, got 0"),
    (lambda: nn.Conv1D(3, 4, (3,)), "Conv1D 'Conv1D': kernel_size expected an int >= 1, got (3,)"),
    (lambda: nn.Conv1D(3, 4, dilation=0), "Conv1D 'Conv1D': dilation expected an int >= 1, got 0"),
    (lambda: nn.MaxPool2D(2, padding=2), "MaxPool2D 'MaxPool2D': padding expected at most half the kernel size "
                                         "(2, 2), got (2, 2)"),
    (lambda: nn.AvgPool2D((3, 2), padding=(1, 2)), "AvgPool2D 'AvgPool2D': padding expected at most half the "
                                                   "kernel size (3, 2), got (1, 2)"),
    (lambda: nn.BatchNorm2D(3, momentum=1.5), "BatchNorm2D 'BatchNorm2D': momentum expected a number in [0, 1], "
                                              "got 1.5"),
    (lambda: nn.BatchNorm2D(0), "BatchNorm2D 'BatchNorm2D': num_features expected a positive int, got 0"),
    (lambda: nn.Embedding(0, 3), "Embedding 'Embedding': num_embeddings expected a positive int, got 0"),
], ids=['conv-kernel-0', 'conv-stride-0', 'conv-padding-neg', 'conv-kernel-triple', 'conv-kernel-float',
        'conv-in-0', 'conv1d-tuple', 'conv1d-dilation-0', 'maxpool-padding', 'avgpool-padding', 'bn-momentum',
        'bn-features', 'embedding-size'])
def test_bad_configuration_is_refused(make, words):
    with pytest.raises(ValueError) as info:
        make()
    assert words in str(info.value)


# ---------------------------------------------------------------------------------- memory
@pytest.mark.parametrize('shape, stride, dilation', [((4, 24, 20, 16), 1, 1), ((8, 32, 32, 16), 1, 1),
                                                     ((8, 32, 32, 16), 2, 2)],
                         ids=['s1-small', 's1-benchmark', 's2-d2'])
def test_conv2d_peak_memory_is_one_im2col_buffer(shape, stride, dilation, rng):
    """tracemalloc sees NumPy's buffers: forward + backward may hold one im2col buffer
    (K*K x the input, the cache) beyond its results y, dx, dW, db, plus O(1)-sized change."""
    layer = randomize(nn.Conv2D(16, 32, 3, stride=stride, padding=dilation, dilation=dilation), rng)
    x = rng.standard_normal(shape).astype(np.float32)
    y, cache = layer.forward(x)            # warm-up: lazy imports (scipy.linalg) allocate once
    dy = rng.standard_normal(y.shape).astype(np.float32)
    layer.backward(x, cache, dy, {})
    del y, cache
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        y, cache = layer.forward(x)
        grads: dict = {}
        dx = layer.backward(x, cache, dy, grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    B, Ho, Wo = y.shape[:3]
    im2col = B * Ho * Wo * 9 * 16 * 4
    assert cache['cols'].nbytes == im2col
    results = y.nbytes + dx.nbytes + sum(g.nbytes for g in grads.values())
    extra = peak - base - results
    # No padded copy of x, dy or dx: beyond the buffer only O(1)-sized temporaries, at most
    # 96 KiB here (< 0.1 buffer): for stride 1 the border strips of dx saved around each tap's
    # in-place GEMM (B*C*(H + W) values, 32 KiB at the benchmark shape); for stride 2 the
    # per-tap GEMM block (<= 8192 values) and the contiguous copy of W^T (18 KiB); NumPy's
    # small ufunc buffers.
    assert extra <= im2col + 96 * 1024, f'extra {extra / im2col:.3f} im2col buffers ({extra - im2col} B beyond one)'


# ------------------------------------------------------------------------------ benchmarks
BENCH = {
    'conv2d': ('Conv2D 3x3 p1 [8,32,32,16]->32', lambda: nn.Conv2D(16, 32, 3), (8, 32, 32, 16)),
    'conv1d': ('Conv1D k3 p1 [16,256,64]->64', lambda: nn.Conv1D(64, 64, 3), (16, 256, 64)),
    'maxpool': ('MaxPool2D 2x2 [8,32,32,32]', lambda: nn.MaxPool2D(2), (8, 32, 32, 32)),
}


def _bench_setup(which: str):
    rng = np.random.default_rng(0)
    group, make, shape = BENCH[which]
    layer = randomize(make(), rng)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(layer(x).shape).astype(np.float32)
    return group, layer, x, dy


@pytest.mark.parametrize('which', list(BENCH))
def test_benchmark_nn_forward_backward(which, benchmark):
    group, layer, x, dy = _bench_setup(which)
    benchmark.group = group

    def run():
        y, cache = layer.forward(x)
        return layer.backward(x, cache, dy, {})
    benchmark(run)


@pytest.mark.parametrize('which', list(BENCH))
def test_benchmark_torch_forward_backward(which, benchmark):
    """torch on the same logical shapes in its channels_last memory format (its fastest here)."""
    group, layer, x, dy = _bench_setup(which)
    benchmark.group = group
    params = layout.params_to_torch(layer.parameters())
    cl = torch.channels_last if x.ndim == 4 else torch.contiguous_format
    x_t = layout.channels_first(layout.to_torch(x)).contiguous(memory_format=cl).requires_grad_()
    dy_t = layout.channels_first(layout.to_torch(dy)).contiguous(memory_format=cl)
    if which == 'maxpool':
        def op(t):
            return F.max_pool2d(t, 2)
    else:
        conv, convert = (F.conv2d, layout.conv2d_weight) if which == 'conv2d' else (F.conv1d, layout.conv1d_weight)
        w = convert(params[f'{layer.name}/W']).detach().contiguous(memory_format=cl).requires_grad_()
        b = params[f'{layer.name}/b']

        def op(t):
            return conv(t, w, b, padding=1)
    leaves = [x_t, *params.values()] + ([] if which == 'maxpool' else [w])

    def run():
        for leaf in leaves:
            leaf.grad = None
        op(x_t).backward(dy_t)
    benchmark(run)
