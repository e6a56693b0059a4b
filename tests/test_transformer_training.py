"""A small transformer (Embedding -> Block x2 -> Dense) trained end to end with Adam.

The task, generated here: reverse a random token sequence. Attention alone cannot
tell positions apart, so each input id carries its position as well,
``id = position * V + token`` (an embedding of (token, position) pairs); the target
at position i is the token at position T-1-i.

- `test_first_steps_match_torch`: 20 Adam steps in float64 give the same losses as the
  identical torch model (the layers' mirrors, the same initial parameters, the same
  batches, torch.optim.Adam with the same hyper-parameters), with no mask, a [T, T]
  causal mask and a random [B, T, T] padding mask passed to both blocks.
- `test_learns_to_reverse` (slow): float32 training reaches >= 95% token accuracy on
  fresh sequences.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import nn
from reference.registry import randomize

V, T, C, HEADS = 10, 9, 32, 2          # vocabulary, sequence length, embedding, heads


def build_model(rng: np.random.Generator, dtype) -> list[nn.Layer]:
    # Random (non-default) initial parameters, scale 0.1: small enough that the
    # residual stream starts near the embeddings and training is quick.
    layers = [nn.Embedding(V * T, C), nn.Block(C, HEADS, name='Block0'), nn.Block(C, HEADS, name='Block1'),
              nn.Dense(C, V, name='Head')]
    return [randomize(layer, rng, scale=0.1).astype(dtype) for layer in layers]


def reversal_batch(rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[batch, T]`` (ids with positions) and targets ``[batch, T]`` (tokens reversed)."""
    tokens = rng.integers(0, V, size=(batch, T))
    return tokens + V * np.arange(T), np.ascontiguousarray(tokens[:, ::-1])


def padding_mask(rng: np.random.Generator, batch: int) -> np.ndarray:
    lengths = rng.integers(2, T + 1, size=batch)
    blocked = np.arange(T)[None, None, :] >= lengths[:, None, None]      # keys past each length
    return np.broadcast_to(blocked, (batch, T, T)).copy()


def all_parameters(layers: list[nn.Layer]) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    for layer in layers:
        params.update(layer.parameters())
    return params


def predict(layers: list[nn.Layer], x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x


@pytest.mark.torch
@pytest.mark.parametrize('mask_kind', ['none', 'causal-2d', 'padding'])
def test_first_steps_match_torch(mask_kind, rng):
    torch = pytest.importorskip('torch')
    import torch.nn.functional as F

    from reference import layout
    from reference.mirrors import torch_forward

    steps, batch = 20, 16
    hyper = dict(lr=3e-3, beta1=0.85, beta2=0.99, eps=1e-7, weight_decay=1e-3)   # none at its default
    layers = build_model(rng, np.float64)
    batches = []
    for _ in range(steps):
        x, y = reversal_batch(rng, batch)
        mask = {'none': None, 'causal-2d': nn.get_causal_mask(x)[0].copy(),
                'padding': padding_mask(rng, batch)}[mask_kind]
        batches.append((x, y, mask))

    initial = {k: v.copy() for k, v in all_parameters(layers).items()}
    params_t = layout.params_to_torch(initial)                   # torch's own copies
    opt_t = torch.optim.Adam(params_t.values(), lr=hyper['lr'], betas=(hyper['beta1'], hyper['beta2']),
                             eps=hyper['eps'], weight_decay=hyper['weight_decay'])
    torch_losses = []
    for x, y, mask in batches:
        kw = {} if mask is None else {'mask': torch.from_numpy(mask)}
        h = torch.from_numpy(x)
        for i, layer in enumerate(layers):
            h = torch_forward(layer, params_t, h, **(kw if i in (1, 2) else {}))
        loss = F.cross_entropy(h.reshape(-1, V), torch.from_numpy(y).reshape(-1))
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        torch_losses.append(loss.item())

    opt = nn.Adam(hyper['lr'], all_parameters(layers), nn.CrossEntropy(), beta1=hyper['beta1'],
                  beta2=hyper['beta2'], eps=hyper['eps'], weight_decay=hyper['weight_decay'])
    losses = []
    for x, y, mask in batches:
        kw = {} if mask is None else {'mask': mask}
        losses.append(opt.step(x, y, layers, [{}, kw, kw, {}]).loss)

    np.testing.assert_allclose(losses, torch_losses, rtol=1e-6, atol=0)
    # The parameters after 20 steps agree too. (Without weight decay the key biases would
    # not: softmax ignores a constant added to a row of scores, so the loss's gradient for
    # DenseK/b is exactly 0; nn returns 0, torch roundoff (~1e-17), which Adam's g/sqrt(v)
    # scales up to +-lr per step. Weight decay makes the gradient weight_decay * b on both.)
    final = all_parameters(layers)
    for key, p in params_t.items():
        np.testing.assert_allclose(final[key], layout.to_numpy(p), rtol=1e-6, atol=1e-9, err_msg=key)
        # Adam moves an entry by up to ~lr per step: every tensor moved more than one step's worth,
        # so what matched is trained values, not the initial ones.
        moved = np.abs(final[key] - initial[key]).max()
        assert moved > hyper['lr'], f'{key} moved only {moved:.2g} in {steps} steps'


@pytest.mark.slow
def test_learns_to_reverse(rng):
    steps, batch = 300, 64
    layers = build_model(rng, np.float32)
    opt = nn.Adam(3e-3, all_parameters(layers), nn.CrossEntropy())
    start = time.perf_counter()
    for _ in range(steps):
        opt.step(*reversal_batch(rng, batch), layers)
    x, y = reversal_batch(rng, 2000)
    logits = predict(layers, x)
    assert logits.dtype == np.float32
    accuracy = float((logits.argmax(axis=-1) == y).mean())
    print(f'reversal: {steps} Adam steps in {time.perf_counter() - start:.1f} s, token accuracy {accuracy:.4f}')
    assert accuracy >= 0.95, f'token accuracy {accuracy:.3f} after {steps} steps, expected >= 0.95'
