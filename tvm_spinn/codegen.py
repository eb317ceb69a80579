"""The BYOC codegen ``relax.ext.spinnaker``: offloaded Relax functions -> runtime modules.

For each function (a chain of dense layers): extract the float layers, quantise them
with the calibration values of the function's input, cut them into tiles, build the
machine graph, map it with the SpiNNaker toolchain and package everything the runtime
needs (the program) into a ``"spinnaker"`` runtime module.
"""
from __future__ import annotations

import logging
import pickle
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import numpy as np

from . import resources as res
from .decompose import NetworkPlan, plan_network
from .decompose_conv import FusedPool
from .errors import CalibrationError, ResourceError
from .machine_graph import MappingResult
from .program import GraphLayout, build_machine_graph, build_tensor_graph, merge_graphs, output_receive_table
from .quantize import error_bound, quantize_network
from .tensor_net import error_bound as tensor_error_bound

log = logging.getLogger(__name__)
PROGRAM_FORMAT = 1


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


def board_program(symbol: str, plan, layout: GraphLayout, mapping: MappingResult,
                  board_functions: Optional[List[str]] = None) -> dict:
    """What every program holds: the board's mapping, the kernel cores with the exact
    config region bytes the toolchain generated, the live IO ends, the scales."""
    qnet = plan.qnet
    cores = [{"label": label, "kind": kind, "placement": mapping.placements[label],
              "config": np.frombuffer(mapping.regions[label][1], dtype="<u4").astype(np.uint32)}
             for label, kind in layout.core_kinds.items()]
    in_key, _ = mapping.keys[layout.input_label]
    return {
        "format": PROGRAM_FORMAT, "symbol": symbol, "board": plan.board.name,
        "in_features": layout.in_features, "out_features": layout.out_features,
        "input_scale": qnet.input_scale, "output_scale": qnet.output_scale, "n_slots": res.N_SLOTS,
        "cores": cores,
        "input": {"chip": mapping.placements[layout.input_label][:2], "key": in_key,
                  "slot_shift": layout.input_slot_shift},
        "output": {"placement": mapping.placements[layout.output_label],
                   "rx": output_receive_table(layout, mapping.keys)},
        "chips": [tuple(c) for c in mapping.chips], "links": dict(mapping.links),
        "routing_tables": {tuple(k): np.asarray(v, np.uint32) for k, v in mapping.routing_tables.items()},
        "placements": dict(mapping.placements), "mapping_seconds": mapping.mapping_seconds,
        "board_functions": list(board_functions or [symbol]),
        "n_cores": len(cores) + 2,
    }


def make_program(symbol: str, plan: NetworkPlan, layout: GraphLayout, mapping: MappingResult,
                 board_functions: Optional[List[str]] = None) -> dict:
    """The program of a chain of dense layers (pickled into the module payload)."""
    program = board_program(symbol, plan, layout, mapping, board_functions)
    program["layers"] = [{
        "name": lp.layer.name, "in_features": int(lp.layer.weight.shape[1]),
        "out_features": int(lp.layer.weight.shape[0]), "activation": lp.layer.activation,
        "row_tiles": lp.n_row_tiles, "col_tiles": lp.n_col_tiles, "cores": lp.n_cores,
        "col_bounds": list(lp.col_bounds), "partial_shift": lp.partial_shift,
        "weight": lp.layer.weight, "bias": lp.layer.bias, "multiplier": lp.layer.multiplier,
        "shift": lp.layer.shift, "in_scale": lp.layer.in_scale, "out_scale": lp.layer.out_scale,
    } for lp in plan.layers]
    program["error_bound"] = error_bound(plan.qnet, [lp.partial_shift for lp in plan.layers],
                                         [lp.n_col_tiles for lp in plan.layers])
    return program


def _tensor_op_record(q, plan) -> dict:
    """What the integer reference needs of one op (plain data)."""
    op = q.op
    rec = {"kind": type(op).__name__, "name": q.name, "inputs": list(q.inputs), "activation": q.activation,
           "in_shapes": [tuple(s) for s in q.in_shapes], "out_shape": tuple(q.out_shape),
           "cores": 0 if plan is None else plan.n_cores}
    for attr in ("weight", "bias", "multiplier", "shift"):
        if getattr(q, attr) is not None:
            rec[attr] = getattr(q, attr)
    for attr in ("stride", "padding", "groups", "kernel", "kind", "out_hw", "count_include_pad"):
        if hasattr(op, attr):
            rec["pool_kind" if attr == "kind" else attr] = getattr(op, attr)
    if rec["kind"] == "DenseLayer":
        rec.update(col_bounds=list(plan.col_bounds), partial_shift=plan.partial_shift,
                   row_tiles=plan.n_row_tiles, col_tiles=plan.n_col_tiles)
    elif isinstance(plan, FusedPool):
        rec.update(tiles=0, fused_into=plan.conv.qop.name)
    elif plan is not None:
        rec["tiles"] = len(plan.blocks)
        rec["col_tiles"] = plan.n_col_tiles
        if plan.ic_bounds is not None:
            rec.update(ic_bounds=list(plan.ic_bounds), partial_shift=plan.partial_shift)
    return rec


def make_tensor_program(symbol: str, plan, layout: GraphLayout, mapping: MappingResult,
                        board_functions: Optional[List[str]] = None, input_shape: Optional[tuple] = None) -> dict:
    """The program of a tensor network (see make_program): ``ops`` replaces ``layers``.
    input_shape: per-sample input shape as the caller passes it (default (C, H, W))."""
    qnet = plan.qnet
    program = board_program(symbol, plan, layout, mapping, board_functions)
    c_shift, h_shift = layout.input_shifts
    program["input"].update(shape=tuple(qnet.input_shape), c_shift=c_shift, h_shift=h_shift)
    program["ops"] = [_tensor_op_record(q, p) for q, p in zip(qnet.ops, plan.plans)]
    program["layers"] = [{"name": r["name"], "in_features": int(np.prod(r["in_shapes"][0])),
                          "out_features": int(np.prod(r["out_shape"])), "activation": r["activation"],
                          "row_tiles": r.get("row_tiles", r.get("tiles", 0)), "col_tiles": r.get("col_tiles", 1),
                          "cores": r["cores"], "fused_into": r.get("fused_into")} for r in program["ops"]]
    program["input_shape"] = tuple(input_shape or qnet.input_shape)
    program["error_bound"] = np.full(layout.out_features, tensor_error_bound(qnet, plan.plans))
    return program


def plan_function(func, symbol: str, options: CodegenOptions):
    """One offloaded function -> quantised, tiled network: a NetworkPlan for a chain of
    dense layers, a decompose_conv.TensorNetworkPlan for anything with tensor ops."""
    from .extract import extract_network, input_shape
    from .layers import DenseLayer

    ops = extract_network(func)
    calibration = options.calibration.get(symbol)
    if calibration is None:
        raise CalibrationError(
            f"no calibration data for the offloaded function {symbol} ({ops[0].name}): build with "
            "tvm_spinn.build(mod, calibration=...) or relax.get_pipeline('spinnaker', calibration=...)")
    if all(isinstance(op, DenseLayer) for op in ops):
        qnet = quantize_network(ops, np.asarray(calibration).reshape(len(calibration), -1))
        kwargs = {} if options.cycle_budget is None else {"cycle_budget": options.cycle_budget}
        return plan_network(qnet, options.board, **kwargs)
    from .decompose_conv import plan_tensor_network
    from .tensor_net import quantize_tensor_network

    qnet = quantize_tensor_network(ops, input_shape(func), calibration)
    return plan_tensor_network(qnet, options.board, options.cycle_budget, options.fuse_pools)


def compile_functions(funcs: List, options: CodegenOptions) -> List[dict]:
    """All offloaded functions of a module -> one program each, mapped together on one board."""
    from .mapping import map_graph

    symbols = [str(f.attrs["global_symbol"]) for f in funcs]
    plans = [plan_function(f, s, options) for f, s in zip(funcs, symbols)]
    total = sum(p.n_cores for p in plans)
    if total > options.board.app_cores:
        parts = ", ".join(f"{p.layers[0].layer.name}...: {p.n_cores}" for p in plans)
        raise ResourceError(
            f"model too big for the board: its {len(plans)} offloaded functions need {total} cores together "
            f"({parts}) but a {options.board.name} has {options.board.app_cores} application cores")
    prefixes = [f"f{i}." if len(plans) > 1 else "" for i in range(len(plans))]
    layouts = [build_machine_graph(p, prefix) if isinstance(p, NetworkPlan) else build_tensor_graph(p, prefix)
               for p, prefix in zip(plans, prefixes)]
    mapping = map_graph(merge_graphs(layouts))
    log.info("%d offloaded function(s) on %d cores, mapped in %.1f s", len(plans), total,
             mapping.mapping_seconds)
    return [make_program(s, p, lay, mapping, symbols) if isinstance(p, NetworkPlan)
            else make_tensor_program(s, p, lay, mapping, symbols, tuple(int(d) for d in list(f.params[0].ty.shape)[1:]))
            for s, p, lay, f in zip(symbols, plans, layouts, funcs)]


def _codegen(functions, options, constant_names) -> List:
    """``relax.ext.spinnaker``: called by RunCodegen with the offloaded functions."""
    from ._native import make_module

    opts = getattr(_local, "options", None) or CodegenOptions()
    programs = compile_functions(list(functions), opts)
    return [make_module(p["symbol"], pickle.dumps(p, protocol=5)) for p in programs]


def register() -> None:
    """Register ``relax.ext.spinnaker`` (idempotent)."""
    import tvm_ffi

    tvm_ffi.register_global_func("relax.ext.spinnaker", _codegen, override=True)
