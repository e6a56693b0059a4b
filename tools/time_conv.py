"""Times Conv2D, Conv1D and MaxPool2D (forward + backward, float32) against torch; Conv2D peak memory.

The issue's three shapes (channels-last on the nn side, the same logical shapes on torch's):

- ``conv2d``:  Conv2D 3x3, padding 1, x [8, 32, 32, 16] -> 32 channels;
- ``conv1d``:  Conv1D k3, padding 1, x [16, 256, 64] -> 64 channels;
- ``maxpool``: MaxPool2D 2x2, x [8, 32, 32, 32].

Both sides run on one thread (threadpoolctl for NumPy's BLAS, ``torch.set_num_threads(1)``),
in the same process, alternating call by call (the order flips every round), so the
machine's noise hits both alike. Each torch equivalent is first checked to compute the
same output and gradients as the nn layer. One call is ``forward`` then ``backward`` with
a fixed Gaussian upstream gradient; torch's ``.grad`` fields are reset before each call
so neither side accumulates into old buffers.

Torch equivalents:

- ``torch-NCHW``: torch's default layout, contiguous channels-first tensors (NCT for 1-D);
- ``torch-channels_last``: the same logical NCHW tensors in ``torch.channels_last`` memory
  format (the layout nn uses; torch's fastest CPU kernels for pooling are there);
- ``torch-permuted``: nn's channels-last arrays through ``permute`` (what a user holding
  NHWC/NTC data would write; for Conv1D the only other layout).

Each round times every side `repeats` times, taking turns, and keeps each side's
minimum; the ratio reported is the median over rounds of t(nn) / t(torch) against the
*fastest* torch equivalent (lowest median), with the ratio to every equivalent.

Memory: ``tracemalloc`` (NumPy reports its buffers to it) around one Conv2D forward +
backward, after a warm-up, counting only what the call allocates: its peak, and that
peak less the unavoidable results (y, dx, dW, db), against the size of the im2col buffer
``B*H'*W' x Kh*Kw*Cin`` (K*K x the input).

Usage: ``python tools/time_conv.py [--rounds 41] [--only conv2d,conv1d,maxpool]``
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import nn  # noqa: E402
from reference import layout  # noqa: E402
from reference.registry import randomize  # noqa: E402

TARGETS = {'conv2d': 1.5, 'conv1d': 1.5, 'maxpool': 2.0}


def nn_call(layer: nn.Layer, x: np.ndarray, dy: np.ndarray):
    def run():
        y, cache = layer.forward(x)
        grads: dict[str, np.ndarray] = {}
        dx = layer.backward(x, cache, dy, grads)
        return y, dx, grads
    return run


def torch_call(op, x_t: torch.Tensor, dy_t: torch.Tensor, leaves: list[torch.Tensor]):
    def run():
        for leaf in leaves:
            leaf.grad = None
        y = op(x_t)
        y.backward(dy_t)
        return y
    return run


def setup(name: str, rng: np.random.Generator):
    """(nn layer, x, dy, {torch name: (op, x_t, dy_t, leaves, to_nn_layout)})."""
    f32 = np.float32
    if name == 'conv2d':
        layer = randomize(nn.Conv2D(16, 32, 3, padding=1), rng)
        x = rng.standard_normal((8, 32, 32, 16)).astype(f32)
    elif name == 'conv1d':
        layer = randomize(nn.Conv1D(64, 64, 3, padding=1), rng)
        x = rng.standard_normal((16, 256, 64)).astype(f32)
    else:
        layer = nn.MaxPool2D(2)
        x = rng.standard_normal((8, 32, 32, 32)).astype(f32)
    y = layer(x)
    dy = rng.standard_normal(y.shape).astype(f32)
    params = layer.parameters()
    key = layer.name
    equivalents = {}

    def make_params():
        if name == 'maxpool':
            return None, None, []
        convert = layout.conv2d_weight if name == 'conv2d' else layout.conv1d_weight
        w = convert(torch.from_numpy(params[f'{key}/W'])).contiguous().requires_grad_()
        b = torch.from_numpy(params[f'{key}/b'].copy()).requires_grad_()
        return w, b, [w, b]

    def op_for(w, b):
        if name == 'conv2d':
            return lambda t: F.conv2d(t, w, b, padding=1)
        if name == 'conv1d':
            return lambda t: F.conv1d(t, w, b, padding=1)
        return lambda t: F.max_pool2d(t, 2)

    # Channels-first, contiguous (torch's default).
    w, b, leaves = make_params()
    x_cf = layout.channels_first(torch.from_numpy(x)).contiguous().requires_grad_()
    dy_cf = layout.channels_first(torch.from_numpy(dy)).contiguous()
    equivalents['torch-NCHW' if name != 'conv1d' else 'torch-NCT'] = (
        op_for(w, b), x_cf, dy_cf, [x_cf, *leaves], lambda t: layout.channels_last(t))
    if name != 'conv1d':
        w, b, leaves = make_params()
        if w is not None:
            w = w.detach().to(memory_format=torch.channels_last).requires_grad_()
            leaves = [w, b]
        x_cl = x_cf.detach().to(memory_format=torch.channels_last).requires_grad_()
        dy_cl = dy_cf.to(memory_format=torch.channels_last)
        equivalents['torch-channels_last'] = (op_for(w, b), x_cl, dy_cl, [x_cl, *leaves],
                                              lambda t: layout.channels_last(t))
    # nn's channels-last arrays through a permute.
    w, b, leaves = make_params()
    x_nl = torch.from_numpy(x.copy()).requires_grad_()
    inner = op_for(w, b)
    equivalents['torch-permuted'] = (lambda t: layout.channels_last(inner(layout.channels_first(t))),
                                     x_nl, torch.from_numpy(dy), [x_nl, *leaves], lambda t: t)
    return layer, x, dy, equivalents


def verify(name, layer, x, dy, equivalents) -> None:
    """Every torch equivalent computes nn's y, dx and parameter gradients.

    Normwise (max error <= 1e-4 of the largest entry): dW sums 8192 float32 products per
    entry, so entrywise float32 tolerances would flag summation order, not a different op.
    """
    y, dx, grads = nn_call(layer, x, dy)()
    for label, (op, x_t, dy_t, leaves, to_nn) in equivalents.items():
        y_t = torch_call(op, x_t, dy_t, leaves)()
        pairs = [('y', y, to_nn(y_t)), ('dx', dx, to_nn(x_t.grad))]
        if name != 'maxpool':
            convert_back = (lambda g: g.permute(2, 3, 1, 0)) if name == 'conv2d' else (lambda g: g.permute(2, 1, 0))
            pairs += [('W', grads[f'{layer.name}/W'], convert_back(leaves[1].grad)),
                      ('b', grads[f'{layer.name}/b'], leaves[2].grad)]
        for what, mine, theirs in pairs:
            theirs = theirs.detach().numpy()
            err, scale = float(np.abs(mine - theirs).max()), float(np.abs(theirs).max())
            if not err <= 1e-4 * scale:
                raise AssertionError(f'{name}: {label} disagrees with nn on {what}: max error {err:.3g}, '
                                     f'largest entry {scale:.3g}')


def time_alternating(calls: dict, rounds: int, repeats: int = 3,
                     min_sample: float = 2e-3) -> dict[str, list[float]]:
    """Per-round seconds per call of every callable.

    In each round every callable is timed `repeats` times, the callables taking turns
    (the order flips every round), and the round keeps each one's minimum: a preemption
    only ever adds time, so the minimum of neighbouring samples drops it, while taking
    turns keeps all sides under the same slower-moving load. Small kernels are repeated
    back to back to make samples of at least `min_sample` seconds.
    """
    numbers = {}
    for label, fn in calls.items():
        fn()
        start = time.perf_counter()
        fn()
        numbers[label] = max(1, int(np.ceil(min_sample / max(time.perf_counter() - start, 1e-9))))
    samples: dict[str, list[float]] = {label: [] for label in calls}
    order = list(calls)
    gc.disable()
    try:
        for r in range(rounds):
            best = {label: np.inf for label in calls}
            for _ in range(repeats):
                for label in (order if r % 2 == 0 else order[::-1]):
                    fn, number = calls[label], numbers[label]
                    start = time.perf_counter()
                    for _ in range(number):
                        fn()
                    best[label] = min(best[label], (time.perf_counter() - start) / number)
            for label in calls:
                samples[label].append(best[label])
    finally:
        gc.enable()
    return samples


def conv2d_memory(layer: nn.Conv2D, x: np.ndarray, dy: np.ndarray) -> dict[str, int]:
    run = nn_call(layer, x, dy)
    run()
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    y, dx, grads = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    B, H, W, C = x.shape
    kh, kw = layer.kernel_size
    Ho, Wo = y.shape[1:3]
    results = y.nbytes + dx.nbytes + sum(g.nbytes for g in grads.values())
    return {'peak': peak - base, 'results': results, 'im2col': B * Ho * Wo * kh * kw * C * x.itemsize,
            'input': x.nbytes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=41)
    parser.add_argument('--only', default='conv2d,conv1d,maxpool')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    worst = {}
    print(f'numpy {np.__version__}, torch {torch.__version__}, one thread each, float32, forward+backward, '
          f'{args.rounds} alternating rounds')
    for name in args.only.split(','):
        layer, x, dy, equivalents = setup(name, rng)
        verify(name, layer, x, dy, equivalents)
        calls = {'nn': nn_call(layer, x, dy)}
        calls.update({label: torch_call(op, x_t, dy_t, leaves)
                      for label, (op, x_t, dy_t, leaves, _) in equivalents.items()})
        samples = time_alternating(calls, args.rounds)
        med = {label: float(np.median(s)) for label, s in samples.items()}
        nn_times = np.array(samples['nn'])
        paired = {label: float(np.median(nn_times / np.array(s))) for label, s in samples.items() if label != 'nn'}
        fastest = min((label for label in med if label != 'nn'), key=med.get)
        ratio = paired[fastest]
        worst[name] = ratio
        print(f'\n{name}: x {list(x.shape)} -> y {list(layer(x).shape)}')
        for label, t in med.items():
            extra = '' if label == 'nn' else f'   nn/this: {paired[label]:.2f}x'
            print(f'  {label:22s} {t * 1e3:8.3f} ms{extra}')
        verdict = 'ok' if ratio <= TARGETS[name] else 'OVER TARGET'
        print(f'  ratio vs the fastest torch ({fastest}): {ratio:.2f}x (median of the per-round ratios; '
              f'ratio of medians {med["nn"] / med[fastest]:.2f}x); target <= {TARGETS[name]}x: {verdict}')
        if name == 'conv2d':
            mem = conv2d_memory(layer, x, dy)
            extra = mem['peak'] - mem['results']
            print(f'  peak memory of one forward+backward (tracemalloc): {mem["peak"] / 2**20:.2f} MiB; '
                  f'less the results (y, dx, dW, db): {extra / 2**20:.2f} MiB')
            print(f'  im2col buffer (K*K x input): {mem["im2col"] / 2**20:.2f} MiB; input {mem["input"] / 2**20:.2f} '
                  f'MiB; extra / im2col = {extra / mem["im2col"]:.2f}')
    return 0 if all(worst[n] <= TARGETS[n] for n in worst) else 1


if __name__ == '__main__':
    sys.exit(main())
