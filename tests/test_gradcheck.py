"""Tests of the finite-difference checker `nn.gradcheck` itself.

Tiny layers defined here, correct and deliberately broken, check that correct
gradients pass and that every kind of wrong gradient is caught with the right
tensor named and a useful diagnosis. Shapes are small, odd and non-square;
inputs and upstream gradients are random (never all-ones).
"""

from __future__ import annotations

import numpy as np
import pytest

from nn.gradcheck import (
    GradcheckError,
    GradcheckReport,
    TensorCheck,
    assert_close,
    check_layer,
    check_layer_battery,
    diagnose,
)
from nn.layer import Layer


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------- tiny layers

class TanhDense(Layer):
    """y = tanh(x @ W + b), with optional deliberate bugs in backward."""

    def __init__(self, in_dim, out_dim, bug=None, name='Dense', seed=1):
        super().__init__(name)
        self.bug = bug
        self.set_parameter('W', rand(in_dim, out_dim, seed=seed).astype(np.float32))
        self.set_parameter('b', rand(out_dim, seed=seed + 1).astype(np.float32))

    def forward(self, x):
        y = np.tanh(x @ self.get_parameter('W') + self.get_parameter('b'))
        return y, {'y': y}

    def backward_impl(self, x, cache, gy, gradients):
        gz = gy * (1 - cache['y'] ** 2)
        W = self.get_parameter('W')
        gW = x.reshape(-1, x.shape[-1]).T @ gz.reshape(-1, gz.shape[-1])
        if self.bug == 'W*1.01':
            gW = gW * 1.01
        if self.bug == 'W.T':
            gW = gW.T
        self.accumulate(gradients, 'W', gW)
        if self.bug != 'no b':
            self.accumulate(gradients, 'b', gz.reshape(-1, gz.shape[-1]).sum(0))
        dx = gz @ W.T
        if self.bug == 'dx*1.001':
            dx = dx * 1.001
        elif self.bug == '-dx':
            dx = -dx
        elif self.bug == 'dx*2':
            dx = 2 * dx
        elif self.bug == 'dx row':
            dx = dx.copy()
            dx[..., 1, :] *= 1.5
        elif self.bug == 'dx float32':
            dx = dx.astype(np.float32)
        elif self.bug == 'dx shape':
            dx = dx[..., :-1]
        return dx


class ReLU(Layer):
    def __init__(self, name='ReLU'):
        super().__init__(name)

    def forward(self, x):
        return np.maximum(x, 0.0), {}

    def backward_impl(self, x, cache, gy, gradients):
        return gy * (x > 0)


class Softmax(Layer):
    """Softmax over the last axis: its output sums to 1, so an upstream gradient
    constant along that axis has a true input gradient of exactly 0."""

    def __init__(self, bug=None, name='Softmax'):
        super().__init__(name)
        self.bug = bug

    def forward(self, x):
        e = np.exp(x - x.max(-1, keepdims=True))
        y = e / e.sum(-1, keepdims=True)
        return y, {'y': y}

    def backward_impl(self, x, cache, gy, gradients):
        y = cache['y']
        if self.bug == 'elementwise':  # the classic wrong "y * (1 - y) * gy"
            return y * (1 - y) * gy
        return y * (gy - (gy * y).sum(-1, keepdims=True))


class LayerNormLike(Layer):
    def __init__(self, size, name='LN'):
        super().__init__(name)
        self.set_parameter('scale', 1.0 + 0.3 * rand(size, seed=5))
        self.set_parameter('shift', 0.2 * rand(size, seed=6))

    def forward(self, x):
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        inv = 1.0 / np.sqrt((xc ** 2).mean(-1, keepdims=True) + 1e-5)
        xhat = xc * inv
        return xhat * self.get_parameter('scale') + self.get_parameter('shift'), \
            {'xhat': xhat, 'inv': inv}

    def backward_impl(self, x, cache, gy, gradients):
        xhat, inv = cache['xhat'], cache['inv']
        flat = (-1, x.shape[-1])
        self.accumulate(gradients, 'scale', (gy * xhat).reshape(flat).sum(0))
        self.accumulate(gradients, 'shift', gy.reshape(flat).sum(0))
        gxhat = gy * self.get_parameter('scale')
        return inv * (gxhat - gxhat.mean(-1, keepdims=True)
                      - xhat * (gxhat * xhat).mean(-1, keepdims=True))


class GeluTanh(Layer):
    """GELU, tanh approximation: gradients of ~1e-7 far left, where a x1e3
    upstream gradient makes finite-difference rounding noise exceed atol."""

    def __init__(self, name='GELU'):
        super().__init__(name)

    def forward(self, x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), {}

    def backward_impl(self, x, cache, gy, gradients):
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x ** 2))


class Chain(Layer):
    """Two nested TanhDense layers: keys 'Chain/D1/W', 'Chain/D2/b', ..."""

    def __init__(self, bug=None, name='Chain'):
        super().__init__(name)
        self.d1 = TanhDense(3, 5, name=f'{name}/D1', seed=7)
        self.d2 = TanhDense(5, 2, bug=bug, name=f'{name}/D2', seed=9)

    def forward(self, x):
        h, c1 = self.d1.forward(x)
        y, c2 = self.d2.forward(h)
        return y, {'h': h, 'c1': c1, 'c2': c2}

    def backward_impl(self, x, cache, gy, gradients):
        gh = self.d2.backward(cache['h'], cache['c2'], gy, gradients)
        return self.d1.backward(x, cache['c1'], gh, gradients)


class Embedding(Layer):
    def __init__(self, num, dim, name='Embedding'):
        super().__init__(name)
        self.set_parameter('W', rand(num, dim, seed=3))

    def forward(self, x):
        return self.get_parameter('W')[x], {}

    def backward_impl(self, x, cache, gy, gradients):
        gW = np.zeros_like(self.get_parameter('W'))
        np.add.at(gW, x, gy)
        self.accumulate(gradients, 'W', gW)
        return np.zeros(x.shape)


class Dropout(Layer):
    def __init__(self, p=0.3, seed=0, name='Dropout'):
        super().__init__(name)
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        mask = (self.rng.random(x.shape) >= self.p) / (1 - self.p)
        return x * mask, {'mask': mask}

    def backward_impl(self, x, cache, gy, gradients):
        return gy * cache['mask']


X = rand(5, 3, seed=2)


def checks_by_tensor(report: GradcheckReport) -> dict[str, TensorCheck]:
    return {c.tensor: c for c in report.checks}


# --------------------------------------------------------------------------- correct layers

def test_correct_layer_passes_in_full_mode_and_leaves_caller_untouched():
    layer = TanhDense(3, 7)
    W_before = layer.get_parameter('W').copy()
    x = X.copy()
    report = check_layer(layer, x)
    checks = checks_by_tensor(report)
    assert list(checks) == ['dx', 'Dense/W', 'Dense/b']
    assert [c.mode for c in report.checks] == ['full'] * 3
    assert [c.n_checked for c in report.checks] == [15, 21, 7]
    assert all(c.n_kinks == 0 and c.max_rel_err < 1e-6 for c in report.checks)
    assert report.upstream == 'gaussian' and report.informative
    assert 'Dense/W' in str(report) and 'skipped' not in str(report)
    # Checked on a float64 copy: caller's float32 layer and x unchanged.
    assert layer.get_parameter('W').dtype == np.float32
    np.testing.assert_array_equal(layer.get_parameter('W'), W_before)
    np.testing.assert_array_equal(x, X)


def test_probe_mode_report():
    report = check_layer(TanhDense(3, 7), X, max_full=10, n_probes=6)
    checks = checks_by_tensor(report)
    assert checks['dx'].mode == 'probes' and checks['dx'].n_checked == 6
    assert checks['Dense/W'].mode == 'probes'
    assert checks['Dense/b'].mode == 'full' and checks['Dense/b'].n_checked == 7


def test_gaussian_probes_and_given_upstream():
    upstream = rand(5, 7, seed=11)
    report = check_layer(TanhDense(3, 7), X, upstream=upstream, max_full=1, probe='gaussian')
    assert report.upstream == 'given'
    assert {c.mode for c in report.checks} == {'probes'}


def test_nested_layers_are_checked_and_named():
    report = check_layer(Chain(), X)
    assert [c.tensor for c in report.checks] == [
        'dx', 'Chain/D1/W', 'Chain/D1/b', 'Chain/D2/W', 'Chain/D2/b']
    with pytest.raises(GradcheckError) as info:
        check_layer(Chain(bug='W*1.01'), X)
    assert info.value.tensor == 'Chain/D2/W'


def test_integer_input_checks_parameters_only():
    tokens = np.array([[0, 3, 3], [5, 1, 0]])
    report = check_layer(Embedding(6, 4), tokens)
    assert [c.tensor for c in report.checks] == ['Embedding/W']


def test_stochastic_layer_needs_before_forward():
    with pytest.raises(GradcheckError) as info:
        check_layer(Dropout(), X)
    assert info.value.tensor == 'y' and 'before_forward' in str(info.value)

    def reseed(layer):
        layer.rng = np.random.default_rng(42)
    report = check_layer(Dropout(), X, before_forward=reseed)
    assert report.checks[0].n_checked == X.size


# --------------------------------------------------------------------------- wrong gradients

@pytest.mark.parametrize('bug, tensor, in_dim, out_dim, diagnosis', [
    ('dx*1.001', 'dx', 3, 7, 'scaled by 1.001'),
    ('W*1.01', 'Dense/W', 3, 7, 'scaled by 1.010'),
    ('-dx', 'dx', 3, 7, 'sign flip'),
    ('dx*2', 'dx', 3, 7, 'x2'),
    ('W.T', 'Dense/W', 4, 4, 'transpose'),
    ('dx row', 'dx', 3, 7, 'errors only at index 1 of axis 0'),
])
def test_wrong_gradient_is_caught_with_diagnosis(bug, tensor, in_dim, out_dim, diagnosis):
    x = rand(5, in_dim, seed=2)
    with pytest.raises(GradcheckError) as info:
        check_layer(TanhDense(in_dim, out_dim, bug=bug), x, context='case-42')
    error = info.value
    assert error.tensor == tensor
    message = str(error)
    assert message.startswith('case-42')
    assert f"tensor '{tensor}'" in message and 'Mismatched elements' in message
    assert 'finite-difference' in message and 'analytic' in message
    assert 'rtol=1e-05' in message and 'atol=1e-07' in message
    assert diagnosis in message


def test_missing_parameter_gradient():
    with pytest.raises(GradcheckError, match="no gradient for 'Dense/b'") as info:
        check_layer(TanhDense(3, 7, bug='no b'), X)
    assert info.value.tensor == 'Dense/b'


@pytest.mark.parametrize('bug', ['dx float32', 'dx shape'])
def test_wrong_dx_dtype_or_shape(bug):
    with pytest.raises(GradcheckError, match='dx') as info:
        check_layer(TanhDense(3, 7, bug=bug), X)
    assert info.value.tensor == 'dx'


def test_probe_mode_catches_small_scale():
    with pytest.raises(GradcheckError) as info:
        check_layer(TanhDense(3, 7, bug='dx*1.001'), X, max_full=1)
    message = str(info.value)
    assert info.value.tensor == 'dx'
    assert 'probe' in message and 'scaled by 1.001' in message
    assert 'follow-up' in message  # entries recomputed in full mode


def test_wrong_softmax_backward_caught_only_by_non_constant_upstream():
    x = rand(3, 5, seed=4)
    with pytest.raises(GradcheckError) as info:
        check_layer(Softmax(bug='elementwise'), x)
    assert info.value.tensor == 'dx'


# --------------------------------------------------------------------------- kinks

def test_relu_at_zero_is_a_kink_not_a_failure():
    x = rand(4, 5, seed=8)
    x[0, 1] = x[2, 3] = x[3, 0] = 0.0
    report = check_layer(ReLU(), x)
    check = report.checks[0]
    assert (check.n_kinks, check.n_checked) == (3, 17)
    assert '3 of 20 entries skipped at kinks' in str(report)
    # Without detection the finite difference at 0 is half the slope: a failure.
    with pytest.raises(GradcheckError):
        check_layer(ReLU(), x, detect_kinks=False)


def test_kinks_in_probe_mode():
    # A probe moves every entry, so one entry at a kink puts every probe on it.
    x = rand(4, 5, seed=8)
    x[1, 1] = 0.0
    with pytest.raises(GradcheckError, match='8 of 8 probes') as info:
        check_layer(ReLU(), x, max_full=1, n_probes=8)
    assert info.value.tensor == 'dx'
    # Away from 0 nothing is a kink.
    report = check_layer(ReLU(), x + 0.1 * np.sign(x + 0.5), max_full=1, n_probes=8)
    assert report.checks[0].n_kinks == 0


def test_mostly_kinks_is_an_error():
    x = rand(3, 5, seed=8)
    x[:2] = 0.0
    with pytest.raises(GradcheckError, match='kinks') as info:
        check_layer(ReLU(), x)
    assert info.value.tensor == 'dx'


@pytest.mark.parametrize('layer, shape', [
    (TanhDense(3, 7), (5, 3)),
    (Softmax(), (3, 7)),
    (LayerNormLike(7), (2, 3, 7)),
    (Chain(), (5, 3)),
])
@pytest.mark.parametrize('max_full', [2000, 1])
def test_smooth_functions_have_no_kinks(layer, shape, max_full):
    for seed in range(3):
        x = 2.0 * rand(*shape, seed=seed)
        for upstream in ('gaussian', 'large'):
            for report in check_layer_battery(layer, x, upstreams=[upstream], max_full=max_full,
                                              rng=seed):
                assert all(c.n_kinks == 0 for c in report.checks), str(report)


# --------------------------------------------------------------------------- battery

def test_battery_default_upstreams():
    reports = check_layer_battery(TanhDense(3, 7), X)
    assert [r.upstream for r in reports] == ['gaussian', 'one-hot', 'large']
    assert all(r.informative for r in reports)


def test_battery_rejects_uninformative_upstream():
    x = rand(3, 5, seed=4)
    constant_rows = np.repeat(rand(3, 1, seed=5), 5, axis=1)  # constant along the last axis
    reports = check_layer_battery(Softmax(), x,
                                  upstreams=['gaussian', ('constant-rows', constant_rows)])
    assert reports[0].informative
    assert not reports[1].informative
    assert 'REJECTED' in str(reports[1])
    # A wrong backward that happens to give ~0 too is not a pass either.
    with pytest.raises(GradcheckError) as info:
        check_layer_battery(Softmax(), x, upstreams=[('constant-rows', constant_rows)])
    assert info.value.tensor == 'dx' and 'every upstream' in str(info.value)


def test_large_upstream_scales_atol_but_still_catches_bugs():
    x = 3.0 * rand(4, 7, seed=0)
    x[1, 5] = -5.405982642512624  # gradient ~1e-7: FD noise with a x1e3 upstream is ~1e-7
    for seed in range(4):
        check_layer_battery(GeluTanh(), x, rng=seed)
    with pytest.raises(GradcheckError, match='RMS of the upstream') as info:
        check_layer_battery(TanhDense(3, 7, bug='dx*1.001'), X, upstreams=['large'])
    assert info.value.tensor == 'dx' and 'scaled by 1.001' in str(info.value)


def test_battery_rejects_upstream_keyword():
    with pytest.raises(TypeError):
        check_layer_battery(TanhDense(3, 7), X, upstream=rand(5, 7))


# --------------------------------------------------------------------------- assert_close, diagnose

def test_assert_close_message_content():
    expected = rand(3, 4, seed=1)
    actual = expected.copy()
    actual[2, 1] += 0.5
    with pytest.raises(GradcheckError) as info:
        assert_close('Dense/W', expected, actual, rtol=1e-5, atol=1e-7, context='case A')
    message = str(info.value)
    assert info.value.tensor == 'Dense/W'
    assert message.startswith('case A')
    assert 'Mismatched elements 1/12' in message
    assert '(2, 1)' in message
    assert f'{expected[2, 1]:.8g}' in message and f'{actual[2, 1]:.8g}' in message
    assert 'rtol=1e-05' in message and 'atol=1e-07' in message
    assert 'only element (2, 1)' in message
    assert_close('y', expected, expected + 1e-9, rtol=1e-5, atol=1e-7)


def test_assert_close_shape_and_nan():
    with pytest.raises(GradcheckError, match='transpose'):
        assert_close('W', rand(3, 4), rand(4, 3), rtol=1e-5, atol=1e-7)
    actual = rand(3, 4)
    expected = actual.copy()
    actual[1, 2] = np.nan
    with pytest.raises(GradcheckError, match='NaN'):
        assert_close('W', expected, actual, rtol=1e-5, atol=1e-7)


def test_diagnose_patterns():
    e = rand(3, 5, seed=3)
    assert diagnose(e, e / 7).startswith('scaled by 0.1429 (x1/7)')
    assert 'sign flip' in diagnose(e, -e)
    assert 'all ~0' in diagnose(e, np.zeros_like(e))
    a = e.copy()
    a[:, 3] += 1.0
    assert 'errors only at index 3 of axis 1' in diagnose(e, a)
    sq = rand(2, 4, 4, seed=4)
    assert 'transpose' in diagnose(sq, np.swapaxes(sq, -1, -2))
    assert diagnose(e, e + 1e-3 * rand(3, 5, seed=9)) is None


class ScaledDense(TanhDense):
    """Derives W_eff = 2 W in update_parameters: the checker must go through it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.W_eff = 2 * self.get_parameter('W')

    def update_parameters(self, parameters):
        super().update_parameters(parameters)
        self.W_eff = 2 * self.get_parameter('W')

    def astype(self, dtype):
        super().astype(dtype)
        self.W_eff = (2 * self.get_parameter('W')).astype(dtype)
        return self

    def forward(self, x):
        y = np.tanh(x @ self.W_eff + self.get_parameter('b'))
        return y, {'y': y}

    def backward_impl(self, x, cache, gy, gradients):
        gz = gy * (1 - cache['y'] ** 2)
        self.accumulate(gradients, 'W', 2 * x.T @ gz)
        self.accumulate(gradients, 'b', gz.sum(0))
        return gz @ self.W_eff.T


def test_layer_overriding_update_parameters_is_perturbed_through_it():
    report = check_layer(ScaledDense(3, 5), X)
    assert [c.tensor for c in report.checks] == ['dx', 'Dense/W', 'Dense/b']


class Twice(Layer):
    """The same Dense applied twice (shared parameters): gradients accumulate."""

    def __init__(self, bug=None, name='Twice'):
        super().__init__(name)
        self.layers_ = [TanhDense(4, 4, name='Shared', seed=3)]
        self.bug = bug

    def forward(self, x):
        h, c1 = self.layers_[0].forward(x)
        y, c2 = self.layers_[0].forward(h)
        return y, {'h': h, 'c1': c1, 'c2': c2}

    def backward_impl(self, x, cache, gy, gradients):
        inner = {} if self.bug == 'overwrite' else gradients
        gh = self.layers_[0].backward(cache['h'], cache['c2'], gy, inner)
        dx = self.layers_[0].backward(x, cache['c1'], gh, gradients)
        return dx


def test_shared_layer_accumulates():
    x = rand(3, 4, seed=12)
    report = check_layer(Twice(), x)
    assert [c.tensor for c in report.checks] == ['dx', 'Shared/W', 'Shared/b']
    with pytest.raises(GradcheckError) as info:
        check_layer(Twice(bug='overwrite'), x)
    assert info.value.tensor == 'Shared/W'


def test_max_rel_err_is_bounded_by_twice_rtol_on_a_pass():
    x = 3.0 * rand(4, 7, seed=0)
    for report in check_layer_battery(GeluTanh(), x) + check_layer_battery(Chain(), X, max_full=8):
        assert all(c.max_rel_err <= 2e-5 for c in report.checks), str(report)


class Masked(Layer):
    """y = x * scale, zeroed where mask is True: checks forward_kwargs reach forward."""

    def __init__(self, size, name='Masked'):
        super().__init__(name)
        self.set_parameter('scale', rand(size, seed=13))

    def forward(self, x, mask=None):
        y = x * self.get_parameter('scale')
        if mask is not None:
            y = np.where(mask, 0.0, y)
        return y, {'mask': mask}

    def backward_impl(self, x, cache, gy, gradients):
        if cache.get('mask') is not None:
            gy = np.where(cache['mask'], 0.0, gy)
        self.accumulate(gradients, 'scale', (gy * x).sum(0))
        return gy * self.get_parameter('scale')


def test_forward_kwargs_reach_every_forward():
    x = rand(3, 5, seed=14)
    mask = rand(3, 5, seed=15) > 0.3
    report = check_layer(Masked(5), x, forward_kwargs={'mask': mask})
    assert [c.n_checked for c in report.checks] == [15, 5]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=8, deadline=None, derandomize=True)
@given(batch=st.integers(1, 4), in_dim=st.integers(1, 5), out_dim=st.integers(1, 6),
       factor=st.sampled_from([1.002, 0.99, -1.0, 2.0, 0.5, 1.3]), probes=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_property_correct_passes_wrong_factor_caught(batch, in_dim, out_dim, factor, probes,
                                                      seed):
    class Scaled(TanhDense):
        def backward_impl(self, x, cache, gy, gradients):
            return factor * super().backward_impl(x, cache, gy, gradients)
    x = rand(batch, in_dim, seed=seed)
    max_full = 1 if probes else 2000
    check_layer(TanhDense(in_dim, out_dim, seed=seed), x, rng=seed, max_full=max_full)
    with pytest.raises(GradcheckError) as info:
        check_layer(Scaled(in_dim, out_dim, seed=seed), x, rng=seed, max_full=max_full)
    assert info.value.tensor == 'dx'
