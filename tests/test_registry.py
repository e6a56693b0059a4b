"""The harness checks itself: every public layer has a case, and every case is well formed."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import nn
from reference.registry import CASES, CHECKS, DEFAULT_TOL


def public_layers() -> list[type]:
    return sorted({obj for name, obj in vars(nn).items()
                   if inspect.isclass(obj) and issubclass(obj, nn.Layer) and not inspect.isabstract(obj)
                   and not name.startswith('_')}, key=lambda c: c.__name__)


@pytest.mark.parametrize('layer_cls', public_layers(), ids=lambda c: c.__name__)
def test_every_public_layer_has_a_case(layer_cls):
    covered = {case.layer for case in CASES}
    assert layer_cls in covered, f'{layer_cls.__name__} is exported by nn but has no case in reference/cases'


def test_every_case_layer_is_public():
    exported = set(public_layers())
    assert {case.layer for case in CASES} <= exported


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.id)
def test_case_is_well_formed(case):
    for check, reason in case.skips.items():
        assert check in CHECKS and reason.strip(), f'{case.id}: skip of {check!r} must name a known check and a reason'
    rng = np.random.default_rng(0)
    layer, x, kwargs = case.make(rng, np.float32)
    assert isinstance(layer, case.layer)
    # Never test at default parameters: no parameter may be all ones or all zeros.
    for key, value in layer.parameters().items():
        assert value.dtype == np.float32
        assert not np.all(value == 1) and not np.all(value == 0), f'{case.id}: {key} left at its default'
    # Inputs: not constant, and float inputs random.
    assert x.size > 1 and np.unique(x).size > 1, f'{case.id}: the input must not be constant'
    # Tolerances never looser than the defaults without a comment: looser ones must be declared in
    # the case module with a comment; here we only require that float32 is not tighter than float64.
    assert case.tol['float32'].rtol >= case.tol['float64'].rtol


def test_default_tolerances_are_the_documented_ones():
    assert DEFAULT_TOL['float64'].rtol <= 1e-10 and DEFAULT_TOL['float32'].rtol <= 1.3e-6


def test_case_ids_select_by_layer_name():
    """`pytest -k LayerNorm` works because every id starts with the layer's class name."""
    for case in CASES:
        assert case.id.startswith(case.layer.__name__ + '-')


def test_a_skip_without_reason_is_rejected():
    from reference.registry import Case, normal
    with pytest.raises(ValueError, match='needs a reason'):
        Case('x', nn.ReLU, lambda rng: nn.ReLU(), normal(3, 4), skips={'gradcheck': ' '})
    with pytest.raises(ValueError, match='unknown check'):
        Case('x', nn.ReLU, lambda rng: nn.ReLU(), normal(3, 4), skips={'gradchek': 'typo'})
