"""Times MaskedSelfAttention and Block (forward + backward, float32) against torch.

Both sides run on one thread (threadpoolctl for NumPy's BLAS, torch.set_num_threads),
in the same process, interleaved call by call in a random order per round, so machine
noise hits all alike. Each
torch equivalent is checked to compute the same output as the nn layer before it is
timed. The ratio reported is median(nn) / median(torch) against the *fastest* torch
equivalent of that run (every equivalent's ratio is printed too), and the median of the
per-round ratios beside it.

Torch equivalents (the same parameters, the same bool mask, causal):

- ``sdpa+mask``: four F.linear projections and F.scaled_dot_product_attention given the
  mask as a bool tensor (what the nn layer is given);
- ``sdpa+is_causal``: the same with ``is_causal=True`` instead, which lets torch skip the
  blocked half of the scores (the nn layer takes any mask, so cannot);
- ``fused-qkv+...``: q, k, v from one [C, 3C] F.linear, like torch's own MultiheadAttention;
- ``MultiheadAttention`` (and ``TransformerEncoderLayer(norm_first=True)`` for Block).

Usage: ``python tools/time_attention.py [--rounds 25] [--batch 8] [--time 128] [--embed 256] [--heads 4]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import nn  # noqa: E402
from reference.registry import randomize  # noqa: E402


def torch_attention(p: dict, prefix: str, x, H: int, fused: bool, allowed, causal: bool):
    B, T, C = x.shape

    def heads(t):
        return t.view(B, T, H, C // H).transpose(1, 2)

    if fused:
        q, k, v = F.linear(x, p[f'{prefix}/Wqkv'], p[f'{prefix}/bqkv']).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
    else:
        q, k, v = (heads(F.linear(x, p[f'{prefix}/Dense{n}/Wt'], p[f'{prefix}/Dense{n}/b'])) for n in 'QKV')
    if causal:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return F.linear(out.transpose(1, 2).reshape(B, T, C), p[f'{prefix}/DenseO/Wt'], p[f'{prefix}/DenseO/b'])


def torch_params(layer: nn.Layer, attn_prefix: str) -> dict[str, torch.Tensor]:
    """Leaf tensors in torch's layouts (W transposed, q/k/v fused) from the nn parameters."""
    src = layer.parameters()
    p = {}
    for key, value in src.items():
        if key.endswith('/W'):
            p[key + 't'] = torch.from_numpy(np.ascontiguousarray(value.T))
        else:
            p[key] = torch.from_numpy(value.copy())
    p[f'{attn_prefix}/Wqkv'] = torch.cat([p[f'{attn_prefix}/Dense{n}/Wt'] for n in 'QKV'])
    p[f'{attn_prefix}/bqkv'] = torch.cat([p[f'{attn_prefix}/Dense{n}/b'] for n in 'QKV'])
    return {k: v.requires_grad_() for k, v in p.items()}


def msa_variants(layer: nn.MaskedSelfAttention, mask: np.ndarray):
    H = layer.n_heads
    p = torch_params(layer, layer.name)
    allowed = torch.from_numpy(~mask)[:, None]
    variants = {}
    for fused in (False, True):
        for causal in (False, True):
            name = ('fused-qkv+' if fused else '') + ('sdpa+is_causal' if causal else 'sdpa+mask')
            variants[name] = (lambda x, f=fused, c=causal: torch_attention(p, layer.name, x, H, f, allowed, c))
    mha = torch.nn.MultiheadAttention(layer.embed_dim, H, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(p[f'{layer.name}/Wqkv'])
        mha.in_proj_bias.copy_(p[f'{layer.name}/bqkv'])
        mha.out_proj.weight.copy_(p[f'{layer.name}/DenseO/Wt'])
        mha.out_proj.bias.copy_(p[f'{layer.name}/DenseO/b'])
    causal_tt = torch.from_numpy(mask[0].copy())     # MultiheadAttention's bool mask: True = blocked
    variants['MultiheadAttention'] = lambda x: mha(x, x, x, attn_mask=causal_tt, need_weights=False)[0]
    variants['MultiheadAttention+is_causal'] = lambda x: mha(x, x, x, attn_mask=causal_tt, need_weights=False,
                                                             is_causal=True)[0]
    leaves = list(p.values()) + list(mha.parameters())
    return variants, leaves


def block_variants(layer: nn.Block, mask: np.ndarray):
    C, H = layer.embed_dim, layer.n_heads
    n = layer.name
    p = torch_params(layer, f'{n}/Attn')
    allowed = torch.from_numpy(~mask)[:, None]

    def block(x, fused, causal):
        h = x + torch_attention(p, f'{n}/Attn', F.layer_norm(x, (C,), p[f'{n}/LNAttn/scale'], p[f'{n}/LNAttn/shift']),
                                H, fused, allowed, causal)
        f = F.layer_norm(h, (C,), p[f'{n}/LNFFN/scale'], p[f'{n}/LNFFN/shift'])
        f = F.linear(torch.relu(F.linear(f, p[f'{n}/FFN/Dense1/Wt'], p[f'{n}/FFN/Dense1/b'])),
                     p[f'{n}/FFN/Dense2/Wt'], p[f'{n}/FFN/Dense2/b'])
        return h + f

    variants = {}
    for fused in (False, True):
        for causal in (False, True):
            name = ('fused-qkv+' if fused else '') + ('sdpa+is_causal' if causal else 'sdpa+mask')
            variants[name] = (lambda x, f=fused, c=causal: block(x, f, c))
    enc = torch.nn.TransformerEncoderLayer(C, H, dim_feedforward=4 * C, dropout=0.0, activation='relu',
                                           batch_first=True, norm_first=True)
    with torch.no_grad():
        a = enc.self_attn
        a.in_proj_weight.copy_(p[f'{n}/Attn/Wqkv'])
        a.in_proj_bias.copy_(p[f'{n}/Attn/bqkv'])
        a.out_proj.weight.copy_(p[f'{n}/Attn/DenseO/Wt'])
        a.out_proj.bias.copy_(p[f'{n}/Attn/DenseO/b'])
        enc.linear1.weight.copy_(p[f'{n}/FFN/Dense1/Wt'])
        enc.linear1.bias.copy_(p[f'{n}/FFN/Dense1/b'])
        enc.linear2.weight.copy_(p[f'{n}/FFN/Dense2/Wt'])
        enc.linear2.bias.copy_(p[f'{n}/FFN/Dense2/b'])
        for ln, name in ((enc.norm1, 'LNAttn'), (enc.norm2, 'LNFFN')):
            ln.weight.copy_(p[f'{n}/{name}/scale'])
            ln.bias.copy_(p[f'{n}/{name}/shift'])
    causal_tt = torch.from_numpy(mask[0].copy())
    variants['TransformerEncoderLayer'] = lambda x: enc(x, src_mask=causal_tt)
    variants['TransformerEncoderLayer+is_causal'] = lambda x: enc(x, src_mask=causal_tt, is_causal=True)
    leaves = list(p.values()) + list(enc.parameters())
    return variants, leaves


def measure(layer: nn.Layer, variants, leaves, x: np.ndarray, mask: np.ndarray, dy: np.ndarray, rounds: int):
    """Alternates nn and every torch equivalent `rounds` times; returns {name: [seconds]}."""
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    dy_t = torch.from_numpy(dy.copy())

    def run_nn():
        y, cache = layer.forward(x, mask=mask)
        layer.backward(x, cache, dy, {})
        return y

    def run_torch(fn):
        for leaf in (*leaves, x_t):
            leaf.grad = None
        y = fn(x_t)
        y.backward(dy_t)
        return y

    y = run_nn()
    for name, fn in variants.items():     # the same computation, or the comparison means nothing
        y_t = run_torch(fn).detach().numpy()
        err = np.abs(y_t - y).max() / np.abs(y).max()
        if err > 1e-4:
            raise AssertionError(f'torch equivalent {name!r} differs from nn: max relative error {err:.2g}')
    for _ in range(2):                    # warm-up
        run_nn()
        for fn in variants.values():
            run_torch(fn)
    runs = {'nn': run_nn, **{name: (lambda fn=fn: run_torch(fn)) for name, fn in variants.items()}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = np.random.default_rng(1)
    for _ in range(rounds):
        # A fresh order every round: no side always runs right after the other.
        for name in order.permutation(list(runs)):
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def report(title: str, times: dict[str, list[float]]) -> float:
    nn_t = np.array(times['nn'])
    med = {name: float(np.median(t)) for name, t in times.items()}
    fastest = min((n for n in med if n != 'nn'), key=med.get)
    print(f'\n{title}: nn {med["nn"] * 1e3:.1f} ms (median of {len(nn_t)})')
    for name in med:
        if name == 'nn':
            continue
        paired = float(np.median(nn_t / np.array(times[name])))
        mark = '  <- fastest torch' if name == fastest else ''
        print(f'  torch {name:34s} {med[name] * 1e3:7.1f} ms   nn/torch {med["nn"] / med[name]:.2f} '
              f'(median per-round {paired:.2f}){mark}')
    ratio = med['nn'] / med[fastest]
    print(f'  RATIO {title} vs fastest torch ({fastest}): {ratio:.2f}')
    return ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=25)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--time', type=int, default=128)
    parser.add_argument('--embed', type=int, default=256)
    parser.add_argument('--heads', type=int, default=4)
    args = parser.parse_args(argv)
    threadpool_limits(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    B, T, C, H = args.batch, args.time, args.embed, args.heads
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    dy = rng.standard_normal((B, T, C)).astype(np.float32)
    mask = nn.get_causal_mask(x)
    print(f'forward + backward, float32, x [{B},{T},{C}], {H} heads, causal mask, 1 thread each '
          f'(numpy {np.__version__}, torch {torch.__version__})')
    ratios = {}
    # Scale 0.05: weights like a trained model's (softmax neither flat nor one-hot).
    msa = randomize(nn.MaskedSelfAttention(C, H), rng, scale=0.05)
    ratios['MaskedSelfAttention'] = report('MaskedSelfAttention',
                                           measure(msa, *msa_variants(msa, mask), x, mask, dy, args.rounds))
    block = randomize(nn.Block(C, H), rng, scale=0.05)
    ratios['Block'] = report('Block', measure(block, *block_variants(block, mask), x, mask, dy, args.rounds))
    print('\nsummary: ' + ', '.join(f'{k} {v:.2f}x torch' for k, v in ratios.items()))


if __name__ == '__main__':
    main()
