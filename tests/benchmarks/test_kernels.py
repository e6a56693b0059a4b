"""Hot kernels, nn against torch: one group per kernel, numpy and torch side by side.

GEMM kernels: Dense forward, its dx and dW GEMMs (and the whole backward),
attention's QK^T and AV, the convolution (im2col GEMM). Memory-bound kernels:
ReLU, LeakyReLU, Sigmoid, Tanh, GELU forward and backward, Softmax, LayerNorm,
the Adam update. Shapes and references come from `benchmarks.kernels` (the
same catalogue the regression gate reads), at the benchmark shapes.

The numpy side records in ``extra_info``: ``ratio_to_torch`` (paired, same
run), ``fraction_of_limit`` (np.matmul GFLOP/s on the same GEMM shapes, or the
memory roofline from a same-size np.copyto), and the achieved GFLOP/s or GB/s.
Both sides assert they compute the same result before they are timed.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from benchmarks import kernels, torch_side
from benchmarks.sidebyside import Row, paired, pedantic

pytestmark = pytest.mark.torch

_built: dict[str, tuple[kernels.Bound, torch_side.Pair]] = {}


def _pair(kernel: kernels.Kernel) -> tuple[kernels.Bound, torch_side.Pair]:
    """Both sides of a kernel on the same arrays, shared by its numpy and torch tests."""
    if kernel.name not in _built:
        if len(_built) >= 2:
            _built.pop(next(iter(_built)))
        bound = kernel.build(np.random.default_rng(zlib.crc32(kernel.name.encode())), bench=True)
        _built[kernel.name] = (bound, torch_side.kernel_pair(kernel, bound))
    return _built[kernel.name]


@pytest.mark.parametrize('side', ['numpy', 'torch'])
@pytest.mark.parametrize('name', [k.name for k in kernels.KERNELS])
def test_kernel(benchmark, bench_env, ratio_rows, name, side):
    kernel = kernels.get(name)
    reason = kernel.missing()
    if reason:
        pytest.skip(reason)
    bound, pair = _pair(kernel)
    if bound.layer is not None:
        reason = torch_side.mirror_missing(bound.layer)
        if reason:
            pytest.skip(reason)
    shape = 'x'.join(map(str, kernel.bench_shape))
    benchmark.group = f'kernel {name} [{shape}]'
    benchmark.extra_info.update(kernel=name, side=side, kind=kernel.kind, shape=list(kernel.bench_shape),
                                note=kernel.note, **bench_env)
    pair.check()   # the two sides compute the same thing (raises otherwise)
    fn = pair.nn if side == 'numpy' else pair.torch
    seconds = pedantic(benchmark, fn)

    row = ratio_rows.setdefault(name, Row(f'kernel {name}', name, shape))
    if side == 'torch':
        row.torch_median = seconds
        return
    row.nn_median = seconds
    ratio = paired(pair.nn, pair.torch, seconds)
    to_limit = paired(pair.nn, bound.limit, seconds)
    fraction = (bound.work / bound.limit_work) / to_limit
    assert np.isfinite(ratio) and ratio > 0 and np.isfinite(fraction) and fraction > 0
    if kernel.kind == 'gemm':
        limit, rate = 'np.matmul GFLOP/s, same GEMM shapes', f'{bound.work / seconds / 1e9:.1f} GFLOP/s'
    else:
        limit, rate = 'memory roofline (same-size np.copyto)', f'{bound.work / seconds / 1e9:.1f} GB/s'
    benchmark.extra_info.update(ratio_to_torch=round(ratio, 4), fraction_of_limit=round(fraction, 4),
                                limit=limit, rate=rate)
    row.ratio_to_torch, row.fraction_of_limit, row.limit, row.rate = ratio, fraction, limit, rate
