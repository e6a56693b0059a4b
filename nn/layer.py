"""The `Layer` base class: the contract every layer of the library keeps.

A layer is a pure function of its input and its parameters, split in two:

    forward(x, **kwargs) -> (y, cache)
    backward(x, cache, backwards_gradient, gradients) -> dx

`backwards_gradient` (dL/dy) has y's shape; the returned dx = dL/dx has x's shape
and dtype. Parameter gradients dL/dtheta are *added* into `gradients` under the
parameter's key (``'{layer name}/{param}'``), so a layer used twice accumulates
like autograd does. Backward never writes into `x`, `cache` or
`backwards_gradient`, and never builds a Jacobian.

Subclasses implement `forward` and `backward_impl`. The public `backward` is
defined once here: it accepts the empty cache ``{}`` that callers of the
original library pass, recomputing the cache from `x` (see `cache_for_backward`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import numpy as np

Cache = dict[str, Any]
Parameters = dict[str, np.ndarray]


class Layer(abc.ABC):
    """Base class of every layer.

    Args:
        name: Prefix of this layer's parameter keys (``'{name}/{param}'``).
            Nested layers are named ``'{parent}/{child}'`` by their parent.
    """

    #: False for layers whose backward needs nothing beyond `x` (their cache is {}).
    needs_cache = True

    def __init__(self, name: str = 'Layer') -> None:
        self.name = name
        self._parameters: Parameters = {}
        self.training = True

    def __call__(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.forward(x, **kwargs)[0]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r})'

    # ------------------------------------------------------------------ compute
    @abc.abstractmethod
    def forward(self, x: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, Cache]:
        """Returns the output y and the cache that `backward` reuses."""

    def backward(
        self,
        x: np.ndarray,
        cache: Cache,
        backwards_gradient: np.ndarray,
        gradients: Parameters,
    ) -> np.ndarray:
        """Returns dL/dx and adds dL/dtheta into `gradients`.

        Args:
            x: The input given to `forward`.
            cache: What `forward` returned with y, or ``{}`` (then it is recomputed
                from `x`; forward keyword arguments such as a mask are then lost, so
                layers that take them need their real cache).
            backwards_gradient: dL/dy, the shape of y.
            gradients: Parameter gradients, accumulated in place under each
                parameter's key.
        """
        if not cache and self.needs_cache:
            cache = self.cache_for_backward(x)
        return self.backward_impl(x, cache, backwards_gradient, gradients)

    @abc.abstractmethod
    def backward_impl(
        self,
        x: np.ndarray,
        cache: Cache,
        backwards_gradient: np.ndarray,
        gradients: Parameters,
    ) -> np.ndarray:
        """`backward` with the cache that this layer's `forward` returned."""

    def cache_for_backward(self, x: np.ndarray) -> Cache:
        """Rebuilds the cache from `x` alone, for callers that passed ``{}``.

        The default reruns `forward`; layers whose forward has side effects
        (running statistics) or randomness (dropout) override it.
        """
        return self.forward(x)[1]

    # --------------------------------------------------------------- parameters
    def set_parameter(self, parameter_name: str, value: np.ndarray) -> None:
        """Stores a parameter under ``'{name}/{parameter_name}'``."""
        self._parameters[f'{self.name}/{parameter_name}'] = value

    def get_parameter(self, parameter_name: str) -> np.ndarray:
        """Returns the parameter stored under ``'{name}/{parameter_name}'``."""
        return self._parameters[f'{self.name}/{parameter_name}']

    def children(self) -> Iterator[Layer]:
        """The layers held directly by this one, in definition order."""
        for value in vars(self).values():
            if isinstance(value, Layer):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, Layer))

    def layers(self) -> Iterator[Layer]:
        """This layer and every nested layer, depth first."""
        yield self
        for child in self.children():
            yield from child.layers()

    def parameters(self) -> Parameters:
        """A new dict of this layer's and all nested layers' parameters."""
        params: Parameters = {}
        for layer in self.layers():
            params.update(layer._parameters)
        return params

    def update_parameters(self, parameters: Parameters) -> None:
        """Replaces this layer's (and nested layers') parameters from a dict.

        Every key this layer needs must be present with the same shape and a
        floating dtype; all are checked before anything is assigned, so on error
        nothing changes. Values are cast to the parameter's current dtype (use
        `astype` to change it). Keys of other layers are ignored.
        """
        apply_updates(self.validated_updates(parameters))

    def validated_updates(self, parameters: Parameters) -> list[tuple[Layer, str, np.ndarray]]:
        """Checks `parameters` against this layer tree; returns the assignments to make."""
        updates = []
        for layer in self.layers():
            for key, current in layer._parameters.items():
                if key not in parameters:
                    raise ValueError(
                        f'{type(layer).__name__} {layer.name!r}: update_parameters expected '
                        f'key {key!r}, got keys {sorted(parameters)}')
                new = parameters[key]
                if not isinstance(new, np.ndarray) or not np.issubdtype(new.dtype, np.floating):
                    raise TypeError(
                        f'{type(layer).__name__} {layer.name!r}: parameter {key!r} expected a '
                        f'floating numpy array, got {type(new).__name__} '
                        f'{getattr(new, "dtype", "")}')
                if new.shape != current.shape:
                    raise ValueError(
                        f'{type(layer).__name__} {layer.name!r}: parameter {key!r} expected '
                        f'shape {current.shape}, got {new.shape}')
                updates.append((layer, key, new.astype(current.dtype, copy=False)))
        return updates

    def astype(self, dtype: Any) -> Layer:
        """Casts every parameter (recursively) to `dtype`; returns self."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f'{type(self).__name__}.astype expected a floating dtype, got {dtype}')
        for layer in self.layers():
            for key, value in layer._parameters.items():
                layer._parameters[key] = value.astype(dtype, copy=False)
        return self

    # -------------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> Layer:
        """Puts this layer and every nested layer in training mode; returns self."""
        for layer in self.layers():
            layer.training = mode
        return self

    def eval(self) -> Layer:
        """Puts this layer and every nested layer in evaluation mode; returns self."""
        return self.train(False)

    # ------------------------------------------------------------------ helpers
    def accumulate(self, gradients: Parameters, parameter_name: str, grad: np.ndarray) -> None:
        """Adds `grad` into ``gradients['{name}/{parameter_name}']``.

        A new array is stored rather than adding in place, so an array the caller
        handed in (or got from an earlier backward) is never written.
        """
        key = f'{self.name}/{parameter_name}'
        previous = gradients.get(key)
        gradients[key] = grad if previous is None else previous + grad

    def check_input(
        self,
        x: Any,
        *,
        min_ndim: int = 1,
        ndim: int | None = None,
        last_dim: int | None = None,
        kind: str = 'floating',
        what: str = 'input',
    ) -> None:
        """Raises TypeError/ValueError naming this layer when `x` is not acceptable.

        Args:
            kind: ``'floating'`` or ``'integer'``: the dtype kind required.
            ndim: exact rank required; otherwise at least `min_ndim`.
            last_dim: required size of the last axis.
        """
        who = f'{type(self).__name__} {self.name!r}'
        if not isinstance(x, np.ndarray):
            raise TypeError(f'{who}: {what} expected a numpy array, got {type(x).__name__}')
        expected_kind = np.floating if kind == 'floating' else np.integer
        if not np.issubdtype(x.dtype, expected_kind):
            raise TypeError(f'{who}: {what} expected a {kind} dtype, got {x.dtype}')
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f'{who}: {what} expected rank {ndim}, got shape {x.shape}')
        if x.ndim < min_ndim:
            raise ValueError(
                f'{who}: {what} expected at least {min_ndim} dims, got shape {x.shape}')
        if last_dim is not None and x.shape[-1] != last_dim:
            raise ValueError(
                f'{who}: {what} expected last dim {last_dim}, got shape {x.shape}')


def apply_updates(updates: list[tuple[Layer, str, np.ndarray]]) -> None:
    """Assigns what `Layer.validated_updates` checked."""
    for layer, key, value in updates:
        layer._parameters[key] = value
