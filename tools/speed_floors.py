"""How far below torch NumPy can go on the four missed speed targets: their floors, measured.

For Sigmoid, GELU, Softmax and LayerNorm (forward + backward, float32, the issue's
shapes) this times, paired against torch's forward + autograd backward on one thread:

- ``nn``: the layer itself;
- ``floor``: work no NumPy formulation can skip, each part a single ufunc or BLAS call:
  - Sigmoid, GELU, Softmax: one ``np.exp`` over the input (each needs at least one
    exponential per element) plus one multiplication (the backward's ``dy * ...``);
  - LayerNorm: its unavoidable memory traffic done by the cheapest calls:
    ``np.add(x, 0, out=y)`` (read x, write y) and ``np.subtract(x, dy, out=dx)``
    (read x and dy, write dx), with no arithmetic beyond one operation per element;
- ``pass``: one more elementwise multiplication over the same array, the price of
  each pass a formulation adds on top of the floor.

torch fuses each layer into one or two passes; NumPy runs one ufunc per operation, so
a NumPy formulation costs at least ``floor + k * pass`` for its k extra operations.
The paired ratios (median over alternating samples) are what the README quotes.

Usage: ``python tools/speed_floors.py [--budget 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import nn  # noqa: E402
from benchmarks import timing  # noqa: E402
from reference.registry import randomize  # noqa: E402


def _nn(layer: nn.Layer, x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    def run():
        y, cache = layer.forward(x)
        return layer.backward(x, cache, dy, {})
    return run


def _torch(fn: Callable[..., torch.Tensor], x: np.ndarray, dy: np.ndarray, *params: np.ndarray):
    xt = torch.from_numpy(x).requires_grad_()
    pt = [torch.from_numpy(p).requires_grad_() for p in params]
    dyt = torch.from_numpy(dy)
    return lambda: torch.autograd.grad(fn(xt, *pt), (xt, *pt), dyt)


def _exp_floor(x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    out = np.empty_like(x)

    def run():
        with np.errstate(over='ignore', under='ignore'):
            np.exp(x, out=out)
        return np.multiply(dy, out)
    return run


def _memory_floor(x: np.ndarray, dy: np.ndarray) -> Callable[[], object]:
    def run():
        return np.add(x, 0, out=np.empty_like(x)), np.subtract(x, dy, out=np.empty_like(x))
    return run


def _one_pass(x: np.ndarray) -> Callable[[], object]:
    out = np.empty_like(x)
    return lambda: np.multiply(x, x, out=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--budget', type=float, default=2.0, help='seconds per paired ratio')
    args = parser.parse_args()
    timing.steady_allocator()
    rng = np.random.default_rng(0)

    def data(*shape):
        return (rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32))

    rows = []
    x, dy = data(1024, 1024)
    rows.append(('Sigmoid [1024, 1024]', _nn(nn.Sigmoid(), x, dy), _torch(torch.sigmoid, x, dy),
                 _exp_floor(x, dy), x))
    x, dy = data(1024, 1024)
    rows.append(("GELU('none') [1024, 1024]", _nn(nn.GELU(), x, dy), _torch(F.gelu, x, dy), _exp_floor(x, dy), x))
    x, dy = data(64, 128, 128)
    rows.append(('Softmax [64, 128, 128]', _nn(nn.Softmax(), x, dy), _torch(lambda t: t.softmax(-1), x, dy),
                 _exp_floor(x, dy), x))
    x, dy = data(64, 128, 512)
    ln = randomize(nn.LayerNorm(512), rng)
    scale, shift = ln.get_parameter('scale'), ln.get_parameter('shift')
    rows.append(('LayerNorm(512) [64, 128, 512]', _nn(ln, x, dy),
                 _torch(lambda t, g, b: F.layer_norm(t, (512,), g, b), x, dy, scale, shift),
                 _memory_floor(x, dy), x))

    print('paired ratios to torch forward + backward (one thread each, float32):')
    print(f'{"target":32s} {"nn":>6s} {"floor":>6s} {"pass":>6s}')
    with timing.pinned():
        for name, ours, theirs, floor, x in rows:
            ratios = [timing.paired_ratio(fn, theirs, budget=args.budget, min_sample=1e-2)[0]
                      for fn in (ours, floor, _one_pass(x))]
            print(f'{name:32s} ' + ' '.join(f'{r:6.2f}' for r in ratios), flush=True)


if __name__ == '__main__':
    main()
