"""Renders the gate's saved history: a PNG trend chart and a markdown table for a pull-request comment.

Usage (from the repository root)::

    python -m benchmarks.gate --save-history           # each gate run adds benchmarks/history/<time>-<commit>.json
    python -m benchmarks.report                        # markdown to stdout, chart to benchmarks/history/trend.png
    python -m benchmarks.report --markdown pr.md --png trend.png --last 20

The chart plots, per kernel, the change of its paired ratio against its
baseline over the runs (0% = as fast as the baseline relative to its NumPy
reference), with the gate's +8% limit drawn in. The table shows the latest
run: baseline ratio, measured ratio, change, status, and a sparkline of the
change over the last runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.gate import HISTORY, THRESHOLD

SPARKS = '▁▂▃▄▅▆▇█'


def load_history(directory: Path = HISTORY) -> list[dict[str, Any]]:
    """Every saved run in `directory`, oldest first (files that do not parse are skipped)."""
    runs = []
    for path in sorted(Path(directory).glob('*.json')):
        try:
            run = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(run, dict) and isinstance(run.get('kernels'), list):
            run.setdefault('file', path.name)
            runs.append(run)
    runs.sort(key=lambda r: (r.get('time', ''), r.get('timestamp', 0.0)))
    return runs


def changes(history: Sequence[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Per kernel, its change against the baseline in each run (None where it was not measured)."""
    names: list[str] = []
    for run in history:
        for k in run['kernels']:
            if k['kernel'] not in names:
                names.append(k['kernel'])
    table = {name: [None] * len(history) for name in names}
    for i, run in enumerate(history):
        for k in run['kernels']:
            table[k['kernel']][i] = k.get('change')
    return table


def sparkline(values: Sequence[float | None], threshold: float = THRESHOLD) -> str:
    """One character per run: the change scaled onto [-threshold, +threshold]; '·' where unmeasured."""
    out = []
    for v in values:
        if v is None:
            out.append('·')
            continue
        x = (min(max(v, -threshold), threshold) + threshold) / (2 * threshold)
        out.append(SPARKS[min(len(SPARKS) - 1, int(x * len(SPARKS)))])
    return ''.join(out)


def markdown(history: Sequence[dict[str, Any]], last: int = 20) -> str:
    """The latest run as a markdown table, with the trend of each kernel over the last `last` runs."""
    if not history:
        return 'no gate history yet: run `python -m benchmarks.gate --save-history`'
    run = history[-1]
    threshold = run.get('threshold', THRESHOLD)
    trend = changes(history[-last:])
    failed = [k for k in run['kernels'] if k['status'] == 'FAIL']
    head = (f"**Performance gate** at `{run.get('git_commit', '?')}` ({run.get('time', '?')}): "
            f"{'**' + str(len(failed)) + ' regression(s)**' if failed else 'no regression'} "
            f"among {sum(k['status'] in ('pass', 'FAIL') for k in run['kernels'])} kernels "
            f"(paired ratio to a NumPy reference vs baseline, limit +{threshold:.0%}; "
            f"{run.get('seconds', 0):.0f}s).")
    lines = [head, '',
             f'| kernel | baseline | this run | change | status | last {min(last, len(history))} runs |',
             '|---|---:|---:|---:|---|---|']
    for k in run['kernels']:
        base = f"{k['baseline']:.3f}" if k.get('baseline') else '-'
        ratio = f"{k['ratio']:.3f}" if k.get('ratio') is not None else '-'
        change = f"{k['change']:+.1%}" if k.get('change') is not None else '-'
        status = {'FAIL': '**FAIL**', 'pass': 'pass'}.get(k['status'], k['status'])
        lines.append(f"| {k['kernel']} | {base} | {ratio} | {change} | {status} | "
                     f"`{sparkline(trend.get(k['kernel'], []), threshold)}` |")
    lines += ['', f'Sparkline: one character per run, ▁ = {-threshold:.0%} or faster, █ = {threshold:+.0%} '
                  'or slower, · = not measured.']
    return '\n'.join(lines)


def chart(history: Sequence[dict[str, Any]], path: Path, last: int = 50) -> Path:
    """Writes the trend chart (change vs baseline per kernel over the runs) as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    history = list(history)[-last:]
    table = changes(history)
    threshold = history[-1].get('threshold', THRESHOLD) if history else THRESHOLD
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=100)
    xs = list(range(len(history)))
    styles = ('-', '--', ':', '-.')
    for n, (name, values) in enumerate(table.items()):
        pts = [(x, 100 * v) for x, v in zip(xs, values, strict=True) if v is not None]
        if pts:   # ten colours, then the next line style: no two kernels look alike
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', markersize=3, linewidth=1,
                    linestyle=styles[(n // 10) % len(styles)], color=f'C{n % 10}', label=name)
    ax.axhline(100 * threshold, color='red', linestyle='--', linewidth=1.2, label=f'gate limit +{threshold:.0%}')
    ax.axhline(0, color='black', linewidth=0.6)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{r.get('git_commit', '?')}\n{r.get('time', '')[5:16]}" for r in history],
                       rotation=60, fontsize=7, ha='right')
    ax.set_ylabel('paired ratio vs baseline (%)')
    ax.set_title('nn performance gate: kernel / NumPy-reference ratio, change against baseline')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=1, loc='center left', bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None, out=sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.report', description=__doc__.split('\n\n')[0])
    parser.add_argument('--history', default=str(HISTORY), help='directory of saved gate runs (default %(default)s)')
    parser.add_argument('--png', default=None, help='trend chart path (default: <history>/trend.png)')
    parser.add_argument('--markdown', default=None, help='also write the markdown table to this file')
    parser.add_argument('--last', type=int, default=20, help='runs in the sparkline and the chart (default 20)')
    args = parser.parse_args(argv)
    history = load_history(Path(args.history))
    if not history:
        print(f'no gate history in {args.history}: run `python -m benchmarks.gate --save-history` first', file=out)
        return 0
    md = markdown(history, args.last)
    print(md, file=out)
    if args.markdown:
        Path(args.markdown).write_text(md + '\n')
    png = chart(history, Path(args.png) if args.png else Path(args.history) / 'trend.png', max(args.last, 2))
    print(f'\n(trend chart: {png})', file=out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
