"""The command-line tools: `nn-verify` (nn.verify) and `nn-train` (nn.train).

Most tests call ``main(argv)`` in-process on a few registry cases with ``-j 1``;
the exit codes of real processes, the no-torch path (torch hidden by a
``sitecustomize`` shim that makes ``import torch`` raise ModuleNotFoundError) and
the lazy imports are checked in subprocesses. The user layers below are written to a
file and given to ``--layer path.py:Class`` as a user would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nn
from nn import train, verify

STATUSES = {'pass', 'fail', 'skip'}

USER_LAYERS = textwrap.dedent('''
    import numpy as np
    import nn


    class Affine(nn.Layer):
        """y = tanh(x * s + t), with s and t over the last axis."""

        def __init__(self, size, name='Affine'):
            super().__init__(name)
            self.size = size
            self.set_parameter('s', np.ones(size, np.float32))
            self.set_parameter('t', np.zeros(size, np.float32))

        def forward(self, x):
            self.check_input(x, last_dim=self.size)
            y = np.tanh(x * self.get_parameter('s') + self.get_parameter('t'))
            return y, {'y': y}

        def backward_impl(self, x, cache, dy, gradients):
            dz = dy * (1 - cache['y'] ** 2)
            axes = tuple(range(x.ndim - 1))
            self.accumulate(gradients, 's', (dz * x).sum(axis=axes))
            self.accumulate(gradients, 't', self.shift_gradient(dz, axes))
            return self.input_gradient(dz)

        def shift_gradient(self, dz, axes):
            return dz.sum(axis=axes)

        def input_gradient(self, dz):
            return dz * self.get_parameter('s')


    class WrongShift(Affine):
        """The shift gradient leaves out the first sample."""

        def shift_gradient(self, dz, axes):
            return dz[1:].sum(axis=axes)


    class RightOnlyAtDefaults(Affine):
        """dx forgets the factor s: right only while s is all ones (the default)."""

        def input_gradient(self, dz):
            return dz.copy()


    class Crashes(Affine):
        def backward_impl(self, x, cache, dy, gradients):
            raise ValueError('deliberate crash in backward')


    class NotALayer:
        pass
''')


@pytest.fixture
def user_layers(tmp_path):
    path = tmp_path / 'my_layers.py'
    path.write_text(USER_LAYERS)
    return path


def run_verify(capsys, *argv: str) -> tuple[int, str, str]:
    code = verify.main(['--no-progress', *argv])
    out, err = capsys.readouterr()
    return code, out, err


# Makes `import torch` fail as if torch were not installed. (sys.modules['torch'] = None would
# too, but SciPy's array-API helpers then find None where they look for torch and crash.)
HIDE_TORCH = textwrap.dedent('''
    import sys


    class HideTorch:
        def find_spec(self, name, path=None, target=None):
            if name == 'torch' or name.startswith('torch.'):
                raise ModuleNotFoundError(f'No module named {name!r} (hidden by tests/test_cli.py)', name=name)
            return None


    sys.meta_path.insert(0, HideTorch())
''')


def subprocess_env(hide_torch: bool = False, tmp_path=None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env.pop('NO_COLOR', None)
    if hide_torch:
        shim = tmp_path / 'hide_torch'
        shim.mkdir(exist_ok=True)
        (shim / 'sitecustomize.py').write_text(HIDE_TORCH)
        env['PYTHONPATH'] = os.pathsep.join([str(shim), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    return env


def check_schema(doc: dict) -> None:
    """The JSON document as documented in nn.verify's docstring."""
    assert doc['version'] == verify.SCHEMA_VERSION == 1
    assert doc['tool'] == 'nn-verify' and doc['nn_version'] == nn.__version__
    assert doc['mode'] in ('registry', 'layer')
    assert isinstance(doc['seed'], int)
    assert doc['dtype'] in ('both', 'float64', 'float32')
    assert doc['dtypes'] == list(verify.DTYPE_CHOICES[doc['dtype']])
    assert doc['gradcheck_mode'] in ('auto', 'fast', 'full')
    assert set(doc['torch']) == {'available', 'version', 'error'}
    assert isinstance(doc['torch']['available'], bool)
    for case in doc['cases']:
        assert set(case) >= {'id', 'layer', 'status', 'seconds', 'checks', 'time_ratio', 'timing'}
        assert case['status'] in ('pass', 'fail')
        assert isinstance(case['id'], str) and isinstance(case['layer'], str)
        for key, check in case['checks'].items():
            assert set(check) == {'check', 'dtype', 'status', 'measurements', 'message', 'tensor', 'seconds'}
            assert key == (f'{check["check"]}[{check["dtype"]}]' if check['dtype'] else check['check'])
            assert check['status'] in STATUSES
            assert isinstance(check['measurements'], dict)
            assert all(v is None or isinstance(v, (int, float, bool)) for v in check['measurements'].values())
            if check['status'] == 'pass':
                assert check['message'] is None and check['tensor'] is None
            else:
                assert isinstance(check['message'], str) and check['message']
        failed = any(c['status'] == 'fail' for c in case['checks'].values())
        assert case['status'] == ('fail' if failed else 'pass')
        timing = case['timing']
        assert set(timing) == {'dtype', 'nn_seconds', 'torch_seconds', 'note'}
        if case['time_ratio'] is not None:
            assert case['time_ratio'] > 0
            assert case['time_ratio'] == pytest.approx(timing['nn_seconds'] / timing['torch_seconds'])
        else:
            assert timing['note']
    s = doc['summary']
    checks = [c for case in doc['cases'] for c in case['checks'].values()]
    assert s['cases'] == len(doc['cases']) == s['cases_passed'] + s['cases_failed']
    assert s['checks'] == len(checks) == s['passed'] + s['failed'] + s['skipped']
    assert s['failed'] == sum(c['status'] == 'fail' for c in checks)
    assert s['ok'] == (s['failed'] == 0)
    assert s['seconds'] > 0


# ----------------------------------------------------------------------------- -k expressions

@pytest.mark.parametrize('pattern, expected', [
    ('dense', {'Dense-3d', 'Dense-4d', 'Dense-2d-wide'}),
    ('Dense and not 4d', {'Dense-3d', 'Dense-2d-wide'}),
    ('3d or wide', {'Dense-3d', 'ReLU-3d', 'Dense-2d-wide'}),
    ('(ReLU or Dense) and 3d', {'Dense-3d', 'ReLU-3d'}),
    ('not (Dense or ReLU)', {'Softmax-dim0'}),
])
def test_k_expressions_match_like_pytest(pattern, expected):
    ids = ['Dense-3d', 'Dense-4d', 'Dense-2d-wide', 'ReLU-3d', 'Softmax-dim0']
    predicate = verify.match_expression(pattern)
    assert {i for i in ids if predicate(i)} == expected


@pytest.mark.parametrize('pattern', ['', 'Dense and', '(Dense', 'Dense)', 'or Dense', 'not'])
def test_k_syntax_errors_are_usage_errors(pattern):
    with pytest.raises(verify.UsageError, match='-k'):
        verify.match_expression(pattern)


def test_k_matching_nothing_exits_2(capsys):
    code, out, err = run_verify(capsys, '-k', 'NoSuchLayerAnywhere')
    assert code == 2
    assert 'matches no case' in err and out == ''


def test_list_prints_the_selected_ids(capsys):
    code, out, _ = run_verify(capsys, '--list', '-k', 'Dense and not 4d')
    assert code == 0
    assert out.split() == ['Dense-3d', 'Dense-2d-wide', 'Dense-square-no-bias']


# ----------------------------------------------------------------------------- registry reports

@pytest.mark.torch
def test_registry_subset_passes_with_json_report(capsys, tmp_path):
    path = tmp_path / 'report.json'
    code, out, _ = run_verify(capsys, '-k', 'Dense and not 4d or LayerNorm-3d', '-j', '1', '--json', str(path))
    assert code == 0, out
    doc = json.loads(path.read_text())
    check_schema(doc)
    from reference import checks
    assert [c['id'] for c in doc['cases']] == ['Dense-3d', 'Dense-2d-wide', 'Dense-square-no-bias', 'LayerNorm-3d']
    assert doc['torch'] == {'available': True, 'version': '2.13.0', 'error': None}
    expected_keys = [f'{name}[{d}]' if name in checks.DTYPED else name
                     for name in checks.CHECKS for d in (('float64', 'float32') if name in checks.DTYPED else (None,))]
    for case in doc['cases']:
        assert list(case['checks']) == expected_keys   # every check of the harness, in order
        assert all(c['status'] == 'pass' for c in case['checks'].values())
        assert case['checks']['forward[float32]']['measurements']['max_rel_err'] < 1e-5
        assert case['checks']['finite_differences']['measurements']['checked'] > 0
        assert case['time_ratio'] > 0
    assert doc['summary'] == {**doc['summary'], 'cases': 4, 'cases_failed': 0, 'failed': 0, 'skipped': 0, 'ok': True}
    # The table: one row per case, the columns, and the summary line last.
    lines = out.splitlines()
    assert lines[0].split()[:3] == ['case', 'fwd', 'f64']
    assert sum(line.startswith(('Dense-', 'LayerNorm-')) and line.endswith('PASS') for line in lines) == 4
    assert re.fullmatch(r'nn-verify PASSED: 4/4 cases passed, 0 failed; 48 checks: 48 passed, 0 failed, '
                        r'0 skipped \(torch 2\.13\.0, float64\+float32, seed 0\) in [\d.]+ s', lines[-1])
    assert '\033[' not in out                    # not a terminal: no colour


@pytest.mark.torch
def test_skips_are_shown_with_their_reason_and_markdown_report(capsys, tmp_path):
    md = tmp_path / 'report.md'
    code, out, _ = run_verify(capsys, '-k', 'Softmax-dim0', '-j', '1', '--markdown', str(md), '--no-timing')
    assert code == 0
    assert 'Softmax-dim0 batch_independence: the case declares its samples coupled' in out
    text = md.read_text()
    assert text.startswith('## ✅ nn-verify: 1/1 cases passed')
    header = '| case | fwd f64 | fwd f32 | bwd f64 | bwd f32 | fd | kinks | gradcheck | other | nn/torch | result |'
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith('| `Softmax-dim0`'))
    assert row.endswith('| 5/5 pass | - | PASS |')
    assert 'Skipped checks' in text and 'batch_independent=False' in text
    assert 'nn-verify PASSED: 1/1 cases passed' in text


@pytest.mark.torch
def test_dtype_option_limits_the_torch_comparisons(capsys, tmp_path):
    path = tmp_path / 'r.json'
    code, out, _ = run_verify(capsys, '-k', 'Tanh', '-j', '1', '--dtype', 'float32', '--json', str(path),
                              '--no-timing')
    assert code == 0
    doc = json.loads(path.read_text())
    check_schema(doc)
    keys = list(doc['cases'][0]['checks'])
    assert 'forward[float32]' in keys and 'backward[float32]' in keys
    assert not any('float64' in k for k in keys)
    assert 'fwd f64' not in out.splitlines()[0]


@pytest.mark.torch
def test_seed_zero_draws_what_the_test_suite_draws_and_other_seeds_differ(capsys, tmp_path):
    from reference import checks, registry
    expected = checks.check_finite_differences(registry.get('Dense-3d'))
    measured = {}
    for seed in (0, 7):
        path = tmp_path / f'seed{seed}.json'
        code, _, _ = run_verify(capsys, '-k', 'Dense-3d', '-j', '1', '--seed', str(seed), '--json', str(path),
                                '--no-timing')
        assert code == 0
        doc = json.loads(path.read_text())
        assert doc['seed'] == seed
        measured[seed] = doc['cases'][0]['checks']['finite_differences']['measurements']
    assert measured[0] == pytest.approx(expected, rel=0, abs=0)
    assert measured[7]['max_abs_err'] != measured[0]['max_abs_err']


class ScaledDxDense(nn.Dense):
    """A deliberately broken registry layer: dx is 1.5 times too large."""

    def backward_impl(self, x, cache, dy, gradients):
        return 1.5 * super().backward_impl(x, cache, dy, gradients)


@pytest.mark.torch
def test_broken_registry_case_fails_naming_the_tensor(capsys, tmp_path, monkeypatch):
    from reference import registry
    broken = registry.Case('dx-x1.5', ScaledDxDense,
                           lambda rng: registry.randomize(ScaledDxDense(5, 3), rng), registry.normal(4, 5))
    monkeypatch.setattr(registry, 'CASES', [registry.get('Tanh-2d'), broken])
    path = tmp_path / 'r.json'
    code, out, _ = run_verify(capsys, '-j', '1', '--json', str(path))
    assert code == 1
    doc = json.loads(path.read_text())
    check_schema(doc)
    good, bad = doc['cases']
    assert good['status'] == 'pass' and bad['status'] == 'fail'
    for key in ('backward[float64]', 'backward[float32]', 'finite_differences', 'gradcheck', 'batch_one'):
        assert bad['checks'][key]['status'] == 'fail', key
        assert bad['checks'][key]['tensor'] == 'dx', key
    assert bad['checks']['forward[float64]']['status'] == 'pass'     # the forward is right
    assert 'scaled by 1.500' in bad['checks']['finite_differences']['message']
    assert bad['time_ratio'] is None and bad['timing']['note'] == 'not timed: a check failed'
    assert 'FAIL ScaledDxDense-dx-x1.5 backward[float64] (tensor dx):' in out
    assert out.splitlines()[-1].startswith('nn-verify FAILED: 1/2 cases passed, 1 failed;')


@pytest.mark.torch
def test_parallel_workers_report_what_one_process_reports(capsys, tmp_path):
    docs = []
    for jobs in ('1', '2'):
        path = tmp_path / f'j{jobs}.json'
        code, _, _ = run_verify(capsys, '-k', 'Sigmoid or Dense-3d or Softmax-dim0', '-j', jobs, '--json', str(path))
        assert code == 0
        docs.append(json.loads(path.read_text()))
    for one, two in zip(*(d['cases'] for d in docs), strict=True):
        assert one['id'] == two['id']
        assert {k: (c['status'], c['measurements']) for k, c in one['checks'].items()} == \
               {k: (c['status'], c['measurements']) for k, c in two['checks'].items()}


def _gradcheck_entries():
    from broken_layers import BROKEN
    return [pytest.param(e, id=e.name) for e in BROKEN
            if 'gradcheck' in e.checks and 'gradcheck' not in e.harness_bugs]


@pytest.mark.torch
@pytest.mark.parametrize('entry', _gradcheck_entries())
def test_gradcheck_column_flags_every_broken_layer_naming_the_tensor(entry):
    # What nn-verify runs by default (--gradcheck auto) catches each deliberately broken layer of the
    # self-test catalogue and names the same tensor, and passes its real twin.
    from nn.gradcheck import GradcheckError
    from reference import checks
    with pytest.raises(GradcheckError) as caught:
        verify.run_gradcheck(entry.case, checks.case_rng(entry.real, 'gradcheck'), 'auto')
    assert caught.value.tensor == entry.tensor
    assert f'tensor {entry.tensor}' in str(caught.value) and entry.case.id in str(caught.value)
    assert verify.run_gradcheck(entry.real, checks.case_rng(entry.real, 'gradcheck'), 'auto')['passed']


@pytest.mark.torch
def test_fast_mode_gradcheck_on_a_large_layer():
    from nn.gradcheck import GradcheckError
    from reference import checks, registry
    big = registry.Case('big', ScaledDxDense, lambda rng: registry.randomize(ScaledDxDense(40, 30), rng),
                        registry.normal(6, 40))
    assert checks.gradcheck_size(big) == 6 * 40 + 40 * 30 + 30 + 6 * 30 > checks.GRADCHECK_FULL_MAX
    real = registry.Case('big', nn.Dense, lambda rng: registry.randomize(nn.Dense(40, 30), rng),
                         registry.normal(6, 40))
    assert verify.run_gradcheck(real, np.random.default_rng(1), 'auto') == {'passed': True, 'fast_mode': True}
    with pytest.raises(GradcheckError, match=r'gradcheck \(fast mode\): tensor dx: Jacobian mismatch') as caught:
        verify.run_gradcheck(big, np.random.default_rng(1), 'auto')
    assert caught.value.tensor == 'dx'
    # --gradcheck full / fast force the mode whatever the size.
    small = registry.get('Tanh-2d')
    assert verify.run_gradcheck(small, np.random.default_rng(1), 'auto')['fast_mode'] is False
    assert verify.run_gradcheck(small, np.random.default_rng(1), 'fast') == {'passed': True, 'fast_mode': True}
    assert verify.run_gradcheck(small, np.random.default_rng(1), 'full') == {'passed': True, 'fast_mode': False}


# ----------------------------------------------------------------------------- colour

class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv('NO_COLOR', raising=False)
    monkeypatch.setenv('TERM', 'xterm')
    assert verify.use_color('auto', _Stream(True))
    assert not verify.use_color('auto', _Stream(False))
    assert not verify.use_color('never', _Stream(True))
    monkeypatch.setenv('NO_COLOR', '1')
    assert not verify.use_color('auto', _Stream(True))
    assert verify.use_color('always', _Stream(False))     # an explicit option beats the environment
    monkeypatch.setenv('NO_COLOR', '')                     # empty means unset (no-color.org)
    assert verify.use_color('auto', _Stream(True))


@pytest.mark.torch
def test_color_always_paints_the_table(capsys):
    code, out, _ = run_verify(capsys, '-k', 'ReLU-3d', '-j', '1', '--color', 'always', '--no-timing')
    assert code == 0
    assert '\033[32m PASS' in out and '\033[1mcase' in out


# ----------------------------------------------------------------------------- the user's layer

@pytest.mark.torch
def test_correct_user_layer_passes(capsys, tmp_path, user_layers):
    path = tmp_path / 'r.json'
    code, out, _ = run_verify(capsys, '--layer', f'{user_layers}:Affine', '--shape', '4,7',
                              '--init-args', '{"size": 7}', '--batch-independent', '--json', str(path))
    assert code == 0, out
    doc = json.loads(path.read_text())
    check_schema(doc)
    assert doc['mode'] == 'layer'
    assert doc['layer'] == {'spec': f'{user_layers}:Affine', 'shape': [4, 7], 'init_args': {'size': 7},
                            'int_input': None}
    (case,) = doc['cases']
    assert case['id'] == 'Affine-4x7'
    statuses = {k: c['status'] for k, c in case['checks'].items()}
    for name in ('finite_differences', 'purity', 'accumulation', 'reentrancy', 'linearity',
                 'batch_independence', 'gradcheck'):
        assert statuses[name] == 'pass', name
    for name in ('forward[float64]', 'backward[float32]', 'batch_one'):
        assert statuses[name] == 'skip'
        assert case['checks'][name]['message'].startswith('no torch mirror of a user layer')
    assert 'checking your layer' in out and out.splitlines()[-1].startswith('nn-verify PASSED: 1/1')


@pytest.mark.torch
def test_user_layer_with_integer_input(capsys, tmp_path):
    path = tmp_path / 'r.json'
    code, out, _ = run_verify(capsys, '--layer', 'nn:Embedding', '--shape', '3,5', '--int-input', '10',
                              '--init-args', '[10, 4]', '--batch-independent', '--json', str(path))
    assert code == 0, out
    assert 'on an input of shape (3, 5) (integer indices in [0, 10)), its parameters randomized' in out
    checks = json.loads(path.read_text())['cases'][0]['checks']
    fd = checks['finite_differences']
    assert fd['status'] == 'pass' and fd['measurements']['checked'] > 0     # the table W, checked
    assert checks['batch_independence']['status'] == 'pass'


@pytest.mark.torch
def test_user_layer_correct_only_at_default_parameters_fails(capsys, tmp_path, user_layers):
    # Parameters are randomized before checking: s = 1 would hide the missing factor s in dx.
    path = tmp_path / 'r.json'
    code, out, _ = run_verify(capsys, '--layer', f'{user_layers}:RightOnlyAtDefaults', '--shape', '3,5',
                              '--init-args', '[5]', '--json', str(path))
    assert code == 1
    checks = json.loads(path.read_text())['cases'][0]['checks']
    assert checks['finite_differences']['status'] == 'fail'
    assert checks['finite_differences']['tensor'] == 'dx'
    assert "tensor 'dx'" in checks['finite_differences']['message']


@pytest.mark.torch
def test_crashing_user_layer_is_reported_not_fatal(capsys, user_layers):
    code, out, _ = run_verify(capsys, '--layer', f'{user_layers}:Crashes', '--shape', '3,5', '--init-args', '[5]')
    assert code == 1
    assert 'crashed: ValueError: deliberate crash in backward' in out


@pytest.mark.parametrize('argv, message', [
    (['--layer', 'my_layers:Affine'], '--layer needs --shape'),
    (['--layer', 'no_colon', '--shape', '3,5'], 'expected MODULE:CLASS'),
    (['--layer', 'missing_file.py:Affine', '--shape', '3,5'], 'no such file'),
    (['--layer', 'no_such_module_xyz:Affine', '--shape', '3,5'], 'importing no_such_module_xyz failed'),
    (['--layer', '{file}:Nope', '--shape', '3,5'], "has no attribute 'Nope'"),
    (['--layer', '{file}:NotALayer', '--shape', '3,5'], 'expected a subclass of nn.Layer'),
    (['--layer', '{file}:Affine', '--shape', '3,5'], 'could not build Affine'),
    (['--layer', '{file}:Affine', '--shape', '3,5', '--init-args', '{size: 5}'], '--init-args expected JSON'),
    (['--layer', '{file}:Affine', '--shape', '0,5', '--init-args', '[5]'], '--shape expected positive sizes'),
    (['--layer', '{file}:Affine', '--shape', '1,5', '--init-args', '[5]', '--batch-independent'],
     'needs a batch of at least 2'),
    (['--layer', '{file}:Affine', '--shape', '3,5', '-k', 'Dense'], 'cannot be combined with --layer'),
    (['--shape', '3,5'], '--shape is for --layer only'),
])
def test_user_layer_usage_errors_exit_2(capsys, user_layers, argv, message):
    argv = [a.replace('{file}', str(user_layers)) for a in argv]
    code, out, err = run_verify(capsys, *argv)
    assert code == 2
    assert message in err and out == ''


def test_broken_user_layer_process_exits_1_naming_the_tensor(tmp_path, user_layers):
    # A real process run from the user's directory, the layer given by file path.
    proc = subprocess.run([sys.executable, '-m', 'nn.verify', '--layer', f'{user_layers}:WrongShift',
                           '--shape', '4,7', '--init-args', '{"size": 7}'],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'FAIL WrongShift-4x7 finite_differences (tensor Affine/t):' in proc.stdout
    assert "tensor 'Affine/t'" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith('nn-verify FAILED: 0/1 cases passed, 1 failed;')


@pytest.mark.torch
def test_user_layer_given_by_module_name_from_the_current_directory(capsys, monkeypatch, user_layers):
    monkeypatch.chdir(user_layers.parent)
    monkeypatch.setattr(sys, 'path', list(sys.path))
    monkeypatch.delitem(sys.modules, 'my_layers', raising=False)
    code, out, _ = run_verify(capsys, '--layer', 'my_layers:WrongShift', '--shape', '4,7', '--init-args', '[7]')
    sys.modules.pop('my_layers', None)
    assert code == 1
    assert 'FAIL WrongShift-4x7 finite_differences (tensor Affine/t):' in out


# ----------------------------------------------------------------------------- without torch

def test_without_torch_the_torch_free_checks_run_and_say_so(tmp_path, user_layers):
    env = subprocess_env(hide_torch=True, tmp_path=tmp_path)
    path = tmp_path / 'r.json'
    proc = subprocess.run([sys.executable, '-m', 'nn.verify', '-k', 'Dense-3d or Softmax-dim0', '--json', str(path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith('torch is not installed (')
    assert 'torch not installed: torch checks skipped' in proc.stdout.splitlines()[-1]
    doc = json.loads(path.read_text())
    check_schema(doc)
    assert doc['torch']['available'] is False and 'torch' in doc['torch']['error']
    for case in doc['cases']:
        for key in ('forward[float64]', 'backward[float32]', 'gradcheck', 'batch_one'):
            assert case['checks'][key]['status'] == 'skip'
            assert case['checks'][key]['message'].startswith('torch is not installed')
        for key in ('finite_differences', 'purity', 'accumulation', 'reentrancy', 'linearity'):
            assert case['checks'][key]['status'] == 'pass'
        assert case['time_ratio'] is None
    # ...and a wrong gradient is still caught, by finite differences alone.
    proc = subprocess.run([sys.executable, '-m', 'nn.verify', '--layer', f'{user_layers}:WrongShift',
                           '--shape', '4,7', '--init-args', '[7]'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'FAIL WrongShift-4x7 finite_differences (tensor Affine/t):' in proc.stdout


def test_nn_train_without_torch_trains_alone_and_says_so(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'nn.train', '--epochs', '1', '--no-plot'],
                          cwd=tmp_path, env=subprocess_env(hide_torch=True, tmp_path=tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'torch is not installed' in proc.stdout and 'no torch curve' in proc.stdout
    assert re.search(r'final test accuracy nn (\d+\.\d)%', proc.stdout)


def test_the_cli_modules_import_their_heavy_dependencies_lazily():
    code = ('import sys, nn, nn.verify, nn.train; '
            'heavy = [m for m in ("torch", "reference", "tqdm", "rich", "matplotlib", "sklearn") '
            'if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)')
    proc = subprocess.run([sys.executable, '-c', code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- nn-train

@pytest.mark.torch
def test_nn_train_smoke(tmp_path, capsys):
    png = tmp_path / 'curves.png'
    code = train.main(['--epochs', '2', '--plot', str(png), '--no-progress'])
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(re.search(r'final test accuracy nn (\d+\.\d)%', out).group(1))
    assert accuracy > 50.0                      # chance is 10%
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert png.stat().st_size > 10_000
    assert re.search(r'torch \d+\.\d% \(max \|loss nn - loss torch\| over 86 steps: ', out)


@pytest.mark.torch
def test_nn_train_follows_torch_step_for_step():
    result = train.train('mlp', epochs=1, seed=3, progress=False, log=lambda *a: None)
    assert result.torch is not None and result.torch_note is None
    assert len(result.nn.step_loss) == len(result.torch.step_loss) == 43
    assert result.max_loss_gap < 1e-4          # same init, same batches, float32 on both sides
    assert result.nn.test_accuracy == pytest.approx(result.torch.test_accuracy, abs=0.01)
    assert np.mean(result.nn.step_loss[-10:]) < np.mean(result.nn.step_loss[:10])


def test_nn_train_min_accuracy_gate_exits_1(capsys):
    code = train.main(['--epochs', '1', '--no-plot', '--no-torch', '--no-progress', '--min-accuracy', '0.999'])
    captured = capsys.readouterr()
    assert code == 1
    assert 'below --min-accuracy 99.9%' in captured.err


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize('model', ['mlp', 'cnn'])
def test_nn_train_reaches_95_percent_in_under_30_s(tmp_path, model):
    png = tmp_path / f'{model}.png'
    result = train.train(model, plot=str(png), progress=False, log=lambda *a: None)
    assert result.test_accuracy >= 0.95
    assert result.nn.seconds < 30.0
    assert result.seconds < 60.0                # both trainings, evaluation and the plot
    assert result.max_loss_gap < 1e-3
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
@pytest.mark.torch
def test_nn_verify_passes_on_the_whole_registry(tmp_path):
    path = tmp_path / 'r.json'
    proc = subprocess.run([sys.executable, '-m', 'nn.verify', '--json', str(path)], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    doc = json.loads(path.read_text())
    check_schema(doc)
    from reference.registry import CASES
    assert [c['id'] for c in doc['cases']] == [c.id for c in CASES]
    print(proc.stdout.splitlines()[-1])
