"""Mirrors of Dense, the activations, LayerNorm, Dropout and the containers."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import nn
from reference import layout
from reference.mirrors import mirror, torch_forward


@mirror(nn.Dense)
def dense(layer: nn.Dense, params, x):
    b = params[f'{layer.name}/b'] if layer.use_bias else None
    return F.linear(x, layout.linear_weight(params[f'{layer.name}/W']), b)


@mirror(nn.ReLU)
def relu(layer, params, x):
    return torch.relu(x)


@mirror(nn.LeakyReLU)
def leaky_relu(layer, params, x):
    return F.leaky_relu(x, layer.negative_slope)


@mirror(nn.Sigmoid)
def sigmoid(layer, params, x):
    return torch.sigmoid(x)


@mirror(nn.Tanh)
def tanh(layer, params, x):
    return torch.tanh(x)


@mirror(nn.GELU)
def gelu(layer, params, x):
    return F.gelu(x, approximate=layer.approximate)


@mirror(nn.Softmax)
def softmax(layer, params, x):
    return torch.softmax(x, dim=layer.dim)


@mirror(nn.LayerNorm)
def layer_norm(layer, params, x):
    return F.layer_norm(x, (layer.size,), params[f'{layer.name}/scale'], params[f'{layer.name}/shift'], layer.eps)


@mirror(nn.Dropout)
def dropout(layer, params, x):
    # torch's generator cannot reproduce ours, so the mask is read off the layer:
    # the caller resets the layer's generator first (the case's before_forward),
    # and the layer's own output on a positive input is nonzero exactly where kept.
    if not layer.training or layer.p == 0.0:
        return x.clone()
    if layer.p == 1.0:
        return x * 0
    probe = np.full(tuple(x.shape), 0.5, dtype=layout.to_numpy(x).dtype)
    keep = torch.from_numpy(layer(probe) != 0)
    return torch.where(keep, x / (1.0 - layer.p), torch.zeros_like(x))


@mirror(nn.Flatten)
def flatten(layer, params, x):
    return x.reshape(x.shape[0], -1)


@mirror(nn.Sequential)
def sequential(layer, params, x, layers_kwargs=None):
    for i, child in enumerate(layer.layers_list):
        x = torch_forward(child, params, x, **(layers_kwargs[i] if layers_kwargs else {}))
    return x
