"""Containers and shape layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nn.layer import Cache, Layer, Parameters


class Sequential(Layer):
    """Chains layers: ``y = f_n(... f_2(f_1(x)))``; backward runs them in reverse.

    The layers keep their own names, so their parameter keys are unchanged by
    wrapping them (two layers with the same key are an error: pass ``name=``).
    """

    def __init__(self, *layers: Layer, name: str = 'Sequential') -> None:
        super().__init__(name)
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f'Sequential {name!r}: expected Layer arguments, got {type(layer).__name__}')
        self.layers_list = list(layers)
        seen: dict[str, str] = {}
        for layer in self.layers_list:
            for key in layer.parameters():
                if key in seen:
                    raise ValueError(
                        f'Sequential {name!r}: parameter key {key!r} appears twice; expected '
                        'unique layer names (pass name= to the layers)')
                seen[key] = layer.name

    def __len__(self) -> int:
        return len(self.layers_list)

    def __getitem__(self, i: int) -> Layer:
        return self.layers_list[i]

    def forward(self, x: np.ndarray, layers_kwargs: Sequence[dict[str, Any]] | None = None
                ) -> tuple[np.ndarray, Cache]:
        """Args: layers_kwargs: optional forward kwargs, one dict per layer."""
        if layers_kwargs is not None and len(layers_kwargs) != len(self.layers_list):
            raise ValueError(f'Sequential {self.name!r}: layers_kwargs expected '
                             f'{len(self.layers_list)} dicts, got {len(layers_kwargs)}')
        kwargs = layers_kwargs or [{}] * len(self.layers_list)
        inputs, caches = [], []
        for layer, kw in zip(self.layers_list, kwargs, strict=True):
            inputs.append(x)
            x, cache = layer.forward(x, **kw)
            caches.append(cache)
        return x, {'inputs': inputs, 'caches': caches}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        dy = backwards_gradient
        steps = zip(self.layers_list, cache['inputs'], cache['caches'], strict=True)
        for layer, inp, c in reversed(list(steps)):
            dy = layer.backward(inp, c, dy, gradients)
        return dy


class Flatten(Layer):
    """``[B, ...] -> [B, prod(...)]``; backward reshapes dy back to x's shape."""

    needs_cache = False

    def __init__(self, name: str = 'Flatten') -> None:
        super().__init__(name)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        self.check_input(x, min_ndim=1)
        return x.reshape(x.shape[0], -1), {}

    def backward_impl(self, x, cache: Cache, backwards_gradient, gradients: Parameters):
        return backwards_gradient.reshape(x.shape)
