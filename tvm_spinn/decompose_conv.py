"""Tiling of tensor operators (conv, pool, add) into cores.

A tile computes output channels [c0, c0 + nc) x output rows [h0, h0 + nh) x every
column, buffering the input rows its band needs (the halo included) for
``N_SLOTS`` samples. Channel groups x row bands are chosen to use the fewest cores
that fit DTCM and the per-core cycle budget (resources.CycleModel). Dense layers
after a flatten are tiled by :mod:`tvm_spinn.decompose` with column tiles aligned
to whole channels, so each dense tile reads whole rows of the flattened tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from . import resources as res
from .decompose import TANH_TABLE_BYTES, next_pow2
from .errors import ResourceError
from .layers import Add, Conv2D, Pool2D
from .tensor_net import QOp

TRX_ENTRY_BYTES = 16 * 4
CONV_HEADER_BYTES = 26 * 4
POOL_HEADER_BYTES = 25 * 4
ADD_HEADER_BYTES = 17 * 4
CHANNEL_PARAM_BYTES = 16


@dataclass
class TensorTile:
    """Output block of one core: channels [c0, c0 + nc), rows [h0, h0 + nh), all columns;
    input rows [ih0, ih0 + nih) of the input tensor(s) it buffers."""

    c0: int
    nc: int
    h0: int
    nh: int
    ih0: int
    nih: int


@dataclass
class TensorOpPlan:
    qop: QOp
    tiles: List[TensorTile]

    @property
    def n_cores(self) -> int:
        return len(self.tiles)


def input_rows(op, oh0: int, noh: int, in_h: int) -> Tuple[int, int]:
    """Input rows [first, first + n) that output rows [oh0, oh0 + noh) read (clipped)."""
    if isinstance(op, Add):
        return oh0, noh
    kh = op.weight.shape[2] if isinstance(op, Conv2D) else op.kernel[0]
    sh, pt = op.stride[0], op.padding[0]
    first = max(0, oh0 * sh - pt)
    last = min(in_h, (oh0 + noh - 1) * sh - pt + kh)
    return first, max(0, last - first)


Block = Tuple[int, int, int, int]  # (c0, nc, h0, nh) of a producer's output block


def overlapping(blocks: Sequence[Block], n_c: int, n_rows: int, in_h: int) -> int:
    """Producer blocks a tile reading channels [0, n_c) and a band of n_rows input rows in the
    middle of the tensor overlaps: its receive entries (the worst band, roughly)."""
    h_lo = max(0, (in_h - n_rows) // 2)
    return max(1, sum(1 for c0, nc, h0, nh in blocks
                      if c0 < n_c and h0 < h_lo + n_rows and h0 + nh > h_lo))


def tile_cost(qop: QOp, nc: int, noh: int, sources: Sequence[Block]) -> Tuple[int, float]:
    """(DTCM bytes, modelled cycles per sample) of a tile with nc channels x noh rows;
    sources: the blocks of the producers of its input(s)."""
    op = qop.op
    in_c, in_h, in_w = qop.in_shapes[0]
    out_w = qop.out_shape[2]
    if isinstance(op, Conv2D):
        kh, kw = op.weight.shape[2:]
        n_ic = 1 if op.groups > 1 else in_c
        nih = min(in_h, (noh - 1) * op.stride[0] + kh)
        n_sources = overlapping(sources, nc if op.groups > 1 else n_ic, nih, in_h)
        config = (CONV_HEADER_BYTES + n_sources * TRX_ENTRY_BYTES + nc * 2 * ((n_ic * kh * kw + 1) // 2) * 2
                  + nc * CHANNEL_PARAM_BYTES + (TANH_TABLE_BYTES if qop.activation in ("tanh", "sigmoid") else 0))
        buffers = res.N_SLOTS * (nc if op.groups > 1 else n_ic) * nih * in_w * 2
        macs = nc * noh * out_w * n_ic * kh * kw
        cycles = macs * (res.CYCLES.mac + res.CYCLES.wide_mac) + nc * noh * out_w * res.CYCLES.output
        in_values = (nc if op.groups > 1 else n_ic) * nih * in_w
    elif isinstance(op, Pool2D):
        kh, kw = op.kernel
        nih = min(in_h, (noh - 1) * op.stride[0] + kh)
        config = POOL_HEADER_BYTES + overlapping(sources, nc, nih, in_h) * TRX_ENTRY_BYTES + (kh * kw + 1) * 4
        buffers = res.N_SLOTS * nc * nih * in_w * 2
        cycles = nc * noh * out_w * (kh * kw * 2 + res.CYCLES.output)
        in_values = nc * nih * in_w
    else:
        nih = noh
        config = ADD_HEADER_BYTES + overlapping(sources, nc, noh, in_h) * TRX_ENTRY_BYTES
        buffers = 2 * res.N_SLOTS * nc * noh * in_w * 2
        cycles = nc * noh * out_w * res.CYCLES.output
        in_values = 2 * nc * noh * in_w
    counts = res.N_SLOTS * (nih * (2 if isinstance(op, Add) else 1) + 2) * 4
    cycles += ((in_values + 1) // 2) * res.CYCLES.packet_in + nc * noh * ((out_w + 1) // 2) * res.CYCLES.packet_out
    cycles += noh * res.CYCLES.compute
    return config + buffers + counts + res.DTCM_RESERVED_BYTES, cycles


def _bounds(n: int, parts: int) -> List[Tuple[int, int]]:
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b - a) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def plan_tensor_op(qop: QOp, sources: Sequence[Block], cycle_budget: Optional[float]) -> TensorOpPlan:
    """Channel groups x row bands with the fewest cores that fit DTCM and the cycle budget."""
    out_c, out_h, _ = qop.out_shape
    best = None
    for groups in range(1, out_c + 1):
        nc = -(-out_c // groups)
        for bands in range(1, out_h + 1):
            noh = -(-out_h // bands)
            dtcm, cycles = tile_cost(qop, nc, noh, sources)
            if dtcm <= res.DTCM_BYTES and (cycle_budget is None or cycles <= cycle_budget):
                if best is None or groups * bands < best[0]:
                    best = (groups * bands, groups, bands)
                break  # more bands only cost more cores for this channel grouping
        if best is not None and groups > best[0]:
            break
    if best is None:
        dtcm, cycles = tile_cost(qop, 1, 1, sources)
        limit = "DTCM" if dtcm > res.DTCM_BYTES else "cycle budget"
        raise ResourceError(f"{qop.name}: even one output channel x one row needs {dtcm} bytes of DTCM "
                            f"(limit {res.DTCM_BYTES}) and {cycles:.0f} cycles per sample: the {limit} is exceeded")
    _, groups, bands = best
    in_h = qop.in_shapes[0][1]
    tiles = []
    for c0, nc in _bounds(out_c, groups):
        for h0, nh in _bounds(out_h, bands):
            ih0, nih = input_rows(qop.op, h0, nh, in_h)
            tiles.append(TensorTile(c0, nc, h0, nh, ih0, nih))
    return TensorOpPlan(qop, tiles)


def block_key_shifts(nc: int, nh: int, nw: int) -> Tuple[int, int, int]:
    """(slot_shift, c_shift, h_shift) of a producer emitting an nc x nh x nw block in pairs."""
    h_shift = next_pow2((nw + 1) // 2).bit_length() - 1
    c_shift = h_shift + next_pow2(nh).bit_length() - 1
    slot_shift = c_shift + next_pow2(nc).bit_length() - 1
    return slot_shift, c_shift, h_shift


@dataclass
class TensorNetworkPlan:
    """Per op: a TensorOpPlan (conv, pool, add), a decompose.LayerPlan (dense), or None
    (flatten: a view, no core)."""

    qnet: "object"
    plans: List[object]
    board: res.Board
    cycle_budget: Optional[float]

    @property
    def n_kernel_cores(self) -> int:
        return sum(p.n_cores for p in self.plans if p is not None)

    @property
    def n_cores(self) -> int:
        return self.n_kernel_cores + 2


def _source_rows(qnet, plans, i: int) -> int:
    """Receive entries a consumer of op i's output may need: one per producer block, or per
    producer row when the output is read through a flatten (dense consumers)."""
    from .decompose import LayerPlan

    op = qnet.ops[i]
    if op.op.__class__.__name__ == "Flatten":
        j = op.inputs[0]
        if j < 0:
            return qnet.input_shape[0] * qnet.input_shape[1]
        return sum(t.nc * t.nh for t in plans[j].tiles) if isinstance(plans[j], TensorOpPlan) else _source_rows(qnet, plans, j)
    p = plans[i]
    if isinstance(p, LayerPlan):
        return p.n_row_tiles
    return len(p.tiles)


def _plan_with_budget(qnet, board: res.Board, budget: Optional[float]) -> TensorNetworkPlan:
    from .decompose import _choose_tiling, plan_layer
    from .layers import DenseLayer, Flatten

    plans: List[object] = []
    c, h, _ = qnet.input_shape
    for i, q in enumerate(qnet.ops):
        if isinstance(q.op, Flatten):
            plans.append(None)
        elif isinstance(q.op, DenseLayer):
            srcs = [1 if j < 0 else _source_rows(qnet, plans, j) for j in q.inputs]
            r, cols = _choose_tiling(q, sum(srcs), budget)
            plans.append(plan_layer(q, r, cols))
        else:
            blocks = [b for j in q.inputs for b in
                      ([(0, c, 0, h)] if j < 0 else [(t.c0, t.nc, t.h0, t.nh) for t in plans[j].tiles])]
            plans.append(plan_tensor_op(q, blocks, budget))
    return TensorNetworkPlan(qnet, plans, board, budget)


def plan_tensor_network(qnet, board: res.Board = res.SPINN_5,
                        cycle_budget: Optional[float] = None) -> TensorNetworkPlan:
    """Tile every op to meet ``cycle_budget`` cycles per sample per core (default:
    decompose.DEFAULT_CYCLE_BUDGET, about the host link's rate); if that needs more cores
    than the board has, the smallest budget that fits (the most balanced pipeline the
    board allows). ResourceError naming the largest op if it does not fit at all."""
    from .decompose import DEFAULT_CYCLE_BUDGET

    budget = DEFAULT_CYCLE_BUDGET if cycle_budget is None else cycle_budget
    try:
        plan = _plan_with_budget(qnet, board, budget)
        if plan.n_cores <= board.app_cores:
            return plan
    except ResourceError:
        pass
    plan = _plan_with_budget(qnet, board, None)
    if plan.n_cores > board.app_cores:
        biggest = max((p for p in plan.plans if p is not None), key=lambda p: p.n_cores)
        name = biggest.qop.name if isinstance(biggest, TensorOpPlan) else biggest.layer.name
        raise ResourceError(
            f"model too big for the board: it needs {plan.n_cores} cores even with the fewest cores per op "
            f"(DTCM-limited), a {board.name} has {board.app_cores} application cores; the largest op, "
            f"{name}, alone takes {biggest.n_cores} cores")
    lo, hi = budget, 1e9  # bisection on the budget (log scale): fewer cycles need more cores
    while hi / lo > 1.1:
        mid = (lo * hi) ** 0.5
        try:
            trial = _plan_with_budget(qnet, board, mid)
        except ResourceError:
            lo = mid
            continue
        if trial.n_cores <= board.app_cores:
            hi, plan = mid, trial
        else:
            lo = mid
    return plan
