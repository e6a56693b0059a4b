"""Torch mirrors of the `nn` layers.

``torch_forward(layer, params, x, **kwargs)`` computes the layer's output with
torch operations from `params`, a dict of torch tensors keyed exactly as
`layer.parameters()` (so autograd returns gradients under `nn`'s keys and in
`nn`'s layouts). It reads the layer's configuration (eps, dim, names, ...)
from the layer object itself and recurses into nested layers, so any
composition of `nn` layers has a torch twin.

Mirrors register with `@mirror(LayerClass)`; one module per layer family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nn.layer import Layer

Mirror = Callable[..., torch.Tensor]
_MIRRORS: dict[type, Mirror] = {}


def mirror(*layer_types: type) -> Callable[[Mirror], Mirror]:
    """Registers the decorated function as the torch mirror of `layer_types`."""
    def register(fn: Mirror) -> Mirror:
        for layer_type in layer_types:
            _MIRRORS[layer_type] = fn
        return fn
    return register


def has_mirror(layer_type: type) -> bool:
    return any(issubclass(layer_type, t) for t in _MIRRORS)


def torch_forward(layer: Layer, params: dict[str, torch.Tensor], x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The torch twin of ``layer.forward(x, **kwargs)[0]``."""
    for cls in type(layer).__mro__:
        if cls in _MIRRORS:
            return _MIRRORS[cls](layer, params, x, **kwargs)
    raise KeyError(f'no torch mirror registered for {type(layer).__name__}')


# Each family registers its mirrors on import.
from reference.mirrors import basic  # noqa: E402,F401

for _family in ('conv', 'attention'):
    try:
        __import__(f'reference.mirrors.{_family}')
    except ModuleNotFoundError as _err:  # the family's layers are not written yet
        if _err.name != f'reference.mirrors.{_family}':
            raise
