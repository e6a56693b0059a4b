"""2-D pooling on channels-last images ``[B, H, W, C]``, with torch's semantics.

Windows: kernel (kh, kw), stride (sh, sw) (default: the kernel), padding (ph, pw)
on both sides, at most half the kernel (torch's rule); the output has
``H' = (H + 2ph - kh) // sh + 1`` rows (W' alike; floor mode, as torch's default).

Both layers loop over the kh*kw kernel *taps*, never over output positions:
tap (i, j) of every window at once is the strided view
``xp[:, i : i + sh*(H'-1) + 1 : sh, j : j + sw*(W'-1) + 1 : sw, :]`` (``[B, H', W', C]``),
so each step is one vectorised NumPy operation over the whole output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nn.convolution import _pair
from nn.layer import Cache, Layer, Parameters


class _Pool2D(Layer):
    needs_cache = False

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, name: str = 'Pool2D') -> None:
        super().__init__(name)
        self.kernel_size = _pair(self, 'kernel_size', kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _pair(self, 'stride', stride, 1)
        self.padding = _pair(self, 'padding', padding, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(f'{type(self).__name__} {self.name!r}: padding expected at most half the '
                             f'kernel size {self.kernel_size}, got {self.padding}')

    def _geometry(self, x: np.ndarray) -> tuple[int, int]:
        self.check_input(x, ndim=4)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Ho = (x.shape[1] + 2 * ph - kh) // sh + 1
        Wo = (x.shape[2] + 2 * pw - kw) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(f'{type(self).__name__} {self.name!r}: input expected spatial size at least '
                             f'kernel {self.kernel_size} minus twice the padding {self.padding}, '
                             f'got shape {x.shape}')
        return Ho, Wo

    def _padded(self, x: np.ndarray, fill: Any) -> np.ndarray:
        ph, pw = self.padding
        if not (ph or pw):
            return x
        B, H, W, C = x.shape
        xp = np.full((B, H + 2 * ph, W + 2 * pw, C), fill, dtype=x.dtype)
        xp[:, ph:ph + H, pw:pw + W] = x
        return xp

    def _taps(self, xp: np.ndarray, Ho: int, Wo: int):
        """(t, view) for every kernel tap t = i*kw + j, in row-major window order."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for i in range(kh):
            for j in range(kw):
                yield i * kw + j, xp[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]

    def _unpad(self, dxp: np.ndarray, x: np.ndarray) -> np.ndarray:
        ph, pw = self.padding
        if not (ph or pw):
            return dxp
        return np.ascontiguousarray(dxp[:, ph:ph + x.shape[1], pw:pw + x.shape[2]])

    def _scatter_buffer(self, x: np.ndarray, Ho: int, Wo: int) -> np.ndarray:
        """dx on the padded grid, for the taps to write. When the windows tile the input
        exactly once (stride = kernel, no padding), every tap writes its whole view, so
        only the rows and columns no window reaches are zeroed (saves a pass over dx)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        B, H, W, C = x.shape
        if (sh, sw) != (kh, kw) or ph or pw:
            return np.zeros((B, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
        dx = np.empty(x.shape, dtype=x.dtype)
        dx[:, Ho * kh:] = 0
        dx[:, :, Wo * kw:] = 0
        return dx

    @property
    def _overlapping(self) -> bool:
        return any(s < k for s, k in zip(self.stride, self.kernel_size, strict=True))


class MaxPool2D(_Pool2D):
    """Max over each window (torch's ``max_pool2d``; padding counts as -inf).

    Forward keeps, per output, the tap index of its maximum ``idx`` (uint8 for
    kernels up to 16x16) in the cache: a running max over the taps, updating the
    index where a later tap is strictly greater, so a tie goes to the *first*
    maximum in row-major window order, as torch chooses. A NaN wins its window
    (the last NaN, as in torch).

    Backward routes each upstream gradient to its window's maximum::

        dx[window position of idx] += dy

    a loop over the taps adding ``dy * (idx == t)`` into tap t's strided view of dx
    (written directly when windows do not overlap). The derivative at a tie is
    torch's: all of dy goes to the first maximum.
    """

    needs_cache = True

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, name: str = 'MaxPool2D') -> None:
        super().__init__(kernel_size, stride, padding, name)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        Ho, Wo = self._geometry(x)
        xp = self._padded(x, -np.inf)
        views = [view for _, view in self._taps(xp, Ho, Wo)]
        index_type = np.min_scalar_type(len(views) - 1)
        if len(views) == 1:
            y, idx = np.array(views[0], order='C'), np.zeros(views[0].shape, dtype=index_type)
        else:
            # The first two taps in one step (no copy of tap 0): idx = [tap 1 > tap 0].
            y = np.maximum(views[0], views[1])
            idx = np.greater(views[1], views[0]).astype(index_type)
        better = np.empty(y.shape, dtype=bool)
        step = np.empty(y.shape, dtype=index_type)
        for t, view in enumerate(views[2:], start=2):
            np.greater(view, y, out=better)
            # Taps come in increasing t, so "idx = t where better" is a max with better * t;
            # np.copyto(..., where=) was measured ~10x slower than these two SIMD ufuncs.
            np.multiply(better, index_type.type(t), out=step, dtype=index_type)
            np.maximum(idx, step, out=idx)
            np.maximum(y, view, out=y)
        extreme = y.max() if y.size else 0.0        # NaN if any NaN (one reduction, no mask)
        if np.isnan(extreme):
            self._nan_indices(xp, Ho, Wo, y, idx)
        if (self.padding[0] or self.padding[1]) and y.size and y.min() == -np.inf:
            self._neg_inf_indices(x.shape, Ho, Wo, y, idx)
        return y, {'idx': idx}

    def _nan_indices(self, xp, Ho, Wo, y, idx) -> None:
        """Windows holding a NaN: torch picks the last NaN (its test is ``v > max or isnan(v)``)."""
        nan = np.isnan(y)
        for t, view in self._taps(xp, Ho, Wo):
            idx[nan & np.isnan(view)] = t

    def _neg_inf_indices(self, shape, Ho, Wo, y, idx) -> None:
        """Windows whose real elements are all -inf: torch picks the first element inside the
        input, never a padding position (which would drop the gradient)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        rows, cols = np.arange(Ho) * sh - ph, np.arange(Wo) * sw - pw
        lost = np.isneginf(y)
        for i in reversed(range(kh)):           # reversed: the first in-bounds tap is written last
            for j in reversed(range(kw)):
                inside = (((rows + i >= 0) & (rows + i < shape[1]))[:, None]
                          & ((cols + j >= 0) & (cols + j < shape[2]))[None, :])
                idx[lost & inside[None, :, :, None]] = i * kw + j

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        Ho, Wo = backwards_gradient.shape[1:3]
        idx = cache['idx']
        dy = backwards_gradient
        dxp = self._scatter_buffer(x, Ho, Wo)
        hit = np.empty(idx.shape, dtype=bool)
        overlapping = self._overlapping
        for t, view in self._taps(dxp, Ho, Wo):
            np.equal(idx, t, out=hit)
            if overlapping:
                view += dy * hit
            else:                               # disjoint windows: each element written once
                np.multiply(dy, hit, out=view)
        return self._unpad(dxp, x)


class AvgPool2D(_Pool2D):
    """Mean over each window (torch's ``avg_pool2d``, ``count_include_pad=True``).

    Padding counts as zeros and the divisor is always kh*kw (in floor mode no
    window reaches past the padding, so torch's divisor is kh*kw too)::

        y = (sum over taps of xp[tap view]) / (kh*kw)
        dx[tap view] += dy / (kh*kw)      for every tap

    Backward needs only x's shape: the cache is empty.
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, name: str = 'AvgPool2D') -> None:
        super().__init__(kernel_size, stride, padding, name)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        Ho, Wo = self._geometry(x)
        xp = self._padded(x, 0)
        taps = self._taps(xp, Ho, Wo)
        _, first = next(taps)
        y = np.array(first, order='C')
        for _, view in taps:
            y += view
        y /= x.dtype.type(self.kernel_size[0] * self.kernel_size[1])
        return y, {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        Ho, Wo = backwards_gradient.shape[1:3]
        g = backwards_gradient / x.dtype.type(self.kernel_size[0] * self.kernel_size[1])
        g = g.astype(x.dtype, copy=False)
        dxp = self._scatter_buffer(x, Ho, Wo)
        overlapping = self._overlapping
        for _, view in self._taps(dxp, Ho, Wo):
            if overlapping:
                view += g
            else:
                view[...] = g
        return self._unpad(dxp, x)
