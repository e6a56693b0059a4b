"""What the registry harness cannot express for MaskedSelfAttention, FFN and Block.

Fully blocked query rows (zero output row, zero gradient, no NaN, no warning), the
[T, T] mask broadcast, mask polarity (True = blocked), causality, bad masks and bad
shapes named in the error, parameter keys and attribute names exactly as DESIGN and
the original library have them, and `get_causal_mask`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nn
from reference.registry import randomize

B, T, C, H = 3, 5, 12, 3


def make_msa(rng, dtype=np.float64, **kw) -> nn.MaskedSelfAttention:
    return randomize(nn.MaskedSelfAttention(C, H, **kw), rng).astype(dtype)


def run(layer, x, dy, **kw):
    """forward + backward with every floating-point warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with np.errstate(divide='raise', invalid='raise', over='raise'):
            y, cache = layer.forward(x, **kw)
            grads: dict[str, np.ndarray] = {}
            dx = layer.backward(x, cache, dy, grads)
    return y, dx, grads


# ------------------------------------------------------------------ fully blocked rows
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_fully_blocked_rows_give_bias_output_and_no_gradient(dtype, rng):
    """A query row with every key blocked: zero attention weights, so y = bo there, and
    an upstream gradient on that row alone reaches nothing but bo. No NaN, no warning."""
    layer = make_msa(rng, dtype)
    x = rng.standard_normal((B, T, C)).astype(dtype)
    mask = rng.random((B, T, T)) < 0.3
    rows = [(0, 2), (1, 0), (2, 4)]
    for b, i in rows:
        mask[b, i, :] = True
    dy = np.zeros((B, T, C), dtype)
    for b, i in rows:
        dy[b, i] = rng.standard_normal(C)

    y, dx, grads = run(layer, x, dy, mask=mask)

    bo = layer.output_proj.get_parameter('b')
    for b, i in rows:
        np.testing.assert_array_equal(y[b, i], bo)           # exactly: the weights are exactly 0
    for arr in (y, dx, *grads.values()):
        assert np.isfinite(arr).all()
    np.testing.assert_array_equal(dx, np.zeros_like(dx))
    for key, g in grads.items():
        assert g.dtype == dtype, key
        if key == 'MSA/DenseO/b':
            np.testing.assert_allclose(g, dy.sum(axis=(0, 1)), rtol=1e-6)
        else:
            np.testing.assert_array_equal(g, np.zeros_like(g), err_msg=key)


def test_every_row_blocked(rng):
    """The whole mask blocked: y = bo everywhere, dx = 0, only the output bias has a gradient."""
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    dy = rng.standard_normal((B, T, C))
    y, dx, grads = run(layer, x, dy, mask=np.ones((T, T), dtype=bool))
    np.testing.assert_array_equal(y, np.broadcast_to(layer.output_proj.get_parameter('b'), y.shape))
    np.testing.assert_array_equal(dx, 0)
    assert sorted(k for k, g in grads.items() if np.any(g)) == ['MSA/DenseO/b']


def test_fully_blocked_rows_in_block(rng):
    """Inside a Block a fully blocked row passes through the residual, finite, no warning."""
    block = randomize(nn.Block(C, H), rng)
    x = rng.standard_normal((B, T, C))
    mask = nn.get_causal_mask(x)
    mask[1, 3, :] = True
    y, dx, grads = run(block, x, rng.standard_normal((B, T, C)), mask=mask)
    assert all(np.isfinite(a).all() for a in (y, dx, *grads.values()))


# ------------------------------------------------------------------ mask semantics
def test_2d_mask_broadcasts_over_the_batch(rng):
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    dy = rng.standard_normal((B, T, C))
    mask2 = rng.random((T, T)) < 0.4
    y2, dx2, g2 = run(layer, x, dy, mask=mask2)
    y3, dx3, g3 = run(layer, x, dy, mask=np.broadcast_to(mask2, (B, T, T)).copy())
    np.testing.assert_array_equal(y2, y3)
    np.testing.assert_array_equal(dx2, dx3)
    assert g2.keys() == g3.keys()
    for key in g2:
        np.testing.assert_array_equal(g2[key], g3[key], err_msg=key)


def test_mask_true_means_blocked(rng):
    """With every key but j blocked for query i, y[b, i] = v_j projected: the weight on j is 1."""
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    keep = rng.integers(0, T, size=(B, T))                 # the one open key per query
    mask = np.ones((B, T, T), dtype=bool)
    np.put_along_axis(mask, keep[..., None], False, axis=-1)
    y = layer(x, mask=mask)
    v = layer.v_proj(x)
    expected = layer.output_proj(np.take_along_axis(v, keep[..., None], axis=1))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_causal_mask_makes_outputs_independent_of_the_future(rng):
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    mask = nn.get_causal_mask(x)
    t = 2
    x_future = x.copy()
    x_future[:, t + 1:] = rng.standard_normal((B, T - t - 1, C))
    y, y_future = layer(x, mask=mask), layer(x_future, mask=mask)
    np.testing.assert_array_equal(y[:, :t + 1], y_future[:, :t + 1])
    assert not np.allclose(y[:, t + 1:], y_future[:, t + 1:])
    assert not np.allclose(layer(x)[:, :t + 1], layer(x_future)[:, :t + 1])   # without the mask they mix


def test_no_mask_equals_all_open_mask(rng):
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    np.testing.assert_allclose(layer(x), layer(x, mask=np.zeros((B, T, T), dtype=bool)), rtol=1e-13, atol=1e-13)


def test_empty_cache_backward_recomputes(rng):
    """The original library's callers passed {} as the cache (no mask): same answer."""
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    dy = rng.standard_normal((B, T, C))
    y, cache = layer.forward(x)
    g1: dict[str, np.ndarray] = {}
    g2: dict[str, np.ndarray] = {}
    np.testing.assert_array_equal(layer.backward(x, cache, dy, g1), layer.backward(x, {}, dy, g2))
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key], err_msg=key)


# ------------------------------------------------------------------ errors
BAD_MASKS = [
    ('int dtype', lambda: np.zeros((B, T, T), dtype=np.int64), TypeError, ['bool', 'int64']),
    ('float dtype', lambda: np.zeros((T, T)), TypeError, ['bool', 'float64']),
    ('a list', lambda: np.zeros((T, T), dtype=bool).tolist(), TypeError, ['numpy bool array', 'list']),
    ('wrong batch', lambda: np.zeros((B + 1, T, T), dtype=bool), ValueError,
     [f'({B}, {T}, {T})', f'({B + 1}, {T}, {T})']),
    ('batch of one', lambda: np.zeros((1, T, T), dtype=bool), ValueError, [f'({B}, {T}, {T})', f'(1, {T}, {T})']),
    ('not square', lambda: np.zeros((B, T, T + 1), dtype=bool), ValueError, [f'({T}, {T})', f'({B}, {T}, {T + 1})']),
    ('1-d', lambda: np.zeros(T, dtype=bool), ValueError, [f'({T}, {T})', f'({T},)']),
    ('4-d', lambda: np.zeros((B, 1, T, T), dtype=bool), ValueError, [f'({B}, 1, {T}, {T})']),
]


@pytest.mark.parametrize('what, make_mask, error, words', BAD_MASKS, ids=[m[0] for m in BAD_MASKS])
@pytest.mark.parametrize('layer_cls', ['MaskedSelfAttention', 'Block'])
def test_bad_mask_is_a_clear_error(layer_cls, what, make_mask, error, words, rng):
    layer = make_msa(rng, name='Attn7') if layer_cls == 'MaskedSelfAttention' else \
        randomize(nn.Block(C, H, name='Block7'), rng)
    before = {k: v.copy() for k, v in layer.parameters().items()}
    x = rng.standard_normal((B, T, C))
    with pytest.raises(error) as info:
        layer.forward(x, mask=make_mask())
    message = str(info.value)
    name = 'Attn7' if layer_cls == 'MaskedSelfAttention' else 'Block7/Attn'
    assert f"MaskedSelfAttention '{name}'" in message
    assert 'mask' in message
    for word in words:
        assert word in message, f'{word!r} not in {message!r}'
    after = layer.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize('cls', [nn.MaskedSelfAttention, nn.Block])
def test_heads_must_divide_embed_dim(cls):
    with pytest.raises(ValueError) as info:
        cls(10, 3, name='Oops')
    message = str(info.value)
    for word in ("'Oops", 'divisible', 'embed_dim=10', 'n_heads=3'):
        assert word in message, f'{word!r} not in {message!r}'


@pytest.mark.parametrize('bad, error, words', [
    (lambda rng: rng.standard_normal((T, C)), ValueError, ['rank 3', f'({T}, {C})']),
    (lambda rng: rng.standard_normal((B, T, C + 1)), ValueError, [f'last dim {C}', f'({B}, {T}, {C + 1})']),
    (lambda rng: rng.integers(0, 5, size=(B, T, C)), TypeError, ['floating', 'int64']),
], ids=['rank-2', 'wrong-last-dim', 'integer'])
@pytest.mark.parametrize('cls, label', [(nn.MaskedSelfAttention, 'MaskedSelfAttention'), (nn.Block, 'Block')])
def test_bad_input_is_a_clear_error(cls, label, bad, error, words, rng):
    layer = cls(C, H, name='L0')
    with pytest.raises(error) as info:
        layer.forward(bad(rng))
    message = str(info.value)
    assert f"{label} 'L0'" in message
    for word in words:
        assert word in message, f'{word!r} not in {message!r}'


def test_ffn_bad_input_is_a_clear_error(rng):
    with pytest.raises(ValueError, match=r"FFN 'FFN3'.*last dim 8.*\(4, 7\)"):
        nn.FFN(8, name='FFN3').forward(rng.standard_normal((4, 7)))


# ------------------------------------------------------------------ names
def _dense_keys(prefix: str, names: str | list[str], use_bias: bool) -> set[str]:
    return {f'{prefix}/{n}/{p}' for n in names for p in (('W', 'b') if use_bias else ('W',))}


@pytest.mark.parametrize('use_bias', [True, False])
def test_parameter_keys_as_design(use_bias):
    msa = nn.MaskedSelfAttention(C, H, use_bias=use_bias)
    assert set(msa.parameters()) == _dense_keys('MSA', ['DenseQ', 'DenseK', 'DenseV', 'DenseO'], use_bias)
    assert all(v.shape == ((C, C) if k.endswith('/W') else (C,)) for k, v in msa.parameters().items())

    ffn = nn.FFN(C, use_bias=use_bias)
    assert set(ffn.parameters()) == _dense_keys('FFN', ['Dense1', 'Dense2'], use_bias)
    assert ffn.parameters()['FFN/Dense1/W'].shape == (C, 4 * C)
    assert ffn.parameters()['FFN/Dense2/W'].shape == (4 * C, C)

    block = nn.Block(C, H, use_bias=use_bias)
    expected = (_dense_keys('Block/Attn', ['DenseQ', 'DenseK', 'DenseV', 'DenseO'], use_bias)
                | _dense_keys('Block/FFN', ['Dense1', 'Dense2'], use_bias)
                | {f'Block/{ln}/{p}' for ln in ('LNAttn', 'LNFFN') for p in ('scale', 'shift')})
    assert set(block.parameters()) == expected

    named = nn.Block(C, H, use_bias=use_bias, name='Block0')
    assert set(named.parameters()) == {k.replace('Block/', 'Block0/', 1) for k in expected}
    assert all(v.dtype == np.float32 for v in block.parameters().values())


def test_attribute_names_of_the_original_library():
    msa = nn.MaskedSelfAttention(C, H, use_bias=False, name='M')
    for attr, child in (('q_proj', 'DenseQ'), ('k_proj', 'DenseK'), ('v_proj', 'DenseV'), ('output_proj', 'DenseO')):
        dense = getattr(msa, attr)
        assert isinstance(dense, nn.Dense) and dense.name == f'M/{child}' and dense.use_bias is False
    assert (msa.embed_dim, msa.n_heads, msa.head_dim) == (C, H, C // H)

    ffn = nn.FFN(C, use_bias=False, name='F')
    assert isinstance(ffn.ffn1, nn.Dense) and ffn.ffn1.name == 'F/Dense1' and ffn.ffn1.use_bias is False
    assert isinstance(ffn.ffn2, nn.Dense) and ffn.ffn2.name == 'F/Dense2' and ffn.ffn2.use_bias is False
    assert isinstance(ffn.act, nn.ReLU)

    block = nn.Block(C, H, use_bias=False, name='B')
    assert isinstance(block.attn, nn.MaskedSelfAttention) and block.attn.name == 'B/Attn'
    assert isinstance(block.ln_attn, nn.LayerNorm) and block.ln_attn.name == 'B/LNAttn'
    assert isinstance(block.ffn, nn.FFN) and block.ffn.name == 'B/FFN'
    assert isinstance(block.ln_ffn, nn.LayerNorm) and block.ln_ffn.name == 'B/LNFFN'
    # use_bias reaches every Dense inside, the output projection and the FFN included.
    assert not any(k.endswith('/b') for k in block.parameters())


def test_parameters_move_between_layers_unchanged(rng):
    """A saved dict loads into a fresh layer with the same keys and gives the same output."""
    source = randomize(nn.Block(C, H), rng)
    target = nn.Block(C, H)
    target.update_parameters(source.parameters())
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    mask = nn.get_causal_mask(x)
    np.testing.assert_array_equal(source(x, mask=mask), target(x, mask=mask))


def test_ffn_with_another_activation_uses_it(rng):
    """The ReLU fast path applies only to ReLU: an activation put in `act` is honoured."""
    ffn = randomize(nn.FFN(6), rng)
    ffn.act = nn.Tanh(name='FFN/Tanh')
    x = rng.standard_normal((4, 6))
    expected = ffn.ffn2(np.tanh(ffn.ffn1(x)))
    np.testing.assert_allclose(ffn(x), expected, rtol=1e-13)
    dy = rng.standard_normal((4, 6))
    y, cache = ffn.forward(x)
    dx = ffn.backward(x, cache, dy, {})
    W1, W2 = ffn.ffn1.get_parameter('W'), ffn.ffn2.get_parameter('W')
    t = np.tanh(ffn.ffn1(x))
    np.testing.assert_allclose(dx, ((dy @ W2.T) * (1 - t ** 2)) @ W1.T, rtol=1e-12)


# ------------------------------------------------------------------ get_causal_mask
@pytest.mark.parametrize('shape', [(3, 5, 7), (2, 6), (4, 1, 3)])
def test_get_causal_mask(shape, rng):
    x = rng.standard_normal(shape) if len(shape) == 3 else rng.integers(0, 9, size=shape)
    mask = nn.get_causal_mask(x)
    b, t = shape[:2]
    assert mask.shape == (b, t, t) and mask.dtype == np.bool_
    i, j = np.indices((t, t))
    for k in range(b):
        np.testing.assert_array_equal(mask[k], j > i)       # True above the diagonal: the future
    mask[0, 0, 0] = True                                    # a fresh, writable array per call
    assert not nn.get_causal_mask(x)[0, 0, 0]


def test_get_causal_mask_needs_batch_and_time():
    with pytest.raises(ValueError, match=r'get_causal_mask: expected .*\[B, T, \.\.\.\].*\(5,\)'):
        nn.get_causal_mask(np.zeros(5))


def test_key_bias_has_no_effect_and_zero_gradient(rng):
    """bk adds q_i . bk to the whole row i of scores; softmax ignores that, so y does not
    depend on bk and its gradient is returned as exact zeros (not roundoff)."""
    layer = make_msa(rng)
    x = rng.standard_normal((B, T, C))
    mask = nn.get_causal_mask(x)
    y = layer(x, mask=mask)
    shifted = layer.parameters()
    shifted['MSA/DenseK/b'] = shifted['MSA/DenseK/b'] + 3.0 * rng.standard_normal(C)
    layer.update_parameters(shifted)
    np.testing.assert_allclose(layer(x, mask=mask), y, rtol=1e-12, atol=1e-12)
    _, _, grads = run(layer, x, rng.standard_normal((B, T, C)), mask=mask)
    np.testing.assert_array_equal(grads['MSA/DenseK/b'], np.zeros(C))
    assert np.abs(grads['MSA/DenseQ/b']).max() > 1e-3       # the other biases do matter
