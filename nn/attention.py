"""Multi-head masked self-attention, and the causal mask.

Conventions (those of the original library): inputs are ``[B, T, C]``
(batch, time, embedding), and a mask is boolean with **True = blocked**: query
position i may not attend to key position j where ``mask[..., i, j]`` is True.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nn.dense import Dense
from nn.layer import Cache, Layer, Parameters


def get_causal_mask(x: np.ndarray) -> np.ndarray:
    """The causal mask for a batch of sequences: bool ``[B, T, T]``, True above the diagonal.

    ``mask[b, i, j]`` is True (blocked) exactly when j > i: a position attends to
    itself and to earlier positions only. Only the shape of `x` is read
    (``[B, T, ...]``: embeddings ``[B, T, C]`` or token indices ``[B, T]``).
    """
    shape = getattr(x, 'shape', None)
    if shape is None or len(shape) < 2:
        raise ValueError(f'get_causal_mask: expected an array of shape [B, T, ...], got '
                         f'{type(x).__name__} of shape {shape}')
    B, T = shape[0], shape[1]
    return np.triu(np.ones((B, T, T), dtype=bool), k=1)


class MaskedSelfAttention(Layer):
    """Multi-head scaled dot-product self-attention with an optional mask.

    Shapes: x, y ``[B, T, C]`` (C = `embed_dim`); H = `n_heads` heads of size
    D = C / H each; mask bool ``[B, T, T]`` or ``[T, T]`` (shared by the batch),
    True = blocked. With the four Dense projections (``W (C, C)``, ``b (C,)``)::

        q, k, v = x Wq + bq, x Wk + bk, x Wv + bv       split into heads [B, H, T, D]
        S = q k^T / sqrt(D)                             [B, H, T, T]
        P = softmax(S) over keys, blocked keys excluded (P = 0 there)
        O = P v                                         heads concatenated -> [B, T, C]
        y = O Wo + bo

    A query row whose every key is blocked has no keys to average: its
    attention weights are all zero, so its row of O is zero (y is ``bo`` there)
    and nothing flows back through it, rather than the NaN of a 0/0 softmax
    (torch's ``scaled_dot_product_attention`` gives NaN for such rows).

    Backward, with dO = dy Wo^T split into heads (q already carries 1/sqrt(D))::

        dv = P^T dO                  dP = dO v^T
        dS = P * (dP - rowsum(dP * P))           softmax backward, no Jacobian
        dq = dS k / sqrt(D)          dk = dS^T q

    and rowsum(dP * P) = rowsum(dO * O) (since O = P v), an [B, H, T] reduction
    over D instead of over the [B, H, T, T] scores. The parameter gradients are
    the Dense ones: ``dW = x^T dq``, ``db = sum dq`` (likewise k, v, o), except
    that ``dbk`` is exactly 0: bk shifts each row of S by a constant (q_i . bk),
    which softmax ignores, so it is returned as zeros rather than as roundoff.

    Cost: the three input projections run as one GEMM over ``[B*T, C] @ [C, 3C]``
    (W's concatenated per call; the parameters stay the separate Dense layers'
    and their gradients land under their keys); the score and weighted-sum
    products are batched ``[T, D]`` GEMMs per (batch, head), read straight from
    strided views of that result. The softmax runs in place on the score
    buffer, which the backward reuses as P. The cache holds q, k, v, P and O:
    memory ``O(B*T*C + B*H*T*T)``.

    Args:
        embed_dim: C, the size of the last axis of x.
        n_heads: H; must divide `embed_dim`.
        use_bias: Whether all four projections have a bias.
        name: Prefix of the parameter keys; the projections are named
            ``'{name}/DenseQ'``, ``'{name}/DenseK'``, ``'{name}/DenseV'``, ``'{name}/DenseO'``.
    """

    def __init__(self, embed_dim: int, n_heads: int = 1, use_bias: bool = True, name: str = 'MSA') -> None:
        super().__init__(name)
        who = f'MaskedSelfAttention {name!r}'
        if not isinstance(embed_dim, (int, np.integer)) or embed_dim < 1:
            raise ValueError(f'{who}: embed_dim expected a positive int, got {embed_dim!r}')
        if not isinstance(n_heads, (int, np.integer)) or n_heads < 1:
            raise ValueError(f'{who}: n_heads expected a positive int, got {n_heads!r}')
        if embed_dim % n_heads:
            raise ValueError(f'{who}: embed_dim expected to be divisible by n_heads, got '
                             f'embed_dim={embed_dim}, n_heads={n_heads}')
        self.embed_dim = int(embed_dim)
        self.n_heads = int(n_heads)
        self.head_dim = self.embed_dim // self.n_heads
        self.use_bias = use_bias
        self.q_proj = Dense(embed_dim, embed_dim, use_bias, name=f'{name}/DenseQ')
        self.k_proj = Dense(embed_dim, embed_dim, use_bias, name=f'{name}/DenseK')
        self.v_proj = Dense(embed_dim, embed_dim, use_bias, name=f'{name}/DenseV')
        self.output_proj = Dense(embed_dim, embed_dim, use_bias, name=f'{name}/DenseO')

    # ----------------------------------------------------------------- helpers
    def _check_mask(self, mask: Any, B: int, T: int) -> np.ndarray:
        who = f'MaskedSelfAttention {self.name!r}'
        if not isinstance(mask, np.ndarray):
            raise TypeError(f'{who}: mask expected a numpy bool array of shape ({B}, {T}, {T}) or '
                            f'({T}, {T}), got {type(mask).__name__}')
        if mask.dtype != np.bool_:
            raise TypeError(f'{who}: mask expected dtype bool (True = blocked), got {mask.dtype}')
        if mask.shape not in ((B, T, T), (T, T)):
            raise ValueError(f'{who}: mask expected shape ({B}, {T}, {T}) or ({T}, {T}), '
                             f'got {mask.shape}')
        # [B, T, T] -> [B, 1, T, T]: one mask for every head.
        return mask[:, None] if mask.ndim == 3 else mask

    def _qkv_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The three input projections side by side: ``W (C, 3C)``, ``b (3C,)``."""
        W = np.concatenate([p.get_parameter('W') for p in (self.q_proj, self.k_proj, self.v_proj)], axis=1)
        b = (np.concatenate([p.get_parameter('b') for p in (self.q_proj, self.k_proj, self.v_proj)])
             if self.use_bias else None)
        return W, b

    def _heads(self, qkv: np.ndarray, B: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views q, k, v ``[B, H, T, D]`` of the projections ``[B*T, 3C]`` (no copy)."""
        split = qkv.reshape(B, T, 3, self.n_heads, self.head_dim)
        return tuple(split[:, :, i].transpose(0, 2, 1, 3) for i in range(3))

    # ----------------------------------------------------------------- compute
    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, Cache]:
        """Args: mask: optional bool ``[B, T, T]`` or ``[T, T]``, True = blocked."""
        self.check_input(x, ndim=3, last_dim=self.embed_dim)
        B, T, C = x.shape
        blocked = None if mask is None else self._check_mask(mask, B, T)

        W, b = self._qkv_weights()
        qkv = x.reshape(B * T, C) @ W
        if b is not None:
            qkv += b
        t = qkv.dtype.type
        # Scale q ([B*T, C] = B*H*T*D entries) rather than the B*H*T*T scores: fewer when T > D.
        qkv[:, :C] *= t(1.0 / math.sqrt(self.head_dim))
        q, k, v = self._heads(qkv, B, T)

        P = q @ k.transpose(0, 1, 3, 2)                  # scores, softmaxed in place below
        if blocked is not None:
            np.copyto(P, -np.inf, where=blocked)
        row_max = P.max(axis=-1, keepdims=True)
        if blocked is not None:
            # Fully blocked rows have max -inf; 0 keeps exp(-inf - 0) = 0 instead of NaN.
            row_max[row_max == -np.inf] = 0
        P -= row_max
        with np.errstate(under='ignore'):
            np.exp(P, out=P)
        row_sum = P.sum(axis=-1, keepdims=True)
        if blocked is not None:
            # A row with any open key sums to >= 1 (its max entry is exp(0));
            # only fully blocked rows sum to 0: dividing by 1 leaves them zero.
            row_sum[row_sum == 0] = 1
        np.divide(1, row_sum, out=row_sum)
        P *= row_sum

        # Weighted sum written straight into the concatenated-heads layout [B, T, H, D].
        O = np.empty((B, T, self.n_heads, self.head_dim), dtype=qkv.dtype)
        np.matmul(P, v, out=O.transpose(0, 2, 1, 3))
        O = O.reshape(B, T, C)
        y, _ = self.output_proj.forward(O)
        return y, {'qkv': qkv, 'attn': P, 'heads': O}

    def backward_impl(self, x: np.ndarray, cache: Cache, backwards_gradient: np.ndarray,
                      gradients: Parameters) -> np.ndarray:
        B, T, C = x.shape
        H, D = self.n_heads, self.head_dim
        qkv, P, O = cache['qkv'], cache['attn'], cache['heads']
        q, k, v = self._heads(qkv, B, T)

        dO2 = self.output_proj.backward(O, {}, backwards_gradient, gradients)   # [B, T, C], new
        dO = dO2.reshape(B, T, H, D).transpose(0, 2, 1, 3)

        # rowsum(dP * P) = rowsum(dO * O): reduce over D, not over the T keys.
        inner = np.multiply(dO2, O).reshape(B, T, H, D).sum(axis=-1)            # [B, T, H]
        dS = dO @ v.transpose(0, 1, 3, 2)                                       # dP, new buffer
        dS -= inner.transpose(0, 2, 1)[..., None]
        dS *= P

        dqkv = np.empty((B, T, 3, H, D), dtype=dS.dtype)
        dq, dk, dv = (dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        np.matmul(dS, k, out=dq)
        dq *= dq.dtype.type(1.0 / math.sqrt(D))
        np.matmul(dS.transpose(0, 1, 3, 2), q, out=dk)
        np.matmul(P.transpose(0, 1, 3, 2), dO, out=dv)

        dqkv = dqkv.reshape(B * T, 3 * C)
        x2 = x.reshape(B * T, C)
        dW = x2.T @ dqkv
        for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            proj.accumulate(gradients, 'W', np.ascontiguousarray(dW[:, i * C:(i + 1) * C]))
        if self.use_bias:
            self.q_proj.accumulate(gradients, 'b', dqkv[:, :C].sum(axis=0))
            # The key bias adds q_i . bk to the whole row i of scores, which softmax ignores:
            # its gradient is exactly 0. A computed sum would hold only roundoff (~1e-2 in
            # float32 at [8,128,256]), which Adam's g/sqrt(v) turns into steps of +-lr.
            self.k_proj.accumulate(gradients, 'b', np.zeros(C, dtype=dqkv.dtype))
            self.v_proj.accumulate(gradients, 'b', dqkv[:, 2 * C:].sum(axis=0))
        W, _ = self._qkv_weights()
        return (dqkv @ W.T).reshape(x.shape)
