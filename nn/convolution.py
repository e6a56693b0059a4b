"""Convolutions, channels-last: `Conv2D` on ``[B, H, W, Cin]`` and `Conv1D` on ``[B, T, Cin]``.

Both are cross-correlations with torch's semantics (``torch.nn.functional.conv2d``
on the channels-first tensor): with kernel K, stride s, zero padding p and
dilation d along an axis of size n, the output has ``(n + 2p - d(K-1) - 1) // s + 1``
positions, and, per output position (h, w)::

    y[b, h, w, o] = b[o] + sum_{i, j, c} xp[b, h*sh + i*dh, w*sw + j*dw, c] * W[i, j, c, o]

where xp is x zero-padded by p on both sides of each spatial axis.

Implementation (im2col + one GEMM). The patches of x are copied into the contiguous
matrix ``cols [N, Kh*Kw*Cin]`` (N = B*H'*W') through strided *views* (no Python loop
over output positions) and forward is one GEMM ``cols @ W.reshape(Kh*Kw*Cin, Cout)``.
No padded copy of x is made: the interior windows (all taps inside x) are one strided
view of x itself; the (at most four) border strips of the output grid read small
zero-padded copies of the rows/columns of x they need, placed in y's memory before the
GEMM overwrites it (`_Conv._patches`). Backward, with ``dy2 = dy.reshape(N, Cout)``::

    dW = cols^T @ dy2                       (one GEMM, reusing the cached cols)
    db = sum_N dy2
    dx[b, h*sh + i*dh - ph, w*sw + j*dw - pw, :] += (dy2 @ W[i, j]^T)[b, h, w, :]

dx is the transposed scatter: a loop over the Kh*Kw kernel *taps* (never over
positions), each one GEMM ``dy2 @ W[i, j]^T``. For stride 1 with an output of the
input's size, flattening dx and dy to rows makes each tap's update one contiguous block
of dx, so the GEMM accumulates straight into dx (BLAS beta = 1); the rows the flat
shift wraps into a neighbouring row or image (the tap's border strips) are saved before
and written back after it (`_Conv._dx_same`). Otherwise the GEMM writes a small buffer
(a block of whole images, <= 8192 values unless one image is larger) and one strided add
puts it into the rows of dx that tap reaches (clipped at the padding, so no padded dx).

Choices, measured on [8,32,32,16] -> 32, 3x3, padding 1, float32, one thread,
forward + backward (torch 2.13 takes 7-9 ms wall there; the GEMMs are ~3/4 of ours):
- im2col + one GEMM for the forward (~1.5 ms incl. the copy) beat a loop of
  Kh*Kw GEMMs on shifted views with no im2col buffer (~3.5 ms: Cin = 16 is too
  thin a GEMM, and each tap re-reads and re-writes the output);
- dx by per-tap GEMM + contiguous-source add (~1.9 ms) beat one GEMM
  ``dy2 @ W2^T`` followed by col2im from that strided buffer (~3-4.5 ms: numpy
  adds 16-float fragments one at a time there); for stride 1, accumulating each
  tap in place with BLAS beta = 1 (SciPy's gemm wrapper, the only one exposing
  beta) drops the adds and was ~6-8% faster end to end (kept);
- with W[i, j]^T passed as a transposed view, OpenBLAS ran the thin dx GEMMs
  ~2.7x slower than with a contiguous copy (kept); W2 in Fortran order and
  dW as ``(dy2^T @ cols)^T`` are each ~10% faster; db as a GEMV with ones
  ~8x faster than ``sum(axis=0)``;
- processing the batch in cache-sized blocks gained only 2-5% in speed; the general
  dx path blocks its tap buffer over images anyway, to keep it O(1) in memory;
- dx as a transposed convolution through im2col of dy would need a
  ``K*K x output`` buffer, larger than the input's when Cout > Cin.
- forward's bias: ``y = b`` (broadcast copy) then the GEMM with beta = 1, rather than
  ``y += b`` afterwards (which took ~110 us and a 32 KiB NumPy buffer there).
Memory: the cache holds ``cols`` (K*K x the input, the "one im2col buffer"), so backward
does not rebuild it; besides it, forward and backward allocate no copy of x, dy or dx,
only small temporaries: the tap's border strips of dx (B*C*(H*|oj| + W*|oi|) values,
32 KiB here), or the per-tap GEMM block, W-sized copies, NumPy's small ufunc buffers. Measured on the shape
above (tracemalloc, tools/time_conv.py): 4.55 MiB beyond the results, 1.01 im2col buffers
(4.50 MiB); before (padded x, dy and dx) it was 5.70 MiB, 1.27 buffers.
Threads: SciPy's BLAS is a second OpenBLAS, loaded by ``import nn`` (scipy.special);
a threadpoolctl limit set after ``import nn`` covers both, OPENBLAS_NUM_THREADS too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nn import initializers
from nn.layer import Cache, Layer, Parameters


def _pair(layer: Layer, what: str, value: Any, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair; else ValueError naming the layer."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= minimum for v in pair):
        raise ValueError(f'{type(layer).__name__} {layer.name!r}: {what} expected an int >= {minimum} '
                         f'or a pair of them, got {value!r}')
    return int(pair[0]), int(pair[1])


def _int(layer: Layer, what: str, value: Any, minimum: int) -> int:
    """An int >= minimum; else ValueError naming the layer."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'{type(layer).__name__} {layer.name!r}: {what} expected an int >= {minimum}, '
                         f'got {value!r}')
    return int(value)


def output_size(n: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Positions along one axis: ``(n + 2p - d(K-1) - 1) // s + 1`` (torch's formula)."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _tap_range(n_in: int, n_out: int, offset: int, stride: int) -> tuple[int, int, int]:
    """For one kernel tap along one axis: the output positions [lo, hi) whose input
    position ``o*stride + offset`` lies inside [0, n_in) (not in the padding), and
    the input position of the first of them."""
    lo = max(0, (stride - 1 - offset) // stride)                 # ceil(-offset / stride)
    hi = max(lo, min(n_out, (n_in - 1 - offset) // stride + 1))
    return lo, hi, lo * stride + offset


def _interior(n_in: int, n_out: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """The output positions [a, b) along one axis whose every tap lies inside [0, n_in);
    (n_out, n_out) when there are none."""
    ranges = [_tap_range(n_in, n_out, t * dilation - padding, stride)[:2] for t in range(kernel)]
    a, b = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (a, b) if a < b else (n_out, n_out)


def _strided(a: np.ndarray, start: tuple[int, ...], shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only strided view of `a`'s memory from element ``a[start]`` on (built with the
    ndarray constructor when `a` is contiguous: `as_strided` costs ~10 us a call)."""
    if a.flags.c_contiguous:
        offset = sum(i * s for i, s in zip(start, a.strides, strict=True))
        view = np.ndarray(shape, a.dtype, buffer=a, offset=offset, strides=strides)
        view.flags.writeable = False
        return view
    return as_strided(a[tuple(slice(i, None) for i in start)], shape, strides, writeable=False)


#: Elements of the per-tap buffer of the general dx path (32 KiB of float32).
_TAP_BLOCK = 1 << 13


class _Conv(Layer):
    """The 2-D engine; Conv1D runs it on ``[B, 1, T, C]`` with a ``(1, K)`` kernel."""

    def _configure(self, in_channels, out_channels, kernel, stride, padding, dilation, use_bias) -> None:
        self.in_channels = _int(self, 'in_channels', in_channels, 1)
        self.out_channels = _int(self, 'out_channels', out_channels, 1)
        self.use_bias = bool(use_bias)
        self._kernel = kernel
        self._stride = stride
        self._padding = padding
        self._dilation = dilation

    def _init_parameters(self, shape: tuple[int, ...]) -> None:
        # He (Kaiming) uniform over fan_in = K*Cin, suited to the ReLU nets these layers feed; bias 0.
        fan_in = math.prod(shape[:-1])
        self.set_parameter('W', initializers.kaiming_uniform(fan_in, shape))
        if self.use_bias:
            self.set_parameter('b', initializers.zeros((self.out_channels,)))

    # -------------------------------------------------------------- the engine
    def _out_hw(self, x4: np.ndarray, shape_for_error: tuple[int, ...]) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._kernel, self._stride, self._padding, self._dilation
        Ho = output_size(x4.shape[1], kh, sh, ph, dh)
        Wo = output_size(x4.shape[2], kw, sw, pw, dw)
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f'{type(self).__name__} {self.name!r}: input expected spatial size at least the dilated '
                f'kernel minus twice the padding ({self._describe()}), got shape {shape_for_error}')
        return Ho, Wo

    def _patches(self, x4: np.ndarray, Ho: int, Wo: int, scratch: np.ndarray | None = None) -> np.ndarray:
        """The im2col matrix ``[B*Ho*Wo, Kh*Kw*Cin]`` (a new contiguous array, or x itself for 1x1).

        Filled region by region straight from x (no padded copy of x): the interior, whose
        windows all lie inside x, is one strided copy; each of the (at most four) border
        strips reads a small zero-padded copy of the rows or columns of x it needs, placed
        in `scratch` (a flat buffer of x's dtype, e.g. the not yet computed output) when it
        fits there.
        """
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._kernel, self._stride, self._padding, self._dilation
        B, H, W, C = x4.shape
        if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
            return x4.reshape(B * H * W, C)
        cols = np.empty((B, Ho, Wo, kh, kw, C), dtype=x4.dtype)
        ha, hb = _interior(H, Ho, kh, sh, ph, dh)
        wa, wb = _interior(W, Wo, kw, sw, pw, dw)
        if ha == hb:
            wa = wb = Wo                        # no interior: the top strip is everything
        for h0, h1, w0, w1 in ((0, ha, 0, Wo), (hb, Ho, 0, Wo), (ha, hb, 0, wa), (ha, hb, wb, Wo),
                               (ha, hb, wa, wb)):
            if h0 == h1 or w0 == w1 or B == 0:
                continue
            # The input rows [r0, r1) and columns [c0, c1) that these windows read (maybe padding).
            r0, r1 = h0 * sh - ph, (h1 - 1) * sh + (kh - 1) * dh - ph + 1
            c0, c1 = w0 * sw - pw, (w1 - 1) * sw + (kw - 1) * dw - pw + 1
            if r0 >= 0 and c0 >= 0 and r1 <= H and c1 <= W:
                src, start = x4, (0, r0, c0, 0)
            else:
                shape = (B, r1 - r0, c1 - c0, C)
                size = math.prod(shape)
                if scratch is not None and scratch.size >= size:
                    src = scratch[:size].reshape(shape)
                    src.fill(0)
                else:
                    src = np.zeros(shape, dtype=x4.dtype)
                a0, a1, b0, b1 = max(r0, 0), min(r1, H), max(c0, 0), min(c1, W)
                if a0 < a1 and b0 < b1:
                    src[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = x4[:, a0:a1, b0:b1]
                start = (0, 0, 0, 0)
            # Overlapping read-only view: window (h, w) tap (i, j) is src[b, r0 + h*sh + i*dh, c0 + w*sw + j*dw].
            s_b, s_h, s_w, s_c = src.strides
            np.copyto(cols[:, h0:h1, w0:w1], _strided(
                src, start, (B, h1 - h0, w1 - w0, kh, kw, C), (s_b, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c)))
        return cols.reshape(B * Ho * Wo, kh * kw * C)

    def _forward4(self, x4: np.ndarray, W4: np.ndarray, shape_for_error) -> tuple[np.ndarray, np.ndarray]:
        Ho, Wo = self._out_hw(x4, shape_for_error)
        B = x4.shape[0]
        y = np.empty((B * Ho * Wo, self.out_channels), dtype=np.result_type(x4.dtype, W4.dtype))
        # y is not computed yet: its memory holds the small padded strips of x the im2col
        # border needs (when it is big enough), so they cost no memory of their own.
        cols = self._patches(x4, Ho, Wo, y.reshape(-1) if y.dtype == x4.dtype else None)
        W2 = W4.reshape(-1, self.out_channels)
        if self.use_bias and x4.dtype == W4.dtype == self.get_parameter('b').dtype \
                and x4.dtype in (np.float32, np.float64) and B > 0:
            # y = b, then one BLAS GEMM with beta = 1 adds cols @ W2 (as y^T += W2^T cols^T,
            # all Fortran views: no copy). `y += b` afterwards took ~110 us and a 32 KiB
            # NumPy buffer here; the broadcast copy takes ~85 us and none.
            from scipy.linalg import blas  # lazily: `import nn` does not pay for scipy.linalg

            np.copyto(y, self.get_parameter('b'))
            out = blas.get_blas_funcs('gemm', dtype=x4.dtype)(1.0, W2.T, cols.T, beta=1.0, c=y.T,
                                                               overwrite_c=True)
            if not np.may_share_memory(out, y):                     # the wrapper copied: write back
                y.T[...] = out
        else:
            # W2 in Fortran order (a copy of the small weight): OpenBLAS runs this thin-N GEMM
            # ~10-20% faster than with the C-ordered W2.
            np.matmul(cols, np.asfortranarray(W2), out=y)
            if self.use_bias:
                y += self.get_parameter('b')
        return y.reshape(B, Ho, Wo, self.out_channels), cols

    def _backward4(self, x4: np.ndarray, cols: np.ndarray, W4: np.ndarray, dy4: np.ndarray,
                   gradients: Parameters) -> np.ndarray:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._kernel, self._stride, self._padding, self._dilation
        B, H, W, C = x4.shape
        Ho, Wo = dy4.shape[1:3]
        dy2 = dy4.reshape(-1, self.out_channels)
        # (dy2^T @ cols)^T rather than cols^T @ dy2: the same GEMM, ~10% faster in OpenBLAS here.
        dW = (dy2.T @ cols).T
        self.accumulate(gradients, 'W', dW.reshape(self.get_parameter('W').shape))    # a copy (dW is F-ordered)
        del dW
        if self.use_bias:
            # Column sums as a GEMV: ~8x faster than dy2.sum(axis=0) on [8192, 32] here.
            self.accumulate(gradients, 'b', np.ones(dy2.shape[0], dtype=dy2.dtype) @ dy2)
        if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
            return (dy2 @ np.ascontiguousarray(W4[0, 0].T)).reshape(x4.shape).astype(x4.dtype, copy=False)
        if (sh, sw, Ho, Wo) == (1, 1, H, W) and x4.dtype == dy2.dtype == W4.dtype \
                and x4.dtype in (np.float32, np.float64) and B > 0:
            return self._dx_same(x4, W4, dy2)
        # Each tap's W[i, j]^T as its own contiguous (Cout, Cin) matrix: with the transposed
        # view OpenBLAS's thin GEMM (N = Cin) was measured ~2.7x slower.
        WT = np.ascontiguousarray(np.swapaxes(W4, 2, 3))
        taps = []
        for i in range(kh):
            h_lo, h_hi, r0 = _tap_range(H, Ho, i * dh - ph, sh)
            for j in range(kw):
                w_lo, w_hi, c0 = _tap_range(W, Wo, j * dw - pw, sw)
                if h_lo < h_hi and w_lo < w_hi:         # else this tap only ever sees padding
                    taps.append((WT[i, j], (slice(h_lo, h_hi), slice(w_lo, w_hi)),
                                 (slice(r0, r0 + sh * (h_hi - h_lo - 1) + 1, sh),
                                  slice(c0, c0 + sw * (w_hi - w_lo - 1) + 1, sw))))
        dx = np.zeros(x4.shape, dtype=x4.dtype)
        # Each tap's GEMM writes a buffer that one strided add puts into the rows of dx the
        # tap reaches. The buffer holds a block of whole images of at most _TAP_BLOCK
        # elements (one image if that is larger), so it stays O(1), not O(output).
        per_image = Ho * Wo
        nb = max(1, min(B, _TAP_BLOCK // max(1, per_image * C)))
        tap = np.empty((nb * per_image, C), dtype=np.result_type(dy2, W4))
        # The strided adds run with a 1024-element ufunc buffer: NumPy's default (8192) made
        # each add allocate 2 x 32 KiB (float32), no faster.
        bufsize = np.setbufsize(1024)
        try:
            for b0 in range(0, B, nb):
                b1 = min(B, b0 + nb)
                tap2 = tap[:(b1 - b0) * per_image]
                tap4 = tap2.reshape(b1 - b0, Ho, Wo, C)
                dy_block = dy2[b0 * per_image:b1 * per_image]
                for WT_ij, (hs, ws), (rs, cs) in taps:
                    np.matmul(dy_block, WT_ij, out=tap2)
                    dx[b0:b1, rs, cs] += tap4[:, hs, ws]
        finally:
            np.setbufsize(bufsize)
        return dx

    def _dx_same(self, x4: np.ndarray, W4: np.ndarray, dy2: np.ndarray) -> np.ndarray:
        """dx for stride 1 and an output the input's size, accumulated in place in dx.

        With dx and dy both flattened to rows (``[B*H*W, C]`` and ``[B*H*W, Cout]``), tap
        (i, j), at offset ``(oi, oj) = (i*dh - ph, j*dw - pw)``, adds output row q into input
        row ``q + s`` with ``s = oi*W + oj`` the same for every q. So the tap is one BLAS GEMM
        with beta = 1 into a contiguous block of dx::

            dx[s + q0 : s + q1] += dy[q0 : q1] @ W[i, j]^T

        which is right everywhere except in the rows and columns of each image the tap cannot
        reach (the rows ``h < oi`` or ``h >= H + oi``, the columns likewise): there the
        flat shift wraps into a neighbouring row or image. Those border strips
        (``B*C*(|oi|*W + |oj|*H)`` values) are saved before the GEMM and written back after
        it, which undoes the wrapped terms exactly. SciPy's BLAS wrapper is the one that
        exposes beta; its OpenBLAS is the one `scipy.special` (imported by `nn.activations`)
        has already loaded.
        """
        from scipy.linalg import blas  # lazily: `import nn` does not pay for scipy.linalg

        (kh, kw), (ph, pw), (dh, dw) = self._kernel, self._padding, self._dilation
        B, H, W, C = x4.shape
        N = B * H * W
        dx = np.zeros(x4.shape, dtype=x4.dtype)
        dx2 = dx.reshape(N, C)
        gemm = blas.get_blas_funcs('gemm', dtype=x4.dtype)
        for i in range(kh):
            oi = i * dh - ph
            if not -H < oi < H:
                continue                                            # this kernel row only sees padding
            rows = slice(0, oi) if oi > 0 else slice(H + oi, H)     # the rows it cannot reach
            for j in range(kw):
                oj = j * dw - pw
                if not -W < oj < W:
                    continue
                cols = slice(0, oj) if oj > 0 else slice(W + oj, W)
                s = oi * W + oj
                q0, q1 = max(0, -s), min(N, N - s)
                kept_rows = dx[:, rows].copy() if oi else None
                kept_cols = dx[:, :, cols].copy() if oj else None
                block = dx2[q0 + s:q1 + s].T                        # Fortran [C, M] view of the rows
                out = gemm(1.0, np.asfortranarray(W4[i, j]), dy2[q0:q1].T, beta=1.0, c=block,
                           overwrite_c=True)
                if not np.may_share_memory(out, block):             # the wrapper copied: write back
                    block[...] = out
                del out
                if oi:
                    dx[:, rows] = kept_rows
                if oj:
                    dx[:, :, cols] = kept_cols
        return dx

    def _describe(self) -> str:
        return (f'kernel {self._kernel}, stride {self._stride}, padding {self._padding}, '
                f'dilation {self._dilation}')


class Conv2D(_Conv):
    """2-D convolution (cross-correlation) on channels-last images.

    Shapes: x ``[B, H, W, Cin]``, W ``(Kh, Kw, Cin, Cout)``, b ``(Cout,)``,
    y ``[B, H', W', Cout]`` with ``H' = (H + 2ph - dh(Kh-1) - 1) // sh + 1`` (W' alike),
    as torch computes them. `kernel_size`, `stride`, `padding` and `dilation`
    take an int or an (h, w) pair. W starts He-uniform, b at zero.

    Forward is ``y2 = cols @ W2 + b`` with cols the im2col matrix of the padded
    input (see the module docstring for the layout and the measurements behind it).
    Backward (dy2 = dy as ``[N, Cout]``, W2 = W as ``[Kh*Kw*Cin, Cout]``)::

        dW2 = cols^T @ dy2      db = sum_N dy2      dx = col2im(dy2 @ W2^T)

    where col2im adds each tap's ``dy2 @ W[i, j]^T`` back at the input position
    that tap read (positions that fell in the padding are dropped).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 1,
                 dilation: int | tuple[int, int] = 1, use_bias: bool = True, name: str = 'Conv2D') -> None:
        super().__init__(name)
        self.kernel_size = _pair(self, 'kernel_size', kernel_size, 1)
        self.stride = _pair(self, 'stride', stride, 1)
        self.padding = _pair(self, 'padding', padding, 0)
        self.dilation = _pair(self, 'dilation', dilation, 1)
        self._configure(in_channels, out_channels, self.kernel_size, self.stride, self.padding,
                        self.dilation, use_bias)
        self._init_parameters((*self.kernel_size, self.in_channels, self.out_channels))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, ndim=4, last_dim=self.in_channels)
        y, cols = self._forward4(x, self.get_parameter('W'), x.shape)
        return y, {'cols': cols}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return self._backward4(x, cache['cols'], self.get_parameter('W'), backwards_gradient, gradients)


class Conv1D(_Conv):
    """1-D convolution (cross-correlation) on channels-last sequences.

    Shapes: x ``[B, T, Cin]``, W ``(K, Cin, Cout)``, b ``(Cout,)``, y ``[B, T', Cout]``
    with ``T' = (T + 2p - d(K-1) - 1) // s + 1`` (torch's conv1d).

    It is `Conv2D`'s engine on the view ``[B, 1, T, Cin]`` with a ``(1, K)`` kernel
    (W viewed as ``(1, K, Cin, Cout)``), so the math, the im2col GEMM and the
    backward are exactly those documented in `Conv2D`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, use_bias: bool = True, name: str = 'Conv1D') -> None:
        super().__init__(name)
        self.kernel_size = _int(self, 'kernel_size', kernel_size, 1)
        self.stride = _int(self, 'stride', stride, 1)
        self.padding = _int(self, 'padding', padding, 0)
        self.dilation = _int(self, 'dilation', dilation, 1)
        self._configure(in_channels, out_channels, (1, self.kernel_size), (1, self.stride),
                        (0, self.padding), (1, self.dilation), use_bias)
        self._init_parameters((self.kernel_size, self.in_channels, self.out_channels))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, ndim=3, last_dim=self.in_channels)
        y, cols = self._forward4(x[:, None], self.get_parameter('W')[None], x.shape)
        return y[:, 0], {'cols': cols}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        dx = self._backward4(x[:, None], cache['cols'], self.get_parameter('W')[None],
                             backwards_gradient[:, None], gradients)
        return dx[:, 0]

