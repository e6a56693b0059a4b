"""Performance tracking for `nn`: the kernel catalogue, paired timing, the regression gate, history reports.

- `benchmarks.kernels`: the hot kernels (the nn call, its NumPy reference, its machine limit);
- `benchmarks.timing`: pinned environment, paired (alternating) timing, rooflines;
- `benchmarks.gate`: ``python -m benchmarks.gate`` compares paired ratios with `baselines.json`;
- `benchmarks.report`: ``python -m benchmarks.report`` renders the saved history (PNG + markdown).

NumPy only (plus threadpoolctl, and matplotlib for the chart): the gate never imports torch.
The side-by-side benchmarks against torch live in ``tests/benchmarks`` (pytest-benchmark).
"""
