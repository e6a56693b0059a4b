"""Side-by-side benchmarks, nn (NumPy) against torch: shared fixtures and the ratio table.

Run them with ``tox -e bench`` or ``make bench``
(``pytest -o addopts="" --benchmark-only --benchmark-group-by=group tests/benchmarks``); the
default ``pytest`` run skips them (``--benchmark-skip`` in pyproject's addopts).

Each group holds the nn kernel and its torch counterpart on the same float32
arrays, both on one thread. The numpy side's ``extra_info`` carries what the
issue asks for, measured in the same run:

- ``ratio_to_torch``: median of per-pair ratios t(nn) / t(torch), the two timed
  alternately (absolute times on this machine swing by tens of percent; the
  paired ratio does not);
- ``fraction_of_limit`` (kernels): GEMM kernels as a fraction of np.matmul's
  GFLOP/s on the same shapes, memory-bound ones as a fraction of the memory
  roofline (the bytes they must move at the bandwidth of a same-size np.copyto);
- ``target`` and ``meets_target`` (speed targets, forward + backward).

At the end of the session the table of every ratio is printed and written to
``.benchmarks/ratio-table.md`` (markdown, ready for a pull-request comment).
Targets that are missed are reported there, not failed: a benchmark fails only
when the two sides disagree numerically, or when it cannot run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import timing
from benchmarks.sidebyside import Row, render_table

TABLE = Path('.benchmarks') / 'ratio-table.md'


@pytest.fixture(scope='session')
def bench_env():
    """One BLAS thread, one torch thread, glibc's allocator in its steady state, for the whole bench session."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits
    limits = threadpool_limits(limits=1)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    timing.steady_allocator()
    blas = [i for i in threadpool_info() if i.get('user_api') == 'blas']
    assert all(i['num_threads'] == 1 for i in blas), f'BLAS not pinned to one thread: {blas}'
    assert torch.get_num_threads() == 1
    yield {'numpy_blas_threads': 1, 'torch_threads': torch.get_num_threads(), 'dtype': 'float32',
           'xdist_worker': os.environ.get('PYTEST_XDIST_WORKER', '')}
    torch.set_num_threads(torch_threads)
    limits.restore_original_limits()


@pytest.fixture(scope='session')
def ratio_rows(request) -> dict[str, Row]:
    """The rows of the ratio table, filled by the tests, printed at the end of the session."""
    rows: dict[str, Row] = {}
    request.config.stash[_ROWS] = rows
    return rows


_ROWS = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(_ROWS, None)
    if not rows:
        return
    table = render_table(rows)
    terminalreporter.section('nn vs torch: paired ratios (one thread each, float32)')
    terminalreporter.write_line(table)
    try:
        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text(table + '\n')
        terminalreporter.write_line(f'(written to {TABLE})')
    except OSError as err:  # a read-only checkout still prints the table
        terminalreporter.write_line(f'(could not write {TABLE}: {err})')
