"""Mirrors of the convolution, pooling, batch-norm and embedding layers.

Each runs torch's channels-first functional op on the channels-first view of
x (`layout.channels_first`) and returns the channels-last view of its output, with
the weights permuted by `layout.conv1d_weight` / `layout.conv2d_weight`: the
layer's configuration (kernel, stride, padding, dilation, eps, momentum, mode)
is read off the layer object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import nn
from reference import layout
from reference.mirrors import mirror


def _bias(layer, params):
    return params[f'{layer.name}/b'] if layer.use_bias else None


@mirror(nn.Conv1D)
def conv1d(layer: nn.Conv1D, params, x):
    y = F.conv1d(layout.channels_first(x), layout.conv1d_weight(params[f'{layer.name}/W']), _bias(layer, params),
                 stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    return layout.channels_last(y)


@mirror(nn.Conv2D)
def conv2d(layer: nn.Conv2D, params, x):
    y = F.conv2d(layout.channels_first(x), layout.conv2d_weight(params[f'{layer.name}/W']), _bias(layer, params),
                 stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    return layout.channels_last(y)


@mirror(nn.MaxPool2D)
def max_pool2d(layer: nn.MaxPool2D, params, x):
    y = F.max_pool2d(layout.channels_first(x), layer.kernel_size, layer.stride, layer.padding)
    return layout.channels_last(y)


@mirror(nn.AvgPool2D)
def avg_pool2d(layer: nn.AvgPool2D, params, x):
    y = F.avg_pool2d(layout.channels_first(x), layer.kernel_size, layer.stride, layer.padding,
                     count_include_pad=True)
    return layout.channels_last(y)


@mirror(nn.BatchNorm2D)
def batch_norm2d(layer: nn.BatchNorm2D, params, x):
    scale, shift = params[f'{layer.name}/scale'], params[f'{layer.name}/shift']
    if layer.training:
        # Batch statistics; torch's own running-statistics update is checked in
        # tests/test_conv_extra.py against a torch.nn.BatchNorm2d over several steps.
        y = F.batch_norm(layout.channels_first(x), None, None, scale, shift, training=True,
                         momentum=layer.momentum, eps=layer.eps)
    else:
        running_mean = layout.to_torch(layer.running_mean).to(x.dtype)
        running_var = layout.to_torch(layer.running_var).to(x.dtype)
        y = F.batch_norm(layout.channels_first(x), running_mean, running_var, scale, shift, training=False,
                         eps=layer.eps)
    return layout.channels_last(y)


@mirror(nn.Embedding)
def embedding(layer: nn.Embedding, params, x):
    return F.embedding(x.to(torch.int64), params[f'{layer.name}/W'])
