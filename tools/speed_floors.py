"""How far below torch NumPy can go on the four missed speed targets: their floors, measured.

For Sigmoid, GELU, Softmax and LayerNorm (forward + backward, float32, the issue's
shapes) this times, paired against torch's forward + autograd backward on one thread:

- ``nn``: the layer itself, built as the speed-target benchmark builds it
  (`benchmarks.torch_side.target_pair`: random parameters, the same torch side);
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
import zlib
from collections.abc import Callable

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import timing, torch_side  # noqa: E402


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


#: target name -> the floor under it.
FLOORS: dict[str, Callable[[np.ndarray, np.ndarray], Callable[[], object]]] = {
    'sigmoid': _exp_floor, 'gelu': _exp_floor, 'softmax': _exp_floor, 'layernorm': _memory_floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--budget', type=float, default=2.0, help='seconds per paired ratio')
    args = parser.parse_args()
    timing.steady_allocator()
    print('paired ratios to torch forward + backward (one thread each, float32):')
    print(f'{"target":32s} {"nn":>6s} {"floor":>6s} {"pass":>6s}')
    with timing.pinned():
        for target in torch_side.TARGETS:
            if target.name not in FLOORS:
                continue
            rng = np.random.default_rng(zlib.crc32(target.name.encode()))
            pair, reason = torch_side.target_pair(target, rng)
            if reason:
                raise SystemExit(reason)
            x, dy = (rng.standard_normal(target.shape, dtype=np.float32) for _ in range(2))
            ratios = [timing.paired_ratio(fn, pair.torch, budget=args.budget, min_sample=1e-2)[0]
                      for fn in (pair.nn, FLOORS[target.name](x, dy), _one_pass(x))]
            name = f'{target.needs} {list(target.shape)}'
            print(f'{name:32s} ' + ' '.join(f'{r:6.2f}' for r in ratios), flush=True)


if __name__ == '__main__':
    main()
