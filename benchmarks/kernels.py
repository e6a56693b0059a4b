"""The hot kernels of `nn`: what the gate times and the benchmarks compare with torch.

A `Kernel` is data: a name (``'dense.forward'``), its bottleneck (``'gemm'`` or
``'memory'``), the `nn` attribute it needs (layers that have not landed make it
unavailable, with a reason naming the missing layer) and ``build(rng)`` which
returns a `Bound` kernel: the nn call on fixed float32 arrays, plus

- ``reference``: plain NumPy of the same shape and bottleneck, the gate's
  denominator (np.matmul on the same GEMM shapes for GEMM-bound kernels, a
  same-size ufunc for memory-bound ones). Its time moves with the machine's
  load like the kernel's does, so the *ratio* is stable where absolute times
  are not;
- ``limit`` and ``work``/``limit_work``: the machine's limit on this shape, for
  the "distance from the limit" the benchmarks report. GEMM kernels: np.matmul
  GFLOP/s on the same (contiguous) GEMM shapes; memory-bound kernels: the
  memory roofline, i.e. the bytes the kernel must move at the bandwidth of a
  same-size ``np.copyto`` (read + write counted). ``fraction_of_limit =
  (work / limit_work) * t(limit) / t(kernel)``; 1.0 means at the limit.

Layers are built through the registry (`reference.registry`) where a case
builds them at any shape (the activations, Softmax); layers whose size is part
of the constructor are built here at benchmark shapes and randomized with the
registry's `randomize` (never default parameters). The arrays are Gaussian
inputs and Gaussian upstream gradients (never all-ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import nn

F32 = np.float32
BYTES = np.dtype(F32).itemsize


@dataclasses.dataclass
class Bound:
    """One kernel, built on fixed arrays, ready to time.

    Attributes:
        run: the nn kernel (no arguments); what the gate and the benchmarks time.
        reference: NumPy of the same shape and bottleneck (the gate's denominator).
        limit: the machine's limit on this shape (np.matmul or np.copyto).
        work: FLOPs (gemm) or bytes the kernel must move (memory).
        limit_work: FLOPs or bytes of one `limit` call.
        layer, x, dy, kwargs, cache: what the torch side needs to mirror the call.
        extra: anything else the torch side needs (e.g. the optimizer's state).
    """
    run: Callable[[], Any]
    reference: Callable[[], Any]
    limit: Callable[[], Any]
    work: float
    limit_work: float
    layer: nn.Layer | None = None
    x: np.ndarray | None = None
    dy: np.ndarray | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A hot kernel: its name, bottleneck, shapes and how to build it.

    Attributes:
        name: ``'{family}.{phase}'``, e.g. ``'relu.backward'``; the gate's key.
        kind: ``'gemm'`` or ``'memory'``.
        needs: the `nn` attribute the kernel needs (its layer); missing -> unavailable.
        phase: ``'forward'``, ``'backward'``, ``'step'`` or ``'gemm'`` (a bare GEMM expression).
        shape: the gate's shape: small enough that one call takes ~10-500 us, so a
            sample fits between two preemptions and the working set stays near the
            core's own L2 cache (shared-L3 contention from other processes does not
            reach it).
        bench_shape: the benchmarks' shape (the sizes the layers are used at).
        factory: ``shape -> (rng -> Bound)``.
        gated: whether the regression gate times it (bare GEMM expressions are benchmarked only).
        note: one line for reports.
    """
    name: str
    kind: str
    needs: str
    phase: str
    shape: tuple[int, ...]
    bench_shape: tuple[int, ...]
    factory: Callable[[tuple[int, ...]], Callable[[np.random.Generator], Bound]]
    gated: bool = True
    note: str = ''
    reference: str = ''

    def missing(self) -> str | None:
        """Why this kernel cannot run yet (its layer has not landed), or None."""
        if not hasattr(nn, self.needs):
            return f'nn.{self.needs} has not landed yet ({self.name} needs it)'
        return None

    def build(self, rng: np.random.Generator, bench: bool = False) -> Bound:
        """The kernel on fixed arrays: the gate's shape, or the benchmarks' with ``bench=True``."""
        return self.factory(self.bench_shape if bench else self.shape)(rng)


# ----------------------------------------------------------------------------- helpers
ALIGN = 64


def aligned(array: np.ndarray, align: int = ALIGN) -> np.ndarray:
    """A copy of `array` whose data starts on an `align`-byte boundary (a cache line).

    malloc only promises 16 bytes, so where an input lands within a cache line
    depends on what the process allocated before it; SIMD loops over inputs at
    different offsets run at different speeds, and that made a kernel's ratio
    to its reference differ between processes. Aligned inputs take it out.
    """
    buf = np.empty(array.nbytes + align, np.uint8)
    start = (-buf.ctypes.data) % align
    out = buf[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def aligned_cache(cache: dict[str, Any]) -> dict[str, Any]:
    """The forward's cache with every array moved to an aligned copy (same values)."""
    return {k: aligned(v) if isinstance(v, np.ndarray) else v for k, v in cache.items()}


def gaussian(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Gaussian float32 of `shape`, cache-line aligned."""
    return aligned((scale * rng.standard_normal(shape)).astype(F32))


def from_case(case_id: str, rng: np.random.Generator) -> nn.Layer:
    """The registry case's layer (float32), for layers whose case builds them at any shape."""
    from reference import registry
    case = registry.get(case_id)
    layer = case.build(rng).astype(F32)
    layer.train(case.mode == 'train')
    return layer


def randomized(layer: nn.Layer, rng: np.random.Generator) -> nn.Layer:
    """The layer with random parameters (the registry's rule: no scale of 1, no zero bias)."""
    from reference.registry import randomize
    layer = randomize(layer, rng).astype(F32)
    layer.update_parameters({key: aligned(value) for key, value in layer.parameters().items()})
    return layer


def copy_limit(n: int) -> tuple[Callable[[], Any], float]:
    """np.copyto of `n` float32 elements between preallocated arrays, and the bytes it moves."""
    src = aligned(np.random.default_rng(1).standard_normal(n, dtype=F32))
    dst = aligned(np.empty_like(src))
    return (lambda: np.copyto(dst, src)), 2.0 * n * BYTES


def matmul_limit(*shapes: tuple[tuple[int, int], tuple[int, int]]) -> tuple[Callable[[], Any], float]:
    """np.matmul on contiguous operands of the given (M, K), (K, N) shapes, and its FLOPs."""
    rng = np.random.default_rng(2)
    operands = [(gaussian(rng, a), gaussian(rng, b)) for a, b in shapes]

    def limit() -> None:
        for a, b in operands:
            np.matmul(a, b)
    flops = sum(2.0 * a[0] * a[1] * b[1] for a, b in shapes)
    return limit, flops


def elementwise(layer_of: Callable[[np.random.Generator], nn.Layer], phase: str, shape: tuple[int, ...],
                forward_ref: Callable[..., Any], backward_ref: Callable[..., Any] | None = None,
                scale: float = 1.0) -> Callable[[np.random.Generator], Bound]:
    """A memory-bound layer kernel: forward moves 2 tensors (x in, y out), backward 3 (two in, dx out).

    The gate's reference: ``forward_ref(layer, x)`` for a forward,
    ``backward_ref(layer, x, dy, cache)`` for a backward (default
    ``np.multiply(x, dy)``: two same-size tensors in, one out).
    """
    def build(rng: np.random.Generator) -> Bound:
        layer = layer_of(rng)
        x = gaussian(rng, shape, scale)
        n = x.size
        limit, limit_bytes = copy_limit(n)
        if phase == 'forward':
            return Bound(run=lambda: layer.forward(x), reference=lambda: forward_ref(layer, x), limit=limit,
                         work=2.0 * n * BYTES, limit_work=limit_bytes, layer=layer, x=x)
        dy = gaussian(rng, shape)
        cache = aligned_cache(layer.forward(x)[1])
        ref = (lambda: np.multiply(x, dy)) if backward_ref is None else (lambda: backward_ref(layer, x, dy, cache))
        return Bound(run=lambda: layer.backward(x, cache, dy, {}), reference=ref,
                     limit=limit, work=3.0 * n * BYTES, limit_work=limit_bytes, layer=layer, x=x, dy=dy)
    return build


# Plain-NumPy twins (the textbook formulas) for LayerNorm and Adam: several passes, reductions
# and a dozen NumPy calls of overhead, as the kernels have, so the ratio does not move when the
# machine's load favours streaming over Python (against one ufunc, LayerNorm's moved by 20%).
def layer_norm_twin(layer, x):
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + layer.eps)
    return xc * rstd * layer.get_parameter('scale') + layer.get_parameter('shift')


def layer_norm_backward_twin(layer, x, dy, cache):
    D = x.shape[-1]
    x2, dy2 = x.reshape(-1, D), dy.reshape(-1, D)
    xc = x2 - x2.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + layer.eps)
    xhat = xc * rstd
    g = dy2 * layer.get_parameter('scale')
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy2 * xhat).sum(axis=0), dy2.sum(axis=0)


# ----------------------------------------------------------------------------- GEMM kernels
DENSE_GATE = (4, 64, 256, 256)       # x [4, 64, 256] -> 256: one [256, 256] @ [256, 256] GEMM once folded
DENSE_BENCH = (16, 128, 512, 2048)   # the Dense target's [64, 128, 512] -> 2048, a quarter of the rows


def dense(phase: str, shape: tuple[int, ...]) -> Callable[[np.random.Generator], Bound]:
    *lead, d_in, d_out = shape
    n = int(np.prod(lead))

    def build(rng: np.random.Generator) -> Bound:
        layer = randomized(nn.Dense(d_in, d_out), rng)
        x = gaussian(rng, (*lead, d_in))
        W = layer.get_parameter('W')
        x2 = x.reshape(n, d_in)
        if phase == 'forward':
            limit, flops = matmul_limit(((n, d_in), (d_in, d_out)))
            return Bound(run=lambda: layer.forward(x), reference=lambda: np.matmul(x2, W), limit=limit,
                         work=2.0 * n * d_in * d_out, limit_work=flops, layer=layer, x=x)
        dy = gaussian(rng, (*lead, d_out))
        dy2 = dy.reshape(n, d_out)
        if phase == 'backward':
            limit, flops = matmul_limit(((d_in, n), (n, d_out)), ((n, d_out), (d_out, d_in)))
            return Bound(run=lambda: layer.backward(x, {}, dy, {}),
                         reference=lambda: (np.matmul(x2.T, dy2), np.matmul(dy2, W.T)), limit=limit,
                         work=flops, limit_work=flops, layer=layer, x=x, dy=dy)
        # The two GEMMs of Dense.backward_impl, alone (benchmarked, not gated: not a public call).
        if phase == 'dx':
            limit, flops = matmul_limit(((n, d_out), (d_out, d_in)))
            run = lambda: dy2 @ W.T  # noqa: E731
        elif phase == 'dW':
            limit, flops = matmul_limit(((d_in, n), (n, d_out)))
            run = lambda: x2.T @ dy2  # noqa: E731
        else:
            raise ValueError(phase)
        return Bound(run=run, reference=limit, limit=limit, work=flops, limit_work=flops,
                     layer=layer, x=x, dy=dy)
    return build


ATTN = (8, 4, 128, 64)   # [B, H, T, head_dim]: MaskedSelfAttention(256, 4 heads) on [8, 128, 256]


def attention_gemm(which: str, shape: tuple[int, ...]) -> Callable[[np.random.Generator], Bound]:
    """The two stacked GEMMs of MaskedSelfAttention.forward, as it runs them: scores = Q K^T
    (``[B,H,T,d] @ [B,H,d,T]``) and P V written into a ``[B, T, H, d]`` buffer.

    The limit is np.matmul on the same arithmetic folded into one 2-D GEMM with
    the same inner dimension ([B*H*T, d] @ [d, T] for QK^T, [B*H*T, T] @ [T, d]
    for AV): what the machine does for this many FLOPs of this shape.
    """
    B, H, T, d = shape

    def build(rng: np.random.Generator) -> Bound:
        q, k, v = (gaussian(rng, shape) for _ in range(3))
        p = np.abs(gaussian(rng, (B, H, T, T)))
        p /= p.sum(axis=-1, keepdims=True)
        kt = k.swapaxes(-1, -2)
        flops = 2.0 * B * H * T * T * d
        if which == 'qk':
            limit, lflops = matmul_limit(((B * H * T, d), (d, T)))
            run = lambda: np.matmul(q, kt)  # noqa: E731
        else:
            limit, lflops = matmul_limit(((B * H * T, T), (T, d)))
            out = np.empty((B, T, H, d), F32)      # heads written straight into [B, T, H, d], as the layer does
            run = lambda: np.matmul(p, v, out=out.transpose(0, 2, 1, 3))  # noqa: E731
        return Bound(run=run, reference=limit, limit=limit, work=flops, limit_work=lflops,
                     extra={'q': q, 'k': k, 'v': v, 'p': p})
    return build


CONV2D_GATE = (4, 32, 32, 16, 32, 3)  # [B, H, W, Cin] -> Cout, kernel 3x3, padding 1 (the target's spatial size)
CONV2D_BENCH = (8, 32, 32, 16, 32, 3)


def conv2d(phase: str, shape: tuple[int, ...]) -> Callable[[np.random.Generator], Bound]:
    """Conv2D 3x3 pad 1: its GEMM is [B*H*W, 9*Cin] @ [9*Cin, Cout] (im2col), the limit's shape."""
    B, H, W, cin, cout, K = shape

    def build(rng: np.random.Generator) -> Bound:
        layer = randomized(nn.Conv2D(cin, cout, K, padding=K // 2), rng)
        x = gaussian(rng, (B, H, W, cin))
        m, kk = B * H * W, K * K * cin
        if phase == 'forward':
            limit, flops = matmul_limit(((m, kk), (kk, cout)))
            p = K // 2
            xp = aligned(np.zeros((B, H + 2 * p, W + 2 * p, cin), F32))
            cols = aligned(np.empty((B, H, W, K, K, cin), F32))
            s = xp.strides
            windows = np.lib.stride_tricks.as_strided(xp, (B, H, W, K, K, cin), (*s[:3], s[1], s[2], s[3]),
                                                      writeable=False)

            def reference():   # the textbook im2col: pad, copy the windows, one GEMM of the same shape
                xp[:, p:p + H, p:p + W] = x
                np.copyto(cols, windows)
                limit()
            return Bound(run=lambda: layer.forward(x), reference=reference, limit=limit, work=flops,
                         limit_work=flops, layer=layer, x=x)
        y, cache = layer.forward(x)
        cache = aligned_cache(cache)
        dy = gaussian(rng, y.shape)
        # The GEMM shapes the layer runs: dW = cols^T @ dy2, and dx as one [m, Cout] @ [Cout, Cin] per tap.
        limit, flops = matmul_limit(((kk, m), (m, cout)), *[((m, cout), (cout, cin))] * (K * K))
        return Bound(run=lambda: layer.backward(x, cache, dy, {}), reference=limit, limit=limit,
                     work=flops, limit_work=flops, layer=layer, x=x, dy=dy)
    return build


# ----------------------------------------------------------------------------- memory-bound kernels
ACT_GATE, ACT_BENCH = (32, 1024), (1024, 1024)
SOFTMAX_GATE, SOFTMAX_BENCH = (4, 64, 128), (64, 128, 128)
LAYERNORM_GATE, LAYERNORM_BENCH = (1, 64, 512), (64, 128, 512)
ADAM_GATE, ADAM_BENCH = (32, 1024), (1024, 1024)


def layer_norm_of(size: int) -> Callable[[np.random.Generator], nn.Layer]:
    return lambda rng: randomized(nn.LayerNorm(size), rng)


def adam(shape: tuple[int, ...]) -> Callable[[np.random.Generator], Bound]:
    """One Adam step on one parameter tensor: reads p, g, m, v and writes p, m, v (7 tensors)."""
    def build(rng: np.random.Generator) -> Bound:
        params = {'P/W': gaussian(rng, shape)}
        grads = {'P/W': gaussian(rng, shape)}
        opt = nn.Adam(1e-3, params)
        n = params['P/W'].size
        limit, limit_bytes = copy_limit(n)
        g = grads['P/W']
        m, v = np.zeros_like(g), np.zeros_like(g)

        def twin():   # the textbook Adam step, new arrays throughout (step 1's bias corrections)
            m1 = 0.9 * m + 0.1 * g
            v1 = 0.999 * v + 0.001 * (g * g)
            return params['P/W'] - 1e-3 * (m1 / 0.1) / (np.sqrt(v1 / 0.001) + 1e-8), m1, v1
        return Bound(run=lambda: opt.apply_gradients(grads), reference=twin,
                     limit=limit, work=7.0 * n * BYTES, limit_work=limit_bytes,
                     extra={'optimizer': opt, 'params': params, 'grads': grads})
    return build


def _case(case_id: str) -> Callable[[np.random.Generator], nn.Layer]:
    return lambda rng: from_case(case_id, rng)


def _exp(layer: nn.Layer, x: np.ndarray) -> Any:
    with np.errstate(over='ignore', under='ignore'):
        return np.exp(x)


def _masked(layer: nn.Layer, x: np.ndarray, dy: np.ndarray, cache: Any) -> Any:
    """The textbook ReLU backward, dy * [x > 0]: a compare and a bool-by-float multiply."""
    return np.multiply(dy, x > 0)


def _broadcast_subtract(layer: nn.Layer, x: np.ndarray, dy: np.ndarray, cache: Any) -> Any:
    """dy minus a per-row column, broadcast: Softmax's backward is dominated by that pass.

    Against np.multiply(x, dy), its ratio moved by 33% between processes here; against this, by 4%.
    """
    return np.subtract(dy, x[..., :1])


_ACTIVATIONS = [
    # (family, nn class, registry case, the forward's reference: a same-size ufunc of the same cost
    #  kind, the backward's: None for np.multiply(x, dy))
    ('relu', 'ReLU', 'ReLU-3d', lambda layer, x: np.maximum(x, 0), _masked),
    ('leaky_relu', 'LeakyReLU', 'LeakyReLU-slope-0.2', lambda layer, x: np.maximum(x, 0), _masked),
    ('sigmoid', 'Sigmoid', 'Sigmoid-3d', _exp, None),
    ('tanh', 'Tanh', 'Tanh-2d', lambda layer, x: np.tanh(x), None),
    ('gelu', 'GELU', 'GELU-erf', _exp, None),
]


def _catalogue() -> list[Kernel]:
    refs = {
        'dense.forward': 'np.matmul, the same GEMM', 'dense.backward': 'np.matmul, the same two GEMMs',
        'conv2d.forward': 'textbook im2col: pad, copy the windows, np.matmul of the same shape',
        'conv2d.backward': 'np.matmul of the GEMM shapes it runs (dW, one dx GEMM per tap)',
        'relu.forward': 'np.maximum(x, 0)', 'leaky_relu.forward': 'np.maximum(x, 0)',
        'relu.backward': 'dy * (x > 0)', 'leaky_relu.backward': 'dy * (x > 0)',
        'sigmoid.forward': 'np.exp(x)', 'gelu.forward': 'np.exp(x)', 'softmax.forward': 'np.exp(x)',
        'tanh.forward': 'np.tanh(x)', 'softmax.backward': 'dy - x[..., :1] (broadcast)',
        'layernorm.forward': 'textbook LayerNorm', 'layernorm.backward': 'textbook LayerNorm backward',
        'adam.step': 'textbook Adam step',
    }

    def k(name, kind, needs, phase, shape, bench_shape, factory, gated=True, note=''):
        ref = refs.get(name, 'np.multiply(x, dy)' if phase == 'backward' else 'np.matmul, the same GEMM')
        return Kernel(name, kind, needs, phase, tuple(shape), tuple(bench_shape), factory, gated, note, ref)

    kernels = [
        k('dense.forward', 'gemm', 'Dense', 'forward', DENSE_GATE, DENSE_BENCH, lambda s: dense('forward', s),
          note='y = x @ W + b, leading dims folded into one GEMM'),
        k('dense.backward', 'gemm', 'Dense', 'backward', DENSE_GATE, DENSE_BENCH, lambda s: dense('backward', s),
          note='dx and dW GEMMs (+ db)'),
        k('dense.dx', 'gemm', 'Dense', 'gemm', DENSE_GATE, DENSE_BENCH, lambda s: dense('dx', s), gated=False,
          note='dy2 @ W.T: the dx GEMM of Dense.backward, alone'),
        k('dense.dW', 'gemm', 'Dense', 'gemm', DENSE_GATE, DENSE_BENCH, lambda s: dense('dW', s), gated=False,
          note='x2.T @ dy2: the dW GEMM of Dense.backward, alone'),
        k('attention.qk', 'gemm', 'Dense', 'gemm', ATTN, ATTN, lambda s: attention_gemm('qk', s), gated=False,
          note='scores = Q @ K^T, stacked over [B, H]'),
        k('attention.av', 'gemm', 'Dense', 'gemm', ATTN, ATTN, lambda s: attention_gemm('av', s), gated=False,
          note='out = P @ V, stacked over [B, H]'),
        k('conv2d.forward', 'gemm', 'Conv2D', 'forward', CONV2D_GATE, CONV2D_BENCH, lambda s: conv2d('forward', s),
          note='Conv2D 3x3 pad 1 (its GEMM: im2col)'),
        k('conv2d.backward', 'gemm', 'Conv2D', 'backward', CONV2D_GATE, CONV2D_BENCH,
          lambda s: conv2d('backward', s), note='Conv2D 3x3 pad 1, dx and dW'),
    ]
    for family, cls, case_id, ref, back_ref in _ACTIVATIONS:
        for phase in ('forward', 'backward'):
            kernels.append(k(f'{family}.{phase}', 'memory', cls, phase, ACT_GATE, ACT_BENCH,
                             lambda s, c=case_id, p=phase, r=ref, b=back_ref: elementwise(_case(c), p, s, r, b,
                                                                                         scale=2.0),
                             note=f'{cls} (registry case {case_id})'))
    for phase in ('forward', 'backward'):
        kernels.append(k(f'softmax.{phase}', 'memory', 'Softmax', phase, SOFTMAX_GATE, SOFTMAX_BENCH,
                         lambda s, p=phase: elementwise(_case('Softmax-last-dim'), p, s, _exp, _broadcast_subtract,
                                                        scale=2.0),
                         note='Softmax over the last dim (registry case Softmax-last-dim)'))
    for phase in ('forward', 'backward'):
        kernels.append(k(f'layernorm.{phase}', 'memory', 'LayerNorm', phase, LAYERNORM_GATE, LAYERNORM_BENCH,
                         lambda s, p=phase: elementwise(layer_norm_of(s[-1]), p, s, layer_norm_twin,
                                                        layer_norm_backward_twin, scale=2.0),
                         note='LayerNorm over the last dim, random scale and shift'))
    kernels.append(k('adam.step', 'memory', 'Adam', 'step', ADAM_GATE, ADAM_BENCH, adam,
                     note='one Adam step on one parameter tensor'))
    return kernels


KERNELS: list[Kernel] = _catalogue()


def get(name: str) -> Kernel:
    for kernel in KERNELS:
        if kernel.name == name:
            return kernel
    raise KeyError(f'no kernel {name!r}; known: {", ".join(k.name for k in KERNELS)}')


def gated() -> list[Kernel]:
    return [k for k in KERNELS if k.gated]
