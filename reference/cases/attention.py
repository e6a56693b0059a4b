"""Cases for MaskedSelfAttention, FFN and Block.

Embedding sizes are not powers of two; heads 1, 2, 3 and 4. Masks are drawn per
input from its shape (the batch-of-one check draws them again for x[:1]):

- causal: `nn.get_causal_mask`, [B, T, T], or its [T, T] slice shared by the batch;
- padding: each sequence b has a random length L_b in [1, T]; keys j >= L_b are
  blocked (so every query still has key 0);
- random: each entry blocked with probability 0.4; rows where that blocks every
  key are possible and are forced in a few places, so the documented semantics
  (zero row, zero gradient) are checked against the mirror, which zeroes them.
"""

from __future__ import annotations

import numpy as np

import nn
from reference.registry import Case, Tol, normal, randomize


def causal(rng: np.random.Generator, x: np.ndarray) -> dict:
    return {'mask': nn.get_causal_mask(x)}


def causal_2d(rng: np.random.Generator, x: np.ndarray) -> dict:
    return {'mask': nn.get_causal_mask(x)[0].copy()}


def padding(rng: np.random.Generator, x: np.ndarray) -> dict:
    B, T = x.shape[:2]
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = max(1, T - 2)          # at least one sequence is really padded
    blocked = np.arange(T)[None, None, :] >= lengths[:, None, None]
    return {'mask': np.broadcast_to(blocked, (B, T, T)).copy()}


def causal_padding(rng: np.random.Generator, x: np.ndarray) -> dict:
    return {'mask': causal(rng, x)['mask'] | padding(rng, x)['mask']}


def random_with_blocked_rows(rng: np.random.Generator, x: np.ndarray) -> dict:
    B, T = x.shape[:2]
    mask = rng.random((B, T, T)) < 0.4
    mask[0, T // 2, :] = True           # a fully blocked query row in the first sample
    mask[-1, -1, :] = True              # and in the last
    return {'mask': mask}


# float32 against torch: the gradients of q and k pass through four dependent float32
# products (projection, scores, softmax backward, projection) and reach |g| ~ 100 with
# these random weights (std 0.5), so roundoff is absolute, ~1e-6 * max|g|, not per
# element. Measured over 5 seeds of every case below: torch's own float32 gradients
# differ from the float64 truth by up to 5.8e-5, ours by up to 6.3e-5, ours from torch's
# by up to 4.4e-5. atol 1e-4 covers that; rtol stays the default.
CHAIN_F32 = {'float32': Tol(rtol=1.3e-6, atol=1e-4)}


def msa(embed_dim: int, n_heads: int, **kw):
    return lambda rng: randomize(nn.MaskedSelfAttention(embed_dim, n_heads, **kw), rng)


def block(embed_dim: int, n_heads: int, **kw):
    return lambda rng: randomize(nn.Block(embed_dim, n_heads, **kw), rng)


CASES = [
    Case('h1-nomask', nn.MaskedSelfAttention, msa(12, 1), normal(3, 5, 12), tol=CHAIN_F32),
    Case('h2-causal', nn.MaskedSelfAttention, msa(18, 2), normal(2, 7, 18), kwargs=causal, tol=CHAIN_F32),
    Case('h4-padding', nn.MaskedSelfAttention, msa(20, 4), normal(3, 6, 20), kwargs=padding, tol=CHAIN_F32),
    Case('h4-causal-2d-mask', nn.MaskedSelfAttention, msa(20, 4, name='Attn0'), normal(2, 5, 20),
         kwargs=causal_2d, tol=CHAIN_F32),
    Case('h2-no-bias-causal-padding', nn.MaskedSelfAttention, msa(14, 2, use_bias=False),
         normal(3, 6, 14), kwargs=causal_padding, tol=CHAIN_F32),
    Case('h3-T1-causal', nn.MaskedSelfAttention, msa(9, 3), normal(4, 1, 9), kwargs=causal, tol=CHAIN_F32),
    Case('h1-T1-nomask', nn.MaskedSelfAttention, msa(6, 1), normal(3, 1, 6), tol=CHAIN_F32),
    Case('h2-random-mask-blocked-rows', nn.MaskedSelfAttention, msa(10, 2), normal(3, 5, 10),
         kwargs=random_with_blocked_rows, tol=CHAIN_F32),

    Case('3d', nn.FFN, lambda rng: randomize(nn.FFN(10), rng), normal(3, 5, 10)),
    Case('2d-no-bias', nn.FFN, lambda rng: randomize(nn.FFN(7, use_bias=False, name='FFN2'), rng),
         normal(6, 7)),

    Case('h2-causal', nn.Block, block(12, 2), normal(2, 5, 12), kwargs=causal, tol=CHAIN_F32),
    Case('h4-padding', nn.Block, block(12, 4, name='Block0'), normal(3, 4, 12), kwargs=padding,
         tol=CHAIN_F32),
    Case('h1-nomask', nn.Block, block(6, 1), normal(2, 3, 6), tol=CHAIN_F32),
    Case('h3-no-bias-causal', nn.Block, block(9, 3, use_bias=False), normal(2, 4, 9), kwargs=causal,
         tol=CHAIN_F32),
    Case('h2-T1', nn.Block, block(10, 2), normal(3, 1, 10), kwargs=causal_2d, tol=CHAIN_F32),
    Case('h2-random-mask-blocked-rows', nn.Block, block(10, 2), normal(3, 5, 10),
         kwargs=random_with_blocked_rows, tol=CHAIN_F32),
]
