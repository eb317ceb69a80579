"""The dense strategy of the tiling planner: a quantised dense layer cut in 2D into tiles
that fit a core.

Each layer ``y = act(W x + b)`` (W: rows x cols) is cut into ``R`` row blocks by ``C``
column blocks. With ``C == 1`` a tile finishes the layer itself; with ``C > 1`` each
tile sends int32 partial sums to one reducer per row block. ``C`` and ``R`` minimise
the cores used subject to the DTCM budget of :mod:`tvm_spinn.resources` (weights, the
receive table, per-row parameters, the tanh table and ``N_SLOTS`` input buffers).

Two facts are proved here from the actual int16 weights, for any int16 input:
* ``block``: a tile accumulates ``block`` products in int32 before spilling to int64,
  chosen so no block sum can exceed 2**31 - 1;
* ``partial_shift``: the rounding shift that makes every partial sum fit int32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from ..errors import ResourceError
from ..quantization.quantize import QOp
from . import resources as res
from .cycle_model import cost

RX_ENTRY_BYTES = 20
HEADER_BYTES = 11 * 4
ROW_PARAM_BYTES = 16
TANH_TABLE_BYTES = ((513 + 1) // 2) * 4
X_MAX = 32768  # largest |int16|
INT32_MAX = 2**31 - 1


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def split(n: int, parts: int, even: bool = False) -> List[int]:
    """Boundaries cutting range(n) into `parts` nearly equal pieces (even widths if asked)."""
    if not even:
        return [round(i * n / parts) for i in range(parts + 1)]
    bounds = [min(n, 2 * round(i * n / parts / 2)) for i in range(parts)] + [n]
    return bounds


@dataclass
class LayerPlan:
    """How one dense layer is cut: boundaries of row blocks and column blocks."""

    layer: QOp
    row_bounds: List[int]
    col_bounds: List[int]
    acc_blocks: np.ndarray  # (R, C) int32 accumulation block length of each tile
    partial_shift: int

    @property
    def n_row_tiles(self) -> int:
        return len(self.row_bounds) - 1

    @property
    def n_col_tiles(self) -> int:
        return len(self.col_bounds) - 1

    @property
    def n_cores(self) -> int:
        r, c = self.n_row_tiles, self.n_col_tiles
        return r * c + (r if c > 1 else 0)

    @property
    def blocks(self) -> List[Tuple[int, int, int, int]]:
        """Output blocks (c0, nc, h0, nh) of the (1, 1, N) vector, one per producer vertex (a
        row tile, or its reducer): all in channel 0, row 0 (the columns tell them apart)."""
        return [(0, 1, 0, 1)] * self.n_row_tiles

    @property
    def tiled_qop(self) -> QOp:
        """The layer with tiling's cut of its accumulation (column tiles, partial shift)."""
        return self.layer.with_split(self.col_bounds, self.partial_shift)


def tile_dtcm_bytes(rows: int, cols: int, n_rx: int, final: bool, table: bool) -> int:
    """DTCM a dense tile needs: its config region (copied in) plus its workspace."""
    words_per_row = (cols + 1) // 2
    config = HEADER_BYTES + n_rx * RX_ENTRY_BYTES + rows * words_per_row * 4
    if final:
        config += rows * ROW_PARAM_BYTES + (TANH_TABLE_BYTES if table else 0)
    workspace = res.n_slots() * words_per_row * 4 + res.n_slots() * 4
    return config + workspace + res.DTCM_RESERVED_BYTES


def reduce_dtcm_bytes(rows: int, n_sources: int, table: bool) -> int:
    config = 9 * 4 + n_sources * RX_ENTRY_BYTES + rows * ROW_PARAM_BYTES + (TANH_TABLE_BYTES if table else 0)
    return config + res.n_slots() * rows * 8 + res.n_slots() * 4 + res.DTCM_RESERVED_BYTES


def tile_cycles(rows: int, cols: int, block: int, final: bool) -> float:
    """Modelled cycles per sample of a dense tile (the calibrated tiling.cycle_model)."""
    model = cost("dense_tile_i32" if block > 2 else "dense_tile_i64")
    blocks = rows * -(-((cols + 1) // 2 * 2) // block) if block > 2 else 0
    return model.cycles(macs=rows * cols, blocks=blocks, outputs=rows, computes=1, events=1,
                        packets_in=(cols + 1) // 2, packets_out=(rows + 1) // 2 if final else rows)


def reduce_cycles(rows: int, n_sources: int) -> float:
    """Modelled cycles per sample of a dense reducer (the calibrated tiling.cycle_model)."""
    return cost("dense_reduce").cycles(packets_in=rows * n_sources, outputs=rows, computes=1, events=1,
                                       packets_out=(rows + 1) // 2)


# Block length assumed while sizing tiles (the real one is proved per tile later).
SIZING_BLOCK = 2  # typical: int16 weights at full per-row scale rarely allow more


def choose_tiling(layer: QOp, n_sources: int, cycle_budget: float | None) -> tuple[int, int]:
    """(row tiles, column tiles) with the fewest cores such that every core fits
    DTCM and, if cycle_budget is set, takes at most that many cycles per sample."""
    n, k = layer.weight.shape
    table = layer.activation in ("tanh", "sigmoid")
    best = None

    def rows_fitting(fits) -> int:
        lo, hi = 0, n  # bisection on a monotone predicate of the row count
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    for c in range(1, max(1, k // 2) + 1):
        cols = -(-k // c)
        cols += cols & 1
        final = c == 1

        def tile_fits(rows: int) -> bool:
            if tile_dtcm_bytes(rows, cols, n_sources, final, table) > res.DTCM_BYTES:
                return False
            if cycle_budget is not None and tile_cycles(rows, cols, SIZING_BLOCK, final) > cycle_budget:
                return False
            if c > 1 and reduce_dtcm_bytes(rows, c, table) > res.DTCM_BYTES:
                return False
            return not (c > 1 and cycle_budget is not None and reduce_cycles(rows, c) > cycle_budget)

        rows = rows_fitting(tile_fits)
        if rows == 0:
            continue
        r = -(-n // rows)
        cores = r * c + (r if c > 1 else 0)
        if best is None or cores < best[0]:
            best = (cores, r, c)
        if c > best[0]:
            break  # more column tiles than the best total cannot win
    if best is None:
        limit = f"{res.DTCM_BYTES // 1024} KB DTCM"
        if cycle_budget is not None:
            limit += f" and {cycle_budget:.0f} cycles per sample"
        raise ResourceError(f"{layer.name}: not even one weight row of {k} columns fits a core ({limit})")
    return best[1], best[2]


def accumulation_block(w_tile: np.ndarray, max_block: int = 256) -> int:
    """Even block length (the first of 2, 4, 6, ... up to max_block before one fails)
    such that every aligned block of every row satisfies sum|w| * 32768 <= 2**31 - 1 (2 always does:
    2 * 32767 * 32768 < 2**31)."""
    absw = np.abs(w_tile.astype(np.int64))
    n, cols = absw.shape
    prefix = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(absw, axis=1)], axis=1)
    limit = INT32_MAX // X_MAX
    best = 2
    for block in range(4, min(cols + (cols & 1), max_block) + 1, 2):
        ends = np.minimum(np.arange(block, cols + block, block), cols)
        sums = prefix[:, ends] - prefix[:, ends - np.minimum(block, ends)]
        if sums.max() > limit:
            break  # stop at the first failure: cheap, and almost always the largest
        best = block
    return best


def plan_layer(layer: QOp, n_rows: int, n_cols: int) -> LayerPlan:
    n, k = layer.weight.shape
    row_bounds = split(n, n_rows)
    col_bounds = split(k, n_cols, even=True)
    acc_blocks = np.zeros((n_rows, n_cols), np.int32)
    t_max = 0
    for i, (r0, r1) in enumerate(zip(row_bounds[:-1], row_bounds[1:])):
        for j, (c0, c1) in enumerate(zip(col_bounds[:-1], col_bounds[1:])):
            w = layer.weight[r0:r1, c0:c1]
            acc_blocks[i, j] = accumulation_block(w)
            t_max = max(t_max, int(np.abs(w.astype(np.int64)).sum(axis=1).max()) * X_MAX)
    partial_shift = max(0, t_max.bit_length() - 30) if n_cols > 1 else 0
    return LayerPlan(layer, row_bounds, col_bounds, acc_blocks, partial_shift)
