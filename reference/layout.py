"""Layout conversions between `nn` (channels-last, ``W (in, out)``) and torch.

Every place the two libraries lay a tensor out differently is converted here,
and only here; each function is differentiable, so gradients flow back to the
`nn`-layout tensor and come out in `nn`'s layout.
"""

from __future__ import annotations

import numpy as np
import torch


def to_torch(array: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    """A torch tensor holding a copy of `array` (same dtype)."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def params_to_torch(params: dict[str, np.ndarray], requires_grad: bool = True) -> dict[str, torch.Tensor]:
    """Leaf tensors for every parameter, keyed as in `Layer.parameters()`."""
    return {key: to_torch(value, requires_grad) for key, value in params.items()}


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def linear_weight(W: torch.Tensor) -> torch.Tensor:
    """Dense ``W (in, out)`` -> ``nn.Linear.weight (out, in)``."""
    return W.t()


def conv1d_weight(W: torch.Tensor) -> torch.Tensor:
    """Conv1D ``W (K, Cin, Cout)`` -> ``Conv1d.weight (Cout, Cin, K)``."""
    return W.permute(2, 1, 0)


def conv2d_weight(W: torch.Tensor) -> torch.Tensor:
    """Conv2D ``W (Kh, Kw, Cin, Cout)`` -> ``Conv2d.weight (Cout, Cin, Kh, Kw)``."""
    return W.permute(3, 2, 0, 1)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """``[B, *spatial, C]`` -> ``[B, C, *spatial]`` (NTC -> NCT, NHWC -> NCHW)."""
    return x.movedim(-1, 1)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, *spatial]`` -> ``[B, *spatial, C]``."""
    return x.movedim(1, -1)
