"""The registry of layer cases: one list that tests, benchmarks and the CLI read.

A `Case` is data, in the spirit of PyTorch's ModuleInfo: how to build the layer
(with random, non-default parameters), its input (small, odd, non-square;
kink-free where the layer has kinks), forward kwargs, tolerances per dtype, and
the checks it skips, each with its reason. The torch reference is the layer's
mirror (`reference.mirrors.torch_forward`) unless the case names another.

Tolerances compare ``|actual - expected| <= atol + rtol * |expected|``.
Defaults (DEFAULT_TOL) are the project's: float64 tight (both sides compute in
double; only summation order differs), float32 at torch's own float32
tolerances (torch.testing.assert_close: rtol 1.3e-6, atol 1e-5). A case that
needs looser ones says why in a comment beside them.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nn.layer import Layer


@dataclasses.dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float


DEFAULT_TOL: Mapping[str, Tol] = {
    'float64': Tol(rtol=1e-10, atol=1e-12),
    'float32': Tol(rtol=1.3e-6, atol=1e-5),
}
# Central differences in float64 with eps = 1e-6: truncation ~eps^2 |f'''|, round-off ~1e-16/eps.
DEFAULT_FD_TOL = Tol(rtol=1e-5, atol=1e-7)

#: The checks a case can skip (with a reason).
CHECKS = ('forward', 'backward', 'finite_differences', 'gradcheck', 'purity', 'accumulation',
          'reentrancy', 'linearity', 'batch_independence', 'batch_one')


def _no_kwargs(rng: np.random.Generator, x: np.ndarray) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer configuration and everything the harness needs to verify it.

    Attributes:
        name: short description; the test id is ``f'{layer.__name__}-{name}'``.
        layer: the `nn` class under test (the meta-test checks every public one has a case).
        build: ``rng -> Layer`` with random (never default) parameters, float32.
        input: ``rng -> x`` in float64 (integer for index inputs); the harness casts it.
        kwargs: ``(rng, x) -> forward kwargs`` (masks); drawn per input.
        tol: per-dtype tolerances against torch.
        fd_tol: tolerance against finite differences (always float64).
        skips: ``{check: reason}``; a skip without a reason is rejected.
        batch_independent: output sample i depends only on input sample i (axis 0).
        before_forward: called before every forward (resets a stochastic layer's generator).
        mode: 'train' or 'eval', set on the built layer.
    """
    name: str
    layer: type[Layer]
    build: Callable[[np.random.Generator], Layer]
    input: Callable[[np.random.Generator], np.ndarray]
    kwargs: Callable[[np.random.Generator, np.ndarray], dict[str, Any]] = _no_kwargs
    tol: Mapping[str, Tol] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TOL))
    fd_tol: Tol = DEFAULT_FD_TOL
    skips: Mapping[str, str] = dataclasses.field(default_factory=dict)
    batch_independent: bool = True
    before_forward: Callable[[Layer], None] | None = None
    mode: str = 'train'

    def __post_init__(self) -> None:
        for check, reason in self.skips.items():
            if check not in CHECKS:
                raise ValueError(f'case {self.id}: unknown check {check!r} in skips')
            if not reason or not reason.strip():
                raise ValueError(f'case {self.id}: skip of {check!r} needs a reason')
        merged = dict(DEFAULT_TOL)
        merged.update(self.tol)
        object.__setattr__(self, 'tol', merged)

    @property
    def id(self) -> str:
        return f'{self.layer.__name__}-{self.name}'

    def make(self, rng: np.random.Generator, dtype: Any = np.float64) -> tuple[Layer, np.ndarray, dict[str, Any]]:
        """Builds (layer, x, kwargs) in `dtype`, the layer in this case's mode."""
        layer = self.build(rng).astype(dtype)
        layer.train(self.mode == 'train')
        x = self.input(rng)
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(dtype)
        return layer, x, self.kwargs(rng, x)

    def prepare(self, layer: Layer) -> None:
        if self.before_forward is not None:
            self.before_forward(layer)


def randomize(layer: Layer, rng: np.random.Generator, scale: float = 0.5) -> Layer:
    """Gives every parameter random values: no scale of 1, no zero bias, in any test."""
    params = {key: (scale * rng.standard_normal(value.shape)).astype(value.dtype)
              for key, value in layer.parameters().items()}
    layer.update_parameters(params)
    return layer


def normal(*shape: int, scale: float = 1.0) -> Callable[[np.random.Generator], np.ndarray]:
    """Input factory: Gaussian of `shape`."""
    return lambda rng: scale * rng.standard_normal(shape)


def away_from_zero(*shape: int, margin: float = 0.05) -> Callable[[np.random.Generator], np.ndarray]:
    """Input factory for layers with a kink at 0: |x| >= margin, random signs."""
    def make(rng: np.random.Generator) -> np.ndarray:
        x = rng.standard_normal(shape)
        return np.sign(x) * (np.abs(x) + margin)
    return make


def _load() -> list[Case]:
    import reference.cases as package
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        cases.extend(importlib.import_module(f'reference.cases.{info.name}').CASES)
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f'duplicate case ids: {sorted(duplicates)}')
    return cases


CASES: list[Case] = _load()


def get(case_id: str) -> Case:
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(case_id)
