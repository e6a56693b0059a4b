"""Mirrors of MaskedSelfAttention, FFN and Block.

The attention itself is torch's `F.scaled_dot_product_attention` (its default
scale is ours, 1/sqrt(head_dim)); the projections, LayerNorms and the FFN are
the children's own mirrors. torch's boolean mask means True = takes part, ours
True = blocked, so the mirror passes its negation. For a query row whose every
key is blocked torch's softmax is 0/0 = NaN; our documented semantics are a zero
row. The mirror lets such rows attend everywhere (any finite values) and then
zeroes their output with `torch.where`, which sends them no gradient either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import nn
from reference.mirrors import mirror, torch_forward


@mirror(nn.MaskedSelfAttention)
def masked_self_attention(layer: nn.MaskedSelfAttention, params, x, mask=None):
    B, T, C = x.shape
    H, D = layer.n_heads, layer.head_dim

    def heads(t: torch.Tensor) -> torch.Tensor:     # [B, T, C] -> [B, H, T, D]
        return t.reshape(B, T, H, D).transpose(1, 2)

    q = heads(torch_forward(layer.q_proj, params, x))
    k = heads(torch_forward(layer.k_proj, params, x))
    v = heads(torch_forward(layer.v_proj, params, x))
    if mask is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        blocked = mask if mask.dim() == 2 else mask[:, None]       # [T, T] or [B, 1, T, T]
        row_blocked = blocked.all(dim=-1, keepdim=True)           # [..., T, 1]
        allowed = ~blocked | row_blocked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        out = torch.where(row_blocked, torch.zeros((), dtype=out.dtype), out)
    out = out.transpose(1, 2).reshape(B, T, C)
    return torch_forward(layer.output_proj, params, out)


@mirror(nn.FFN)
def ffn(layer: nn.FFN, params, x):
    h = torch_forward(layer.ffn1, params, x)
    return torch_forward(layer.ffn2, params, torch_forward(layer.act, params, h))


@mirror(nn.Block)
def block(layer: nn.Block, params, x, mask=None):
    h = x + torch_forward(layer.attn, params, torch_forward(layer.ln_attn, params, x), mask=mask)
    return h + torch_forward(layer.ffn, params, torch_forward(layer.ln_ffn, params, h))
