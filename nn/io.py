"""Saving and loading parameter dictionaries as `.npz` (never pickle)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from nn.layer import Layer, Parameters, apply_updates


def save_parameters(path: str | os.PathLike, parameters: Parameters) -> None:
    """Writes ``{key: array}`` to an uncompressed `.npz` file."""
    for key, value in parameters.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise TypeError(f'save_parameters: {key!r} expected a numeric numpy array, got {type(value).__name__}')
    np.savez(path, **parameters)


def load_parameters(path: str | os.PathLike, layers: Layer | Sequence[Layer] | None = None) -> Parameters:
    """Reads a `.npz` written by `save_parameters`; optionally loads it into layers.

    Pickled objects are refused (``allow_pickle=False``). With `layers`, every
    key each layer needs must be in the file with the right shape; everything is
    checked before anything is assigned, so a bad file changes nothing.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            parameters = {key: data[key] for key in data.files}
    except ValueError as err:
        raise ValueError(f'load_parameters: {os.fspath(path)!r} expected plain arrays, got pickled objects') from err
    if layers is not None:
        layers = [layers] if isinstance(layers, Layer) else list(layers)
        apply_updates([u for layer in layers for u in layer.validated_updates(parameters)])
    return parameters
