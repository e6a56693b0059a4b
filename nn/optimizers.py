"""Optimizers and the sequential forward/backward driver `loss_and_grads`.

Every optimizer updates a shared ``parameters`` dict (the union of the layers'
`parameters()`), then pushes it into the layers. `SGD`, `Adam` and `AdamW`
follow `torch.optim`'s update rules operation for operation, so with the same
hyper-parameters, parameters and gradients they match torch step for step.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from nn.layer import Layer, Parameters, apply_updates
from nn.loss_base import Loss


@dataclasses.dataclass
class BackwardPassOutput:
    """What `loss_and_grads` and `Optimizer.step` return."""
    loss: float
    output: np.ndarray
    gradients: Parameters = dataclasses.field(default_factory=dict)


def loss_and_grads(x: np.ndarray, y: np.ndarray, loss_fn: Loss, layers: Sequence[Layer],
                   layers_kwargs: Sequence[dict[str, Any]] | None = None) -> BackwardPassOutput:
    """Runs `layers` in order on x, the loss against y, and the backward pass.

    Args:
        x: Input of the first layer.
        y: Target of `loss_fn`.
        layers: Layers applied in order.
        layers_kwargs: Optional forward kwargs, one dict per layer.
    """
    if layers_kwargs is not None and len(layers_kwargs) != len(layers):
        raise ValueError(f'loss_and_grads: layers_kwargs expected {len(layers)} dicts, got {len(layers_kwargs)}')
    kwargs = layers_kwargs or [{}] * len(layers)
    inputs, caches = [], []
    for layer, kw in zip(layers, kwargs, strict=True):
        inputs.append(x)
        x, cache = layer.forward(x, **kw)
        caches.append(cache)
    loss = float(loss_fn(x, y))
    dy = loss_fn.backward(x, y)
    gradients: Parameters = {}
    for layer, inp, cache in zip(layers[::-1], inputs[::-1], caches[::-1], strict=True):
        dy = layer.backward(inp, cache, dy, gradients)
    return BackwardPassOutput(loss=loss, output=x, gradients=gradients)


class Optimizer(abc.ABC):
    """Base optimizer.

    Args:
        parameters: The dict it updates (keys as in `Layer.parameters()`).
        loss: The loss `step` minimises.
    """

    def __init__(self, parameters: Parameters, loss: Loss | None, name: str = 'Optimizer') -> None:
        self.name = name
        self.parameters = parameters
        self.loss = loss
        self.t = 0

    def step(self, x: np.ndarray, y: np.ndarray, layers: Sequence[Layer],
             layers_kwargs: Sequence[dict[str, Any]] | None = None) -> BackwardPassOutput:
        """One step: forward, loss, backward, update `parameters` and the layers."""
        out = loss_and_grads(x, y, self.loss, layers, layers_kwargs)
        self.apply_gradients(out.gradients)
        # Validate every layer before assigning any, so a bad dict changes nothing.
        updates = [u for layer in layers for u in layer.validated_updates(self.parameters)]
        apply_updates(updates)
        return out

    def apply_gradients(self, gradients: Parameters) -> None:
        """Updates `parameters` in place (new arrays) from gradients of the same keys."""
        missing = [k for k in self.parameters if k not in gradients]
        if missing:
            raise ValueError(f'{type(self).__name__}: expected a gradient for every parameter, missing {missing}')
        for key, p in self.parameters.items():
            if gradients[key].shape != p.shape:
                raise ValueError(f'{type(self).__name__}: parameter {key!r} has shape {p.shape}, '
                                 f'expected a gradient of that shape, got {gradients[key].shape}')
        self.t += 1
        for key, p in self.parameters.items():
            self.parameters[key] = self.update(key, p, gradients[key].astype(p.dtype, copy=False))

    @abc.abstractmethod
    def update(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Returns the new value of parameter `key` (step `self.t`, counted from 1)."""


class SGD(Optimizer):
    """Stochastic gradient descent, as `torch.optim.SGD`::

        g = g + weight_decay * p
        b = g (first step) or momentum * b + (1 - dampening) * g
        g = g + momentum * b (nesterov) or b (momentum > 0)
        p = p - lr * g
    """

    def __init__(self, lr: float, parameters: Parameters, loss: Loss | None = None, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 name: str = 'SGD') -> None:
        super().__init__(parameters, loss, name)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError('SGD: nesterov expected momentum > 0 and dampening 0, '
                             f'got momentum={momentum}, dampening={dampening}')
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay
        self.buffers: Parameters = {}

    def update(self, key, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = self.buffers.get(key)
            if buf is None:
                buf = self.buffers[key] = g.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        return p - self.lr * g


class Momentum(Optimizer):
    """The original library's momentum: an exponential moving average of the
    gradient, ``m = beta * m + (1 - beta) * g``, ``p = p - lr * m``."""

    def __init__(self, lr: float, parameters: Parameters, loss: Loss | None = None, beta: float = 0.9,
                 name: str = 'Momentum') -> None:
        super().__init__(parameters, loss, name)
        self.lr, self.beta = lr, beta
        self.m = {k: np.zeros_like(v) for k, v in parameters.items()}

    def update(self, key, p, g):
        m = self.m[key]
        m *= self.beta
        m += (1 - self.beta) * g
        return p - self.lr * m


class Adam(Optimizer):
    """Adam, as `torch.optim.Adam` (weight decay is L2, added to the gradient)::

        g = g + weight_decay * p
        m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    The moment buffers are updated in place: one pass each, no temporaries
    beyond the step itself.
    """

    decoupled_weight_decay = False

    def __init__(self, lr: float, parameters: Parameters, loss: Loss | None = None, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 name: str = 'Adam') -> None:
        super().__init__(parameters, loss, name)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay
        self.m = {k: np.zeros_like(v) for k, v in parameters.items()}
        self.v = {k: np.zeros_like(v) for k, v in parameters.items()}

    def update(self, key, p, g):
        if self.weight_decay and self.decoupled_weight_decay:
            p = p * (1 - self.lr * self.weight_decay)
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self.m[key], self.v[key]
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * np.square(g)
        step_size = self.lr / (1 - self.beta1 ** self.t)
        denom = np.sqrt(v)
        denom /= np.sqrt(1 - self.beta2 ** self.t)
        denom += self.eps
        np.divide(m, denom, out=denom)
        denom *= step_size
        return p - denom


class AdamW(Adam):
    """Adam with decoupled weight decay, as `torch.optim.AdamW`:
    ``p = p * (1 - lr * weight_decay)`` before the Adam step."""

    decoupled_weight_decay = True

    def __init__(self, lr: float, parameters: Parameters, loss: Loss | None = None, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 1e-2,
                 name: str = 'AdamW') -> None:
        super().__init__(lr, parameters, loss, beta1, beta2, eps, weight_decay, name)
