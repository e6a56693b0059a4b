"""The torch counterparts of the kernels and speed targets, on the very same arrays.

Used by the side-by-side benchmarks in ``tests/benchmarks`` (the gate never
imports this module, so it stays numpy-only). Layers run through their
reference mirror (`reference.mirrors.torch_forward`) with the nn layer's own
parameters converted by `reference.layout`, so both sides compute identical
math; bare GEMM expressions use the torch op of the same layout. Every `Pair`
carries a `check` that runs both sides once and asserts they agree (float32,
normwise), so a benchmark that compares different computations fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import nn
from benchmarks import kernels as K
from reference import layout
from reference.mirrors import has_mirror, torch_forward


@dataclasses.dataclass
class Pair:
    """A kernel's two sides, ready to time, and the check that they compute the same thing."""
    nn: Callable[[], Any]
    torch: Callable[[], Any]
    check: Callable[[], None]


def assert_same(what: str, got: np.ndarray, expected: np.ndarray, rtol: float = 1e-3, scale: float = 0.0) -> None:
    """Normwise float32 agreement: max |got - expected| <= rtol * max(max |expected|, scale) + 1e-5.

    `scale` is the magnitude of the other tensors of the same call: a gradient
    that is exactly 0 in exact arithmetic (attention's key bias) comes out of
    float32 as rounding noise of that magnitude times epsilon, not as 0.
    """
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise AssertionError(f'{what}: shape {got.shape}, torch gives {expected.shape}')
    err = float(np.max(np.abs(got - expected))) if got.size else 0.0
    size = max(float(np.max(np.abs(expected))) if expected.size else 0.0, scale)
    if not err <= rtol * size + 1e-5:
        raise AssertionError(f'{what}: numpy and torch differ by {err:.3g} (max |torch| {size:.3g}, '
                             f'allowed {rtol * size + 1e-5:.3g})')


def _magnitude(tensors) -> float:
    return max((float(t.detach().abs().max()) for t in tensors if t.numel()), default=0.0)


def mirror_missing(layer: nn.Layer) -> str | None:
    if not has_mirror(type(layer)):
        return f'no torch mirror registered for {type(layer).__name__} yet (reference/mirrors)'
    return None


def _to_torch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: layout.to_torch(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def _layer_forward(name: str, layer: nn.Layer, x: np.ndarray, kwargs: dict[str, Any], run) -> Pair:
    params_t = layout.params_to_torch(layer.parameters(), requires_grad=False)
    xt, kw_t = layout.to_torch(x), _to_torch_kwargs(kwargs)

    def torch_fn():
        with torch.no_grad():
            return torch_forward(layer, params_t, xt, **kw_t)

    def check():
        assert_same(f'{name}: y', run()[0], layout.to_numpy(torch_fn()))
    return Pair(run, torch_fn, check)


def _layer_backward(name: str, layer: nn.Layer, x: np.ndarray, dy: np.ndarray, kwargs: dict[str, Any]) -> Pair:
    """nn: ``layer.backward`` on the cache of one forward; torch: autograd.grad on a graph built once."""
    params_t = layout.params_to_torch(layer.parameters(), requires_grad=True)
    xt = layout.to_torch(x, requires_grad=True)
    yt = torch_forward(layer, params_t, xt, **_to_torch_kwargs(kwargs))
    dyt = layout.to_torch(dy)
    inputs = [xt, *params_t.values()]
    _, cache = layer.forward(x, **kwargs)

    def nn_fn():
        grads: dict[str, np.ndarray] = {}
        return layer.backward(x, cache, dy, grads), grads

    def torch_fn():
        return torch.autograd.grad(yt, inputs, dyt, retain_graph=True)

    def check():
        dx, grads = nn_fn()
        expected = torch_fn()
        scale = _magnitude(expected)
        assert_same(f'{name}: dx', dx, layout.to_numpy(expected[0]), scale=scale)
        for key, g in zip(params_t, expected[1:], strict=True):
            assert_same(f'{name}: d{key}', grads[key], layout.to_numpy(g), scale=scale)
    return Pair(nn_fn, torch_fn, check)


def kernel_pair(kernel: K.Kernel, bound: K.Bound) -> Pair:
    """The torch counterpart of one `benchmarks.kernels` kernel, on `bound`'s arrays."""
    name = kernel.name
    if kernel.phase == 'forward':
        return _layer_forward(name, bound.layer, bound.x, bound.kwargs, bound.run)
    if kernel.phase == 'backward':
        return _layer_backward(name, bound.layer, bound.x, bound.dy, bound.kwargs)
    if kernel.phase == 'step':
        return _adam_pair(bound)
    if name in ('dense.dx', 'dense.dW'):
        d_in = bound.layer.in_dim
        x2t = layout.to_torch(bound.x.reshape(-1, d_in))
        dy2t = layout.to_torch(bound.dy.reshape(-1, bound.layer.out_dim))
        Wt = layout.to_torch(bound.layer.get_parameter('W'))
        torch_fn = (lambda: torch.mm(dy2t, Wt.t())) if name == 'dense.dx' else (lambda: torch.mm(x2t.t(), dy2t))
    elif name in ('attention.qk', 'attention.av'):
        t = {k: layout.to_torch(v) for k, v in bound.extra.items()}
        if name == 'attention.qk':
            torch_fn = lambda: torch.matmul(t['q'], t['k'].transpose(-1, -2))  # noqa: E731
        else:
            torch_fn = lambda: torch.matmul(t['p'], t['v'])  # noqa: E731
    else:
        raise KeyError(f'no torch counterpart for {name}')

    def check():
        got = np.asarray(bound.run())
        expected = layout.to_numpy(torch_fn())
        if name == 'attention.av':   # the nn side wrote [B, T, H, d]; torch returns [B, H, T, d]
            got = got.transpose(0, 2, 1, 3) if got.shape != expected.shape else got
        assert_same(name, got, expected)
    return Pair(bound.run, torch_fn, check)


def _adam_pair(bound: K.Bound) -> Pair:
    params, grads = bound.extra['params'], bound.extra['grads']
    key = next(iter(params))
    pt = layout.to_torch(params[key])
    pt.grad = layout.to_torch(grads[key])
    opt_t = torch.optim.Adam([pt], lr=1e-3)

    def check():
        # One step each from the same fresh state.
        p0 = {key: params[key].copy()}
        mine = nn.Adam(1e-3, p0)
        mine.apply_gradients(grads)
        q = layout.to_torch(params[key])
        q.grad = layout.to_torch(grads[key])
        theirs = torch.optim.Adam([q], lr=1e-3)
        theirs.step()
        assert_same('adam.step: p', p0[key], layout.to_numpy(q))
    return Pair(bound.run, opt_t.step, check)


# ----------------------------------------------------------------------------- speed targets
@dataclasses.dataclass(frozen=True)
class Target:
    """A speed target from the layer issues: forward + backward, nn time / torch time <= `target`."""
    name: str
    needs: str
    shape: tuple[int, ...]
    target: float
    build: Callable[[np.random.Generator], tuple[nn.Layer, dict[str, Any]]]
    note: str = ''

    def missing(self) -> str | None:
        if not hasattr(nn, self.needs):
            return f'nn.{self.needs} has not landed yet (the {self.name} speed target needs it)'
        return None


def _causal(x: np.ndarray) -> dict[str, Any]:
    return {'mask': nn.get_causal_mask(x)} if hasattr(nn, 'get_causal_mask') else \
        {'mask': np.triu(np.ones(x.shape[1:2] * 2, dtype=bool), k=1)}


def _built(make: Callable[[], nn.Layer], case: str | None = None, kwargs: Callable | None = None):
    def build(rng: np.random.Generator):
        layer = K.from_case(case, rng) if case else K.randomized(make(), rng)
        return layer, kwargs
    return build


TARGETS: list[Target] = [
    Target('dense', 'Dense', (64, 128, 512), 1.05, _built(lambda: nn.Dense(512, 2048)), '-> 2048'),
    Target('softmax', 'Softmax', (64, 128, 128), 1.5, _built(None, 'Softmax-last-dim')),
    Target('layernorm', 'LayerNorm', (64, 128, 512), 1.5, _built(lambda: nn.LayerNorm(512)), 'LayerNorm(512)'),
    Target('relu', 'ReLU', (1024, 1024), 1.2, _built(None, 'ReLU-3d')),
    Target('tanh', 'Tanh', (1024, 1024), 1.2, _built(None, 'Tanh-2d')),
    Target('sigmoid', 'Sigmoid', (1024, 1024), 1.5, _built(None, 'Sigmoid-3d')),
    Target('gelu', 'GELU', (1024, 1024), 1.5, _built(None, 'GELU-erf'), "approximate='none'"),
    Target('conv2d', 'Conv2D', (8, 32, 32, 16), 1.5,
           _built(lambda: nn.Conv2D(16, 32, 3, padding=1)), '3x3 pad 1 -> 32'),
    Target('conv1d', 'Conv1D', (16, 256, 64), 1.5, _built(lambda: nn.Conv1D(64, 64, 3)), 'k3 -> 64'),
    Target('maxpool2d', 'MaxPool2D', (8, 32, 32, 32), 2.0, _built(lambda: nn.MaxPool2D(2)), '2x2'),
    Target('attention', 'MaskedSelfAttention', (8, 128, 256), 1.2,
           _built(lambda: nn.MaskedSelfAttention(256, n_heads=4), kwargs=_causal), '4 heads, causal'),
    Target('block', 'Block', (8, 128, 256), 1.3,
           _built(lambda: nn.Block(256, n_heads=4), kwargs=_causal), '4 heads, causal'),
]


def target_pair(target: Target, rng: np.random.Generator) -> tuple[Pair, str | None]:
    """(forward + backward on both sides, why it cannot run or None)."""
    layer, make_kwargs = target.build(rng)
    reason = mirror_missing(layer)
    if reason:
        return Pair(lambda: None, lambda: None, lambda: None), reason
    x = K.gaussian(rng, target.shape)
    kwargs = make_kwargs(x) if make_kwargs else {}
    y, _ = layer.forward(x, **kwargs)
    dy = K.gaussian(rng, y.shape)
    params_t = layout.params_to_torch(layer.parameters(), requires_grad=True)
    xt, dyt = layout.to_torch(x, requires_grad=True), layout.to_torch(dy)
    kw_t = _to_torch_kwargs(kwargs)
    inputs = [xt, *params_t.values()]

    def nn_fn():
        y, cache = layer.forward(x, **kwargs)
        grads: dict[str, np.ndarray] = {}
        return y, layer.backward(x, cache, dy, grads), grads

    def torch_fn():
        yt = torch_forward(layer, params_t, xt, **kw_t)
        return yt, torch.autograd.grad(yt, inputs, dyt)

    def check():
        y, dx, grads = nn_fn()
        yt, expected = torch_fn()
        scale = _magnitude(expected)
        assert_same(f'{target.name}: y', y, layout.to_numpy(yt))
        assert_same(f'{target.name}: dx', dx, layout.to_numpy(expected[0]), scale=scale)
        for key, g in zip(params_t, expected[1:], strict=True):
            assert_same(f'{target.name}: d{key}', grads[key], layout.to_numpy(g), scale=scale)
    return Pair(nn_fn, torch_fn, check), None
