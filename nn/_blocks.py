"""Cache blocking for chains of elementwise NumPy operations.

A chain of ufuncs over a large array streams the whole array through memory
once per operation. Run over blocks of rows that fit in the L2 cache instead,
and only the first read and the last write of each block reach memory; the
Python overhead per block (a microsecond per ufunc call) is what bounds the
block from below.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Elements per block: a few float32 temporaries of 64K elements (256 KiB each) stay in L2.
BLOCK_ELEMENTS = 1 << 16


def row_blocks(n_rows: int, row_size: int, block_elements: int = BLOCK_ELEMENTS) -> Iterator[slice]:
    """Slices of consecutive rows, about `block_elements` elements each."""
    step = max(1, block_elements // max(row_size, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
