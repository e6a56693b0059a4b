"""The performance regression gate (benchmarks.gate): its decisions, its files, and one real trip.

The decision logic, the paired timing and the baseline/history files are tested
with fake timers and fake measurements, so they are fast and exact. One test,
marked ``gate``, times real kernels: a kernel slowed by ~25% extra work must
fail the gate while the same kernels unmodified pass it. It needs a quiet,
single-process run, so the default run skips it; run it with

    pytest -m gate -p no:xdist tests/test_gate.py        (.ci/run does, via `make gate`)
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

import nn
from benchmarks import gate, kernels, report, timing


# ----------------------------------------------------------------------------- fakes
class FakeClock:
    """A timer whose time moves only when a fake kernel runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def kernel(self, durations):
        """A callable that advances the clock by the next of `durations` (cycled) per call."""
        it = iter(durations)
        seq = list(durations)

        def run():
            nonlocal it
            try:
                self.now += next(it)
            except StopIteration:
                it = iter(seq)
                self.now += next(it)
        return run


def scripted(values):
    """A fake `measure`: returns the scripted ratios in order and records how often it was called."""
    values = list(values)

    def measure():
        measure.calls += 1
        return values.pop(0)
    measure.calls = 0
    return measure


# ----------------------------------------------------------------------------- paired timing
def test_paired_ratios_take_min_within_a_pair_and_alternate_order():
    clock = FakeClock()
    # The kernel takes 3 units, the reference 2; one sample of each pair is hit by a 'preemption'.
    fn = clock.kernel([3.0, 3.0, 30.0, 3.0, 3.0])
    ref = clock.kernel([2.0, 20.0, 2.0, 2.0])
    ratios = timing.paired_ratios(fn, ref, pairs=7, repeats=5, timer=clock)
    assert ratios == [1.5] * 7


def test_paired_ratio_median_ignores_a_minority_of_disturbed_pairs():
    clock = FakeClock()
    # Every sample of the 3rd pair (calls 10..14 of each side) is slowed: the median drops the pair.
    fn = clock.kernel([4.0] * 10 + [9.0] * 5 + [4.0] * 20)
    ref = clock.kernel([2.0] * 35)
    ratio, pairs = timing.paired_ratio(fn, ref, budget=0.0, min_pairs=7, repeats=5, timer=clock)
    assert pairs == 7
    assert ratio == 2.0


def test_paired_ratio_stops_at_the_budget_with_an_odd_number_of_pairs():
    clock = FakeClock()
    fn, ref = clock.kernel([1.0]), clock.kernel([1.0])
    # calls_for does one warm-up and one timing call per side; each pair costs 2 * 5 = 10 time units.
    ratio, pairs = timing.paired_ratio(fn, ref, budget=100.0, min_pairs=3, max_pairs=1001, repeats=5,
                                       min_sample=1.0, timer=clock)
    assert ratio == 1.0
    assert pairs % 2 == 1 and 10 <= pairs <= 12


def test_environment_refuses_xdist_workers(monkeypatch):
    monkeypatch.setenv('PYTEST_XDIST_WORKER', 'gw1')
    assert any('xdist' in p for p in timing.environment_problems())
    assert gate.main(['--kernels', 'relu.forward']) == 2


# ----------------------------------------------------------------------------- decisions
def test_within_threshold_passes_after_one_measurement():
    measure = scripted([1.07])
    v = gate.judge('k', 1.0, measure)
    assert (v.status, v.ratios, measure.calls) == ('pass', [1.07], 1)
    assert v.change == pytest.approx(0.07)


def test_fails_only_when_all_three_measurements_exceed():
    measure = scripted([1.20, 1.15, 1.09])
    v = gate.judge('relu.forward', 1.0, measure)
    assert v.status == 'FAIL'
    assert v.ratios == [1.20, 1.15, 1.09]
    assert v.ratio == 1.09 and v.change == pytest.approx(0.09)
    assert 'relu.forward' in v.message and '3 of 3' in v.message and '+9.0%' in v.message


def test_a_passing_remeasurement_clears_the_kernel():
    measure = scripted([1.30, 1.30, 1.05])
    v = gate.judge('k', 1.0, measure)
    assert v.status == 'pass' and measure.calls == 3
    assert v.ratio == 1.05


def test_threshold_is_strictly_above_eight_percent():
    assert gate.judge('k', 2.0, scripted([2.16])).status == 'pass'       # exactly +8%
    assert gate.judge('k', 2.0, scripted([2.17, 2.17, 2.17])).status == 'FAIL'


def test_remeasurements_wait_for_the_rest_of_the_pass():
    calls = []

    def measure(name, values):
        values = list(values)

        def m():
            calls.append(name)
            return values.pop(0)
        return m
    verdicts = gate.judge_all([('a', 1.0, measure('a', [1.5, 1.5, 1.5])),
                               ('b', 1.0, measure('b', [1.0])),
                               ('c', 1.0, measure('c', [1.2, 1.0]))])
    assert calls == ['a', 'b', 'c', 'a', 'c', 'a']
    assert [v.status for v in verdicts] == ['FAIL', 'pass', 'pass']


def test_remeasurements_go_to_the_batch_remeasurer_when_given():
    batches = []

    def remeasure(names):
        batches.append(list(names))
        return {name: {'a': 1.3, 'c': 1.0}[name] for name in names}
    verdicts = gate.judge_all([('a', 1.0, scripted([1.5])), ('b', 1.0, scripted([1.0])),
                               ('c', 1.0, scripted([1.2]))], remeasure=remeasure)
    assert batches == [['a', 'c'], ['a']]                      # fresh processes measure only the suspects
    assert [v.status for v in verdicts] == ['FAIL', 'pass', 'pass']
    assert verdicts[0].ratios == [1.5, 1.3, 1.3]


def test_faster_than_baseline_suggests_refreshing_it():
    v = gate.judge('softmax.forward', 2.0, scripted([1.5]))
    assert v.status == 'pass'
    assert '25% faster' in v.message and '--update-baseline --kernels softmax.forward' in v.message


def test_kernel_without_baseline_is_reported_not_failed():
    measure = scripted([3.0, 3.0, 3.0])
    v = gate.judge('gelu.forward', None, measure)
    assert v.status == 'no-baseline' and measure.calls == 1
    assert 'python -m benchmarks.gate --update-baseline --kernels gelu.forward' in v.message


# ----------------------------------------------------------------------------- files
def test_missing_baseline_file_is_a_clear_message_not_a_crash(tmp_path):
    out = io.StringIO()
    missing = tmp_path / 'baselines.json'
    verdicts = gate.run_gate(['relu.forward', 'tanh.forward'], missing, out=out,
                             measure_factory=lambda k: scripted([1.0]))
    text = out.getvalue()
    assert f'No baseline file at {missing}' in text
    assert 'python -m benchmarks.gate --update-baseline' in text
    assert [v.status for v in verdicts] == ['no-baseline', 'no-baseline']
    summary = gate.summary(verdicts, 0.08, 1.0)
    assert '0 failed, 2 without a baseline' in summary and 'NOTE' in summary
    assert gate.main(['--list', '--baselines', str(missing)]) == 0


def test_corrupt_baseline_file_names_the_fix(tmp_path):
    path = tmp_path / 'baselines.json'
    path.write_text('{"kernels": ')
    with pytest.raises(gate.BaselineError, match='--update-baseline'):
        gate.load_baselines(path)
    path.write_text('{"format": 1}')
    with pytest.raises(gate.BaselineError, match='no "kernels" table'):
        gate.load_baselines(path)
    assert gate.main(['--baselines', str(path), '--kernels', 'relu.forward']) == 2


def test_update_baseline_stores_the_median_and_keeps_other_kernels(tmp_path):
    path = tmp_path / 'baselines.json'
    path.write_text(json.dumps({'format': 1, 'kernels': {'dense.forward': {'ratio': 1.07}}}))
    order = []

    def factory(kernel):
        values = {'relu.forward': [1.3, 1.1, 1.2], 'tanh.forward': [2.0, 2.2, 2.1]}[kernel.name]

        def m():
            order.append(kernel.name)
            return values.pop(0)
        return m
    data = gate.update_baselines(['relu.forward', 'tanh.forward'], path, repeats=3, out=io.StringIO(),
                                 measure_factory=factory)
    assert order == ['relu.forward', 'tanh.forward'] * 3        # round robin, spread over the recording
    stored = json.loads(path.read_text())
    assert stored == data
    assert stored['kernels']['relu.forward']['ratio'] == 1.2
    assert stored['kernels']['tanh.forward']['measurements'] == [2.0, 2.1, 2.2]
    assert stored['kernels']['dense.forward'] == {'ratio': 1.07}
    assert stored['machine']['cores'] == os.cpu_count() and stored['threshold'] == 0.08


def test_history_round_trips_into_the_report(tmp_path):
    runs = [
        [gate.verdict('relu.forward', 1.0, [1.02]), gate.verdict('dense.forward', 1.1, [1.12])],
        [gate.verdict('relu.forward', 1.0, [0.98]), gate.verdict('dense.forward', 1.1, [1.30, 1.31, 1.29])],
    ]
    paths = [gate.save_history(v, tmp_path, seconds=12.5) for v in runs]
    assert len(set(paths)) == 2                              # same-second runs keep both files
    history = report.load_history(tmp_path)
    assert [run['file'] for run in history] == [p.name for p in paths]
    md = report.markdown(history)
    assert '| dense.forward | 1.100 | 1.290 | +17.3% | **FAIL** |' in md
    assert '| relu.forward | 1.000 | 0.980 | -2.0% | pass |' in md
    assert '1 regression' in md and 'last 2 runs' in md
    png = tmp_path / 'trend.png'
    report.chart(history, png)
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 1000


def test_report_with_no_history_says_so(tmp_path):
    out = io.StringIO()
    assert report.main(['--history', str(tmp_path / 'none')], out=out) == 0
    assert 'no gate history' in out.getvalue()


# ----------------------------------------------------------------------------- the catalogue
def test_every_gated_kernel_has_a_committed_baseline_and_a_sane_reference():
    data = gate.load_baselines(gate.BASELINES)
    assert data is not None, gate.missing_file_message(gate.BASELINES)
    names = [k.name for k in kernels.KERNELS]
    assert len(names) == len(set(names))
    for kernel in kernels.gated():
        if kernel.missing():
            continue
        assert kernel.name in data['kernels'], f'{kernel.name}: no baseline; run {gate.REFRESH_HINT}'
        assert kernel.kind in ('gemm', 'memory')
        assert data['kernels'][kernel.name]['ratio'] > 0


def test_kernels_are_built_from_the_registry_on_random_data():
    from reference import registry
    for _, cls, case_id, *_ in kernels._ACTIVATIONS:
        assert registry.get(case_id).layer is getattr(nn, cls)
    bound = kernels.get('layernorm.backward').build(np.random.default_rng(0))
    params = bound.layer.parameters()
    assert not np.allclose(params['LayerNorm/scale'], 1.0)         # no default scale of 1
    assert bound.dy.std() > 0.5 and not np.all(bound.dy == bound.dy.flat[0])   # no all-ones gradient
    assert bound.x.ctypes.data % kernels.ALIGN == 0


# ----------------------------------------------------------------------------- the real thing
def _slowed_dense_forward(original):
    def forward(self, x):
        y = original(self, x)
        x2 = x.reshape(-1, self.in_dim)
        _ = x2[: x2.shape[0] // 4] @ self.get_parameter('W')          # +25% of the GEMM's FLOPs
        return y
    return forward


def _slowed_relu_apply(original):
    def apply(self, x):
        out = original(self, x)
        flat = x.reshape(-1)
        _ = np.maximum(flat[: flat.size // 4], 0)                    # +25% of the elements
        return out
    return apply


@pytest.mark.gate
def test_injected_slowdown_trips_the_gate_and_clean_code_passes(request, monkeypatch):
    if 'gate' not in (request.config.getoption('markexpr') or ''):
        pytest.skip('real-timing gate test: run `pytest -m gate -p no:xdist tests/test_gate.py` '
                    '(make gate and .ci/run do)')
    problems = timing.environment_problems()
    if problems:
        pytest.skip('; '.join(problems))
    names = ['dense.forward', 'relu.forward']
    clean = gate.run_gate(names, gate.BASELINES, budget=0.5, out=io.StringIO())
    monkeypatch.setattr(nn.Dense, 'forward', _slowed_dense_forward(nn.Dense.forward))
    monkeypatch.setattr(nn.ReLU, 'apply', _slowed_relu_apply(nn.ReLU.apply))
    out = io.StringIO()
    slowed = gate.run_gate(names, gate.BASELINES, budget=0.5, out=out)
    assert [v.status for v in slowed] == ['FAIL', 'FAIL'], out.getvalue()
    assert all(len(v.ratios) == 3 for v in slowed)
    assert [v.status for v in clean] == ['pass', 'pass'], [gate.format_line(v) for v in clean]


def test_isolated_measurement_runs_in_a_fresh_process(monkeypatch):
    # The CLI re-measures failing kernels (and records baselines) in new processes; check the round trip.
    # Only the plumbing is under test, not the numbers, so an xdist worker may run it: the child would
    # otherwise inherit the worker's marker and (rightly, for real timing) refuse.
    monkeypatch.delenv('PYTEST_XDIST_WORKER', raising=False)
    results = gate.isolated_measure(['relu.forward', 'tanh.forward'], budget=0.03, processes=1)
    assert set(results) == {'relu.forward', 'tanh.forward'}
    assert all(np.isfinite(r) and r > 0 for r in results.values())
