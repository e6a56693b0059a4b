"""Project-wide pytest configuration.

- markers registered with descriptions (`--strict-markers` rejects others);
- `--run-slow` runs the tests marked slow (the default run skips them, saying how to run them);
- BLAS and torch capped at one thread per process, so `pytest -n 2` does not oversubscribe
  the two cores and benchmarks compare like with like;
- a deterministic hypothesis profile;
- `rng`: a generator seeded from the test's id, so tests are independent of order and of xdist.
"""

from __future__ import annotations

import os
import zlib

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:
    from hypothesis import settings
    settings.register_profile('deterministic', derandomize=True, deadline=None, max_examples=25,
                              print_blob=True)
    settings.load_profile('deterministic')
except ImportError:  # hypothesis is a test extra
    pass


def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', default=False,
                     help='run tests marked slow (training runs to an accuracy target)')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a few seconds (training); needs --run-slow')
    config.addinivalue_line('markers', 'torch: compares against PyTorch (needs torch installed)')
    config.addinivalue_line('markers', 'selftest: deliberately broken layers the harness must flag')
    config.addinivalue_line('markers', 'gate: the performance regression gate (paired ratios vs baselines)')
    try:
        from threadpoolctl import threadpool_limits
        config._blas_limit = threadpool_limits(limits=1)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_collection_modifyitems(config, items):
    if config.getoption('--run-slow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --run-slow (make test does)')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test id: same numbers on every run, in any order."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
