"""The one tiling planner: every op of a quantised graph cut into tiles that fit a core,
by a strategy per op kind (:mod:`.dense` for dense layers, :mod:`.tensor` for conv /
pool / add; flatten is a view and takes no core), with the per-core cycle budget chosen
for the whole graph so that it fits the board.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from ..errors import ResourceError
from ..graph.network import input_number, op_inputs
from ..graph.ops import Concat, Conv2D, DenseLayer, Flatten, Pool2D
from ..quantization.quantize import QOp, QuantizedGraph
from . import resources as res
from .dense import LayerPlan, choose_tiling, plan_layer
from .tensor import FusedPool, TensorOpPlan, input_rows, plan_fused, plan_tensor_op

OpPlan = Union[LayerPlan, TensorOpPlan, FusedPool, None]


@dataclass
class GraphPlan:
    """Per op: a LayerPlan (dense), a TensorOpPlan (conv, pool, add), a FusedPool (a pool the
    convolution before it computes) or None (flatten, concat: views, no core)."""

    qgraph: QuantizedGraph
    plans: List[OpPlan]
    board: res.Board
    cycle_budget: Optional[float]
    n_slots: int = res.N_SLOTS  # samples in flight per core it was planned for (resources.slots)

    @property
    def n_kernel_cores(self) -> int:
        return sum(p.n_cores for p in self.plans if p is not None)

    @property
    def n_io_cores(self) -> int:
        """Live IO cores: one input source per graph input and the output gatherer."""
        return len(self.qgraph.input_shapes) + 1

    @property
    def n_cores(self) -> int:
        """Kernel cores plus the live IO cores."""
        return self.n_kernel_cores + self.n_io_cores

    def tiled_ops(self) -> List[QOp]:
        """The graph's ops with tiling's cuts of their accumulations (what the integer
        reference and the error model need)."""
        return [q if p is None or isinstance(p, FusedPool) else p.tiled_qop
                for q, p in zip(self.qgraph.ops, self.plans)]


def _producer_blocks(qgraph: QuantizedGraph, plans: List[OpPlan], j: int) -> List[Tuple[int, int, int, int]]:
    """Blocks (c0, nc, h0, nh) of the vertices producing the value op index j names: the graph
    input, a tensor op's tiles, a dense layer's row tiles, or (a flatten, a view) its input's
    producers, which then all send parts of one (1, 1, N) vector."""
    if j < 0:
        c, h, _ = qgraph.input_shapes[input_number(j)]
        return [(0, c, 0, h)]
    p = plans[j]
    if isinstance(qgraph.ops[j].op, Concat):  # its operands' blocks, at their channel offsets
        blocks, offset = [], 0
        for k, shape in zip(qgraph.ops[j].inputs, qgraph.ops[j].in_shapes):
            blocks += [(c0 + offset, nc, h0, nh) for c0, nc, h0, nh in _producer_blocks(qgraph, plans, k)]
            offset += shape[0]
        return blocks
    if p is None:  # flatten
        return [(0, 1, 0, 1)] * _source_rows(qgraph, plans, j)
    return p.blocks


def _source_rows(qgraph: QuantizedGraph, plans: List[OpPlan], i: int) -> int:
    """Receive entries a consumer of op i's output may need: one per producer block, or per
    producer row when the output is read through a flatten (dense consumers)."""
    q = qgraph.ops[i]
    if isinstance(q.op, Concat):
        return sum(nc * nh for _, nc, _, nh in _producer_blocks(qgraph, plans, i))
    if isinstance(q.op, Flatten):
        j = q.inputs[0]
        if j < 0:
            c, h, _ = qgraph.input_shapes[input_number(j)]
            return c * h
        return sum(nc * nh for _, nc, _, nh in plans[j].blocks) if isinstance(plans[j], TensorOpPlan) \
            else _source_rows(qgraph, plans, j)
    p = plans[i]
    if isinstance(p, LayerPlan):
        return p.n_row_tiles
    return len(p.blocks)  # TensorOpPlan or FusedPool


def _rows_read(qgraph: QuantizedGraph) -> List[int]:
    """Per op: how many of its output rows (from the top) its readers read. A strided window
    op may never read the last rows of its input; no tile computes those (a vertex nobody
    listens to would send packets no router has a route for)."""
    ops = [q.op for q in qgraph.ops]
    read = [0] * len(ops)
    for o in qgraph.outputs:  # the graph's outputs: the host reads everything
        read[o] = qgraph.ops[o].out_shape[1]
    for k, op in enumerate(ops):
        for j in op_inputs(ops, k):
            if j < 0:
                continue
            in_h = qgraph.ops[j].out_shape[1]
            if isinstance(op, (Conv2D, Pool2D)):
                first, n = input_rows(op, 0, qgraph.ops[k].out_shape[1], in_h)
                read[j] = max(read[j], first + n)
            else:
                read[j] = in_h
    return read


def _fusable_pool(qgraph: QuantizedGraph, i: int) -> bool:
    """Whether op i is a convolution whose output only the pool right after it reads."""
    ops = [q.op for q in qgraph.ops]
    if not isinstance(ops[i], Conv2D) or i + 1 >= len(ops) or not isinstance(ops[i + 1], Pool2D):
        return False
    readers = [k for k in range(i + 1, len(ops)) if i in op_inputs(ops, k)]
    return readers == [i + 1] and i not in qgraph.outputs


def plan_with_budget(qgraph: QuantizedGraph, board: res.Board, budget: Optional[float],
                     fuse: bool = True) -> GraphPlan:
    """Tile every op for one per-core cycle budget (None: DTCM is the only limit).
    ResourceError if an op does not fit a core at all."""
    plans: List[OpPlan] = []
    rows_read = _rows_read(qgraph)
    for i, q in enumerate(qgraph.ops):
        if isinstance(q.op, (Flatten, Concat)):  # views: no core
            plans.append(None)
        elif isinstance(q.op, DenseLayer):
            srcs = [1 if j < 0 else _source_rows(qgraph, plans, j) for j in q.inputs]
            r, cols = choose_tiling(q, sum(srcs), budget)
            plans.append(plan_layer(q, r, cols))
        elif len(plans) > i:
            continue  # a pool fused into the convolution before it
        else:
            blocks = [b for j in q.inputs for b in _producer_blocks(qgraph, plans, j)]
            plans.append(plan_tensor_op(q, blocks, budget, rows_read[i]))
            if fuse and _fusable_pool(qgraph, i) and plans[i].ic_bounds is None:
                # Fused when it takes no more cores than a conv stage plus a pool stage: it
                # always saves the packets of the conv's output.
                pool = qgraph.ops[i + 1]
                fused = plan_fused(q, pool, blocks, budget, rows_read[i + 1])
                if fused is not None and fused.n_cores <= plans[i].n_cores + plan_tensor_op(
                        pool, plans[i].blocks, budget, rows_read[i + 1]).n_cores:
                    plans[i:] = [fused, FusedPool(fused, i)]
    return GraphPlan(qgraph, plans, board, budget, res.n_slots())


def plan_graph(qgraph: QuantizedGraph, board: res.Board = res.SPINN_5, cycle_budget: Optional[float] = None,
               fuse_pools: bool = True) -> GraphPlan:
    """Tile every op to meet ``cycle_budget`` modelled cycles per sample per core (default:
    the cycles the host link takes to stream one input sample in, at least
    :data:`resources.DEFAULT_CYCLE_BUDGET`); if that needs more
    cores than ``board`` has, the smallest budget that fits (the most balanced pipeline the
    board allows, found by bisection).

    fuse_pools: compute a pool in the tiles of the convolution that feeds it where that
    takes no more cores (it saves the packets of the convolution's output).
    Raises ResourceError naming the op when one does not fit a core, or naming the largest
    op when the graph does not fit the board even with the fewest cores per op.
    """
    if cycle_budget is None:
        n_in = sum(int(np.prod(s)) for s in qgraph.input_shapes)
        budget = max(res.DEFAULT_CYCLE_BUDGET, res.host_link_cycles(n_in))
    else:
        budget = cycle_budget
    try:
        plan = plan_with_budget(qgraph, board, budget, fuse_pools)
        if plan.n_cores <= board.app_cores:
            return plan
    except ResourceError:
        pass
    plan = plan_with_budget(qgraph, board, None, fuse_pools)
    if plan.n_cores > board.app_cores:
        biggest_i = max((i for i, p in enumerate(plan.plans) if p is not None), key=lambda i: plan.plans[i].n_cores)
        biggest = plan.plans[biggest_i]
        cut = f" ({biggest.n_row_tiles} x {biggest.n_col_tiles} tiles)" if isinstance(biggest, LayerPlan) else ""
        raise ResourceError(
            f"model too big for the board: it needs {plan.n_cores} cores ({plan.n_kernel_cores} for kernels + "
            f"{plan.n_io_cores} for live IO) even with the fewest cores per op (DTCM-limited), but a {board.name} has "
            f"{board.app_cores} application cores; the largest op, {qgraph.ops[biggest_i].name}, alone takes "
            f"{biggest.n_cores} cores{cut}.{res.bigger_board_hint(board, plan.n_cores)}")
    lo, hi = budget, 1e9  # bisection on the budget (log scale): fewer cycles need more cores
    while hi / lo > 1.1:
        mid = (lo * hi) ** 0.5
        try:
            trial = plan_with_budget(qgraph, board, mid, fuse_pools)
        except ResourceError:
            lo = mid
            continue
        if trial.n_cores <= board.app_cores:
            hi, plan = mid, trial
        else:
            lo = mid
    return plan


# DTCM a kernel core can give its weights: every tile also holds the spin1 runtime's share.
WEIGHT_BYTES_PER_CORE = res.DTCM_BYTES - res.DTCM_RESERVED_BYTES


def fewest_cores(ops: List, n_inputs: int) -> Tuple[int, List[Tuple[str, int]]]:
    """A lower bound on the cores a graph takes, from its ops' weight shapes alone (no
    calibration, no tiling): a dense or convolution layer holds each of its int16 weights in
    some core's DTCM, which holds at most WEIGHT_BYTES_PER_CORE of them; any other op that is
    not a view takes a core; each input and the output take a live IO core. The planner never
    uses fewer, so a graph refused by this bound never fits. Returns (total, per op (name,
    cores)) with ops in graph order."""
    per_op = []
    for op in ops:
        if isinstance(op, (Flatten, Concat)):
            continue
        weight = getattr(op, "weight", None)
        need = 1 if weight is None else -(-int(np.prod(weight.shape)) * 2 // WEIGHT_BYTES_PER_CORE)
        per_op.append((op.name, max(1, need)))
    return sum(c for _, c in per_op) + n_inputs + 1, per_op
