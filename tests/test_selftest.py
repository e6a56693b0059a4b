"""The harness tests itself: every deliberately broken layer (tests/broken_layers.py) is flagged.

For every entry of BROKEN and every check it lists:
- the check raises GradcheckError naming the expected tensor, and its message names the case and tensor;
- the real layer, built with the same random draws, passes the same check, so the breakage is
  what is caught, not the case.
Then: every gradient bug is caught by the finite-difference check alone (run again here in a
process where torch cannot be imported) and by the torch backward check alone; every check of
reference.checks catches at least one broken layer.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from broken_layers import BROKEN, AttentionMaskPolarityFixed, Broken, causal

from nn.gradcheck import GradcheckError
from reference import checks
from reference.registry import Case, normal, randomize

pytestmark = pytest.mark.selftest

ROOT = Path(__file__).resolve().parent.parent
_SPEC = re.compile(r'(\w+)(?:\[(\w+)\])?$')


def parse(spec: str) -> tuple[str, str | None]:
    """'backward[float32]' -> ('backward', 'float32'); 'purity' -> ('purity', None)."""
    match = _SPEC.match(spec)
    if not match or match.group(1) not in checks.CHECKS:
        raise ValueError(f'unknown check {spec!r}')
    name, dtype = match.groups()
    if (name in checks.DTYPED) != (dtype is not None):
        raise ValueError(f'check {spec!r}: {name} {"needs" if name in checks.DTYPED else "takes no"} dtype')
    return name, dtype


def run(case: Case, spec: str, rng_of: Case) -> dict:
    """Runs one check on `case`, with the generator the harness would give `rng_of` for it."""
    name, dtype = parse(spec)
    rng = checks.case_rng(rng_of, name, dtype or '')
    if dtype is not None:
        return checks.CHECKS[name](case, dtype, rng)
    return checks.CHECKS[name](case, rng)


def _params(*, messages: bool = False, real: bool = False):
    """(entry, check) pairs. Known harness bugs are strict xfails on the broken layer's tests
    (never on the real layer's): a message-only bug (note key 'message:<check>') on the
    message test, any other on both (a check that does not catch it cannot name the tensor)."""
    out = []
    for entry in BROKEN:
        for spec in entry.checks:
            marks = []
            if parse(spec)[0] in checks.TORCH_CHECKS:
                marks = [pytest.mark.torch,
                         pytest.mark.skipif(not checks.TORCH_AVAILABLE, reason='needs torch')]
            note = None if real else entry.harness_bugs.get(spec)
            if messages and not real:
                note = entry.harness_bugs.get(f'message:{spec}', note)
            if note is not None:
                marks.append(pytest.mark.xfail(reason=f'harness bug: {note}', strict=True))
            out.append(pytest.param(entry, spec, id=f'{entry.name}-{spec}', marks=marks))
    return out


@functools.cache
def outcome(name: str, spec: str) -> BaseException | None:
    """What running `spec` on the broken layer `name` raised (None: it passed). Run once per pair."""
    entry = next(e for e in BROKEN if e.name == name)
    try:
        run(entry.case, spec, entry.case)
    except Exception as err:  # noqa: BLE001 - the tests below say what it should have been
        return err
    return None


def _names(message: str, tensor: str) -> bool:
    """The message names `tensor` as a word (so 'x' is not matched inside 'dx' or 'max')."""
    return re.search(rf'(?<![\w/]){re.escape(tensor)}(?![\w/])', message) is not None


@pytest.mark.parametrize('entry, spec', _params())
def test_broken_layer_is_caught(entry: Broken, spec: str):
    err = outcome(entry.name, spec)
    assert err is not None, f'{entry.name}: {spec} did not flag {type(entry.case.layer).__name__}'
    if not isinstance(err, GradcheckError):
        raise AssertionError(f'{entry.name}: {spec} raised {type(err).__name__}, not GradcheckError') from err
    assert err.tensor == entry.tensor, (
        f'{entry.name}: {spec} named tensor {err.tensor!r}, expected {entry.tensor!r}:\n{err}')
    assert entry.case.id in str(err), f'{entry.name}: {spec} message does not name the case:\n{err}'


@pytest.mark.parametrize('entry, spec', _params(messages=True))
def test_failure_message_names_the_tensor(entry: Broken, spec: str):
    err = outcome(entry.name, spec)
    assert isinstance(err, GradcheckError), f'{entry.name}: {spec}: no GradcheckError (see test_broken_layer_is_caught)'
    assert _names(str(err), entry.tensor), f'{entry.name}: {spec} message does not name {entry.tensor!r}:\n{err}'


@pytest.mark.parametrize('entry, spec', _params(real=True))
def test_real_layer_passes_the_same_check(entry: Broken, spec: str):
    run(entry.real, spec, entry.case)


def test_enough_broken_layers():
    assert len(BROKEN) >= 12
    assert len({e.name for e in BROKEN}) == len(BROKEN)
    for entry in BROKEN:
        assert entry.checks, entry.name
        assert entry.case.layer is not entry.real.layer or entry.name.startswith('cross-entropy'), entry.name
        for spec in entry.checks:
            parse(spec)


def test_every_broken_class_documents_its_bug():
    for entry in BROKEN:
        cls = entry.case.build(np.random.default_rng(0))
        cls = type(getattr(cls, 'loss', cls)) if entry.name.startswith('cross-entropy') else type(cls)
        assert cls.__doc__ and len(cls.__doc__.split()) >= 15, f'{cls.__name__}: docstring must explain the bug'


def test_no_single_check_is_load_bearing_for_gradient_bugs():
    """Every gradient bug is expected (and so, above, shown) to fail the torch-free finite-difference
    check on its own, and the torch backward check on its own."""
    gradient_bugs = [e for e in BROKEN if e.gradient_bug]
    assert len(gradient_bugs) >= 10
    for entry in gradient_bugs:
        assert 'finite_differences' in entry.checks, entry.name
        assert 'backward[float64]' in entry.checks, entry.name


def test_every_check_catches_some_broken_layer():
    caught = {parse(spec)[0] for entry in BROKEN for spec in entry.checks if spec not in entry.harness_bugs}
    assert caught == set(checks.CHECKS), f'checks no broken layer exercises: {set(checks.CHECKS) - caught}'


def test_rewritten_attention_backward_is_right_without_its_bug():
    """AttentionMaskPolarityBug rewrites the backward; with the polarity fixed it passes, so the
    marked line is its only bug."""
    case = Case('attention-mask-polarity-fixed', AttentionMaskPolarityFixed,
                lambda rng: randomize(AttentionMaskPolarityFixed(4, 2), rng), normal(2, 5, 4), kwargs=causal)
    specs = ['finite_differences', 'purity', 'accumulation', 'reentrancy', 'linearity']
    if checks.TORCH_AVAILABLE:
        specs += ['backward[float64]', 'gradcheck']
    for spec in specs:
        run(case, spec, case)


_TORCH_FREE = '''
import json, sys
sys.modules['torch'] = None                     # `import torch` now raises ImportError
from nn.gradcheck import GradcheckError
from reference import checks
from broken_layers import BROKEN
assert not checks.TORCH_AVAILABLE
out = {}
for entry in BROKEN:
    if not entry.gradient_bug:
        continue
    try:
        checks.check_finite_differences(entry.case)
        out[entry.name] = None
    except GradcheckError as err:
        out[entry.name] = [err.tensor, str(err)]
print(json.dumps(out))
'''


def test_finite_differences_catch_every_gradient_bug_without_torch():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests'),
                                                       os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', _TORCH_FREE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {e.name: e for e in BROKEN if e.gradient_bug}
    assert set(results) == set(expected)
    for name, result in results.items():
        assert result is not None, f'{name}: finite differences (torch-free) did not flag it'
        tensor, message = result
        assert tensor == expected[name].tensor, f'{name}: named {tensor!r}, expected {expected[name].tensor!r}'
        assert expected[name].case.id in message
