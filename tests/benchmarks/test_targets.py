"""Speed targets from the layer issues: forward + backward, nn against torch, one thread, float32.

Each target is one group holding the nn layer (forward, then backward with a
Gaussian upstream gradient) and its torch mirror with the same parameters
(forward, then autograd), so the comparison is on identical math. The numpy
side records ``ratio_to_torch`` (paired, same run), ``target`` and
``meets_target``. A missed target is reported (extra_info, the ratio table),
not failed; a layer that has not landed, or has no mirror yet, is skipped
with a reason naming it, so it is picked up automatically once it lands.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from benchmarks import torch_side
from benchmarks.sidebyside import Row, paired, pedantic

pytestmark = pytest.mark.torch

_built: dict[str, torch_side.Pair] = {}


def _pair(target: torch_side.Target) -> torch_side.Pair:
    if target.name not in _built:
        _built.clear()
        pair, reason = torch_side.target_pair(target, np.random.default_rng(zlib.crc32(target.name.encode())))
        if reason:
            pytest.skip(reason)
        _built[target.name] = pair
    return _built[target.name]


@pytest.mark.parametrize('side', ['numpy', 'torch'])
@pytest.mark.parametrize('target', torch_side.TARGETS, ids=lambda t: t.name)
def test_target(benchmark, bench_env, ratio_rows, target, side):
    reason = target.missing()
    if reason:
        pytest.skip(reason)
    pair = _pair(target)
    shape = 'x'.join(map(str, target.shape))
    benchmark.group = f'target {target.name} fwd+bwd [{shape}] {target.note}'.strip()
    benchmark.extra_info.update(target_name=target.name, side=side, shape=list(target.shape),
                                target=target.target, note=target.note, **bench_env)
    pair.check()   # same forward and gradients on both sides (raises otherwise)
    seconds = pedantic(benchmark, pair.nn if side == 'numpy' else pair.torch)

    row = ratio_rows.setdefault(f'target {target.name}',
                                Row(f'target {target.name} fwd+bwd', target.name, shape, target=target.target))
    if side == 'torch':
        row.torch_median = seconds
        return
    row.nn_median = seconds
    ratio = paired(pair.nn, pair.torch, seconds)
    assert np.isfinite(ratio) and ratio > 0
    benchmark.extra_info.update(ratio_to_torch=round(ratio, 4), meets_target=bool(ratio <= target.target))
    row.ratio_to_torch = ratio
