"""The BYOC codegen ``relax.ext.spinnaker``: offloaded Relax functions -> runtime modules.

For each function: extract its operator graph, quantise it with the calibration values
of the function's input, tile it, build the machine graph; then map the machine graphs of
all functions together with the SpiNNaker toolchain (one board) and package each
function's board program into a ``"spinnaker"`` runtime module.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import CalibrationError, ResourceError
from ..graph.extract import extract_graph
from ..machine.builder import GraphLayout, build_machine_graph, merge_graphs, output_receive_table
from ..machine.graph import MappingResult
from ..machine.mapping import map_graph
from ..program import BoardProgram, CoreProgram, InputEnd, LayerSummary, OutputEnd, dump_program
from ..quantization.error import error_bound
from ..quantization.quantize import quantize_graph
from ..tiling import resources as res
from ..tiling.dense import LayerPlan
from ..tiling.planner import IO_CORES, GraphPlan, plan_graph
from ..tiling.tensor import FusedPool, TensorOpPlan

log = logging.getLogger(__name__)


@dataclass
class CodegenOptions:
    """Options of one build: board, per-core cycle budget, pool fusion, and the calibration
    values of each offloaded function's input (by global symbol), prepared by the pipeline."""

    board: res.Board = res.SPINN_5
    cycle_budget: Optional[float] = None
    fuse_pools: bool = True
    calibration: Dict[str, np.ndarray] = field(default_factory=dict)


_local = threading.local()


@contextmanager
def codegen_options(options: CodegenOptions) -> Iterator[None]:
    """Make options visible to ``relax.ext.spinnaker`` while RunCodegen runs.

    RunCodegen's options must be FFI objects; calibration arrays stay in Python."""
    previous = getattr(_local, "options", None)
    _local.options = options
    try:
        yield
    finally:
        _local.options = previous


def _layer_summaries(plan: GraphPlan) -> List[LayerSummary]:
    rows = []
    for q, p in zip(plan.qgraph.ops, plan.plans):
        if isinstance(p, LayerPlan):
            tiles = (p.n_row_tiles, p.n_col_tiles)
        elif isinstance(p, TensorOpPlan):
            tiles = (len(p.blocks), p.n_col_tiles)
        else:
            tiles = (0, 1)
        rows.append(LayerSummary(
            name=q.name, kind=q.kind, in_features=int(np.prod(q.in_shapes[0])), out_features=int(np.prod(q.out_shape)),
            activation=q.activation, row_tiles=tiles[0], col_tiles=tiles[1], cores=0 if p is None else p.n_cores,
            fused_into=p.conv.qop.name if isinstance(p, FusedPool) else None))
    return rows


def make_program(symbol: str, plan: GraphPlan, layout: GraphLayout, mapping: MappingResult,
                 board_functions: Optional[List[str]] = None,
                 input_shape: Optional[Tuple[int, ...]] = None) -> BoardProgram:
    """The board program of one tiled graph: the board's mapping, the kernel cores with the
    exact config region bytes the toolchain generated, the live IO ends, the quantised
    graph with tiling's cuts, the scales and the error bound.
    input_shape: one sample as the caller passes it (default: the graph input's (C, H, W))."""
    qgraph = plan.qgraph
    cores = [CoreProgram(label, kind, tuple(mapping.placements[label]),
                         np.frombuffer(mapping.regions[label][1], dtype="<u4").astype(np.uint32))
             for label, kind in layout.core_kinds.items()]
    in_key, _ = mapping.keys[layout.input_label]
    c_shift, h_shift = layout.input_shifts
    ops = plan.tiled_ops()
    (bound,) = error_bound(ops, qgraph.input_scales, qgraph.input_max_abs, qgraph.outputs)
    return BoardProgram(
        symbol=symbol, board=plan.board.name, n_slots=res.N_SLOTS,
        input_shape=tuple(int(d) for d in (input_shape or qgraph.input_shape)),
        in_features=layout.in_features, out_features=layout.out_features,
        input_scale=float(qgraph.input_scale), output_scale=float(qgraph.output_scale),
        input=InputEnd(tuple(mapping.placements[layout.input_label][:2]), int(in_key), layout.input_slot_shift,
                       c_shift, h_shift, tuple(qgraph.input_shape)),
        output=OutputEnd(tuple(mapping.placements[layout.output_label]), output_receive_table(layout, mapping.keys)),
        cores=cores, ops=ops, input_shapes=list(qgraph.input_shapes), outputs=list(qgraph.outputs),
        layers=_layer_summaries(plan), error_bound=bound,
        chips=[tuple(c) for c in mapping.chips], links=dict(mapping.links),
        routing_tables={tuple(k): np.asarray(v, np.uint32) for k, v in mapping.routing_tables.items()},
        placements={k: tuple(v) for k, v in mapping.placements.items()}, mapping_seconds=mapping.mapping_seconds,
        board_functions=list(board_functions or [symbol]), n_cores=len(cores) + IO_CORES)


def plan_function(func, symbol: str, options: CodegenOptions) -> GraphPlan:
    """One offloaded function -> its operator graph, quantised and tiled."""
    graph = extract_graph(func)
    calibration = options.calibration.get(symbol)
    if calibration is None:
        raise CalibrationError(
            f"no calibration data for the offloaded function {symbol} ({graph.ops[0].name}): build with "
            "tvm_spinn.build(mod, calibration=...) or relax.get_pipeline('spinnaker', calibration=...)")
    qgraph = quantize_graph(graph, calibration)
    return plan_graph(qgraph, options.board, options.cycle_budget, options.fuse_pools)


def compile_functions(funcs: List, options: CodegenOptions) -> List[BoardProgram]:
    """All offloaded functions of a module -> one program each, mapped together on one board."""
    symbols = [str(f.attrs["global_symbol"]) for f in funcs]
    plans = [plan_function(f, s, options) for f, s in zip(funcs, symbols)]
    total = sum(p.n_cores for p in plans)
    if total > options.board.app_cores:
        parts = ", ".join(f"{p.qgraph.ops[0].name}...: {p.n_cores}" for p in plans)
        raise ResourceError(
            f"model too big for the board: its {len(plans)} offloaded functions need {total} cores together "
            f"({parts}) but a {options.board.name} has {options.board.app_cores} application cores")
    prefixes = [f"f{i}." if len(plans) > 1 else "" for i in range(len(plans))]
    layouts = [build_machine_graph(p, prefix) for p, prefix in zip(plans, prefixes)]
    mapping = map_graph(merge_graphs(layouts))
    log.info("%d offloaded function(s) on %d cores, mapped in %.1f s", len(plans), total,
             mapping.mapping_seconds)
    return [make_program(s, p, lay, mapping, symbols, tuple(int(d) for d in list(f.params[0].ty.shape)[1:]))
            for s, p, lay, f in zip(symbols, plans, layouts, funcs)]


def _codegen(functions, options, constant_names) -> List:
    """``relax.ext.spinnaker``: called by RunCodegen with the offloaded functions."""
    from .._native import make_module

    opts = getattr(_local, "options", None) or CodegenOptions()
    programs = compile_functions(list(functions), opts)
    return [make_module(p.symbol, dump_program(p)) for p in programs]


def register() -> None:
    """Register ``relax.ext.spinnaker`` (idempotent)."""
    import tvm_ffi

    tvm_ffi.register_global_func("relax.ext.spinnaker", _codegen, override=True)
