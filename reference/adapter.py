"""Any `nn.Layer` as a `torch.autograd.Function`.

``fn, keys = as_autograd_function(layer)`` gives ``fn(x, *params) -> y`` whose
forward runs ``layer.forward`` and whose backward runs ``layer.backward``, with
the parameters (in the order of `keys`) as inputs. `torch.autograd.gradcheck`
can then verify the NumPy backward against torch's own finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from nn.gradcheck import GradcheckError
from nn.layer import Layer
from reference.layout import to_numpy


def as_autograd_function(layer: Layer, forward_kwargs: dict[str, Any] | None = None,
                         before_forward: Callable[[Layer], None] | None = None
                         ) -> tuple[Callable[..., torch.Tensor], list[str]]:
    keys = list(layer.parameters())
    kwargs = forward_kwargs or {}

    class LayerFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *params):
            values = {k: to_numpy(p) for k, p in zip(keys, params, strict=True)}
            layer.update_parameters(values)
            x_np = to_numpy(x)
            if before_forward is not None:
                before_forward(layer)
            y, cache = layer.forward(x_np, **kwargs)
            ctx.saved = (x_np, cache, values, x.is_floating_point())
            return torch.from_numpy(np.array(y, copy=True))

        @staticmethod
        def backward(ctx, dy):
            x_np, cache, values, differentiable = ctx.saved
            layer.update_parameters(values)   # the parameters this forward saw
            grads: dict[str, np.ndarray] = {}
            dx = layer.backward(x_np, cache, to_numpy(dy), grads)
            dx_t = torch.from_numpy(np.array(dx, copy=True)) if differentiable else None
            missing = [k for k in keys if k not in grads]
            if missing:
                raise GradcheckError(f'no gradient for {missing[0]!r} (gradients has {sorted(grads)})',
                                     tensor=missing[0])
            return (dx_t, *(torch.from_numpy(np.array(grads[k], copy=True)) for k in keys))

    return LayerFunction.apply, keys
