"""Every registry case through every check of the harness (reference.checks).

Test ids read ``test_<check>[<Layer>-<case>-<dtype>]``, so ``pytest -k LayerNorm``
runs every LayerNorm check and ``pytest -k "finite and Softmax"`` one family.
"""

from __future__ import annotations

import pytest

from reference import checks
from reference.registry import CASES

pytestmark = pytest.mark.torch


def _params(check: str, dtyped: bool = False):
    out = []
    for case in CASES:
        marks = [pytest.mark.skip(reason=case.skips[check])] if check in case.skips else []
        if check == 'batch_independence' and not case.batch_independent:
            marks = [pytest.mark.skip(reason='the case declares its samples coupled (batch_independent=False)')]
        if dtyped:
            out += [pytest.param(case, dtype, id=f'{case.id}-{dtype}', marks=marks) for dtype in checks.DTYPES]
        else:
            out.append(pytest.param(case, id=case.id, marks=marks))
    return out


@pytest.mark.parametrize('case, dtype', _params('forward', True))
def test_forward_vs_torch(case, dtype):
    checks.check_forward(case, dtype)


@pytest.mark.parametrize('case, dtype', _params('backward', True))
def test_backward_vs_torch(case, dtype):
    checks.check_backward(case, dtype)


@pytest.mark.parametrize('case', _params('batch_one'))
def test_backward_batch_of_one(case):
    checks.check_batch_one(case)


@pytest.mark.parametrize('case', _params('finite_differences'))
def test_finite_differences(case):
    checks.check_finite_differences(case)


@pytest.mark.parametrize('case', _params('gradcheck'))
def test_torch_gradcheck(case):
    checks.check_gradcheck(case)


@pytest.mark.parametrize('case', _params('purity'))
def test_purity(case):
    checks.check_purity(case)


@pytest.mark.parametrize('case', _params('accumulation'))
def test_gradients_accumulate(case):
    checks.check_accumulation(case)


@pytest.mark.parametrize('case', _params('reentrancy'))
def test_reentrancy(case):
    checks.check_reentrancy(case)


@pytest.mark.parametrize('case', _params('linearity'))
def test_linear_in_upstream_gradient(case):
    checks.check_linearity(case)


@pytest.mark.parametrize('case', _params('batch_independence'))
def test_batch_independence(case):
    checks.check_batch_independence(case)
