"""Optimizers against torch.optim, step for step, and the original library's `step` API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nn

pytestmark = pytest.mark.torch
STEPS = 20


def _problem(rng):
    shapes = {'A/W': (5, 3), 'A/b': (3,), 'B/scale': (7,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(STEPS)]
    return params, grads


CONFIGS = [
    ('SGD-plain', lambda p: nn.SGD(0.1, p), lambda t: torch.optim.SGD(t, lr=0.1)),
    ('SGD-momentum', lambda p: nn.SGD(0.05, p, momentum=0.9),
     lambda t: torch.optim.SGD(t, lr=0.05, momentum=0.9)),
    ('SGD-dampening', lambda p: nn.SGD(0.05, p, momentum=0.8, dampening=0.3),
     lambda t: torch.optim.SGD(t, lr=0.05, momentum=0.8, dampening=0.3)),
    ('SGD-nesterov-wd', lambda p: nn.SGD(0.05, p, momentum=0.7, nesterov=True, weight_decay=0.01),
     lambda t: torch.optim.SGD(t, lr=0.05, momentum=0.7, nesterov=True, weight_decay=0.01)),
    ('Adam', lambda p: nn.Adam(0.01, p), lambda t: torch.optim.Adam(t, lr=0.01)),
    ('Adam-betas-eps-wd', lambda p: nn.Adam(0.02, p, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1),
     lambda t: torch.optim.Adam(t, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ('AdamW', lambda p: nn.AdamW(0.01, p), lambda t: torch.optim.AdamW(t, lr=0.01)),
    ('AdamW-wd', lambda p: nn.AdamW(0.03, p, beta1=0.85, weight_decay=0.2),
     lambda t: torch.optim.AdamW(t, lr=0.03, betas=(0.85, 0.999), weight_decay=0.2)),
]


@pytest.mark.parametrize('make_nn, make_torch', [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_matches_torch_step_for_step(rng, make_nn, make_torch):
    params, grads = _problem(rng)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ours = make_nn({k: v.copy() for k, v in params.items()})
    theirs = make_torch(list(tensors.values()))
    for step, g in enumerate(grads):
        ours.apply_gradients(g)
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k])
        theirs.step()
        for k, t in tensors.items():
            np.testing.assert_allclose(ours.parameters[k], t.detach().numpy(), rtol=1e-10, atol=0,
                                       err_msg=f'{k} after step {step + 1}')


def test_momentum_is_the_original_ema(rng):
    params, grads = _problem(rng)
    opt = nn.Momentum(0.1, {k: v.copy() for k, v in params.items()}, beta=0.8)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    expected = {k: v.copy() for k, v in params.items()}
    for g in grads[:5]:
        opt.apply_gradients(g)
        for k in params:
            m[k] = 0.8 * m[k] + 0.2 * g[k]
            expected[k] = expected[k] - 0.1 * m[k]
    for k in params:
        np.testing.assert_allclose(opt.parameters[k], expected[k], rtol=1e-12)


def test_step_trains_layers_and_keeps_the_dict_shared(rng):
    """The original API: a shared parameters dict, step(x, y, layers) -> BackwardPassOutput."""
    layers = [nn.Dense(4, 6, name='D1'), nn.Tanh(), nn.Dense(6, 3, name='D2')]
    for layer in layers:
        layer.update_parameters({k: rng.standard_normal(v.shape).astype(np.float32)
                                 for k, v in layer.parameters().items()})
    params = {k: v for layer in layers for k, v in layer.parameters().items()}
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    opt = nn.Adam(0.05, params, nn.CrossEntropy())
    first = opt.step(x, y, layers)
    assert isinstance(first, nn.BackwardPassOutput)
    assert set(first.gradients) == set(params)
    assert first.output.shape == (16, 3)
    for _ in range(30):
        last = opt.step(x, y, layers)
    assert last.loss < 0.5 * first.loss
    for layer in layers:
        for k, v in layer.parameters().items():
            assert v is opt.parameters[k] and v.dtype == np.float32


def test_step_with_bad_parameters_changes_no_layer(rng):
    layers = [nn.Dense(3, 2, name='D1'), nn.Dense(2, 2, name='D2')]
    params = {k: v for layer in layers for k, v in layer.parameters().items()}
    params['D2/W'] = np.zeros((5, 5), np.float32)            # wrong shape
    before = [dict(layer.parameters()) for layer in layers]
    opt = nn.SGD(0.1, params, nn.MSE())
    with pytest.raises(ValueError, match="D2/W"):
        opt.step(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32),
                 layers)
    for layer, old in zip(layers, before, strict=True):
        for k, v in layer.parameters().items():
            assert v is old[k]


def test_loss_and_grads_matches_manual_chain(rng):
    dense = nn.Dense(5, 4)
    dense.update_parameters({'Dense/W': rng.standard_normal((5, 4)), 'Dense/b': rng.standard_normal(4)})
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.standard_normal((6, 4)).astype(np.float32)
    out = nn.loss_and_grads(x, y, nn.MSE(), [dense])
    dy = nn.MSE().backward(dense(x), y)
    np.testing.assert_allclose(out.gradients['Dense/W'], x.T @ dy, rtol=1e-5)
    assert out.loss == pytest.approx(float(nn.MSE()(dense(x), y)))
