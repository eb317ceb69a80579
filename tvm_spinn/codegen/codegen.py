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
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..errors import CalibrationError, MappingError, ResourceError, UnsupportedError
from ..graph.extract import LayerNamer, describe_function, extract_graph, sample_dims
from ..machine.builder import MAX_LIVE_INPUTS, GraphLayout, build_machine_graph, merge_graphs, output_receive_table
from ..machine.graph import (CONFIG_REGION, HEADER_LOST_BIT, OUTPUT, CoreImage, MappingResult, send_pace,
                             unframe_config)
from ..machine.mapping import map_graph
from ..machine.send_gaps import assign_send_gaps
from ..program import BoardProgram, CoreProgram, InputEnd, LayerSummary, OutputEnd, dump_program
from ..quantization.error import error_bound
from ..quantization.quantize import CalibrationSettings, quantize_graph
from ..tiling import resources as res
from ..tiling.dense import LayerPlan
from ..progress import stage
from .. import hooks
from ..tiling.planner import WEIGHT_BYTES_PER_CORE, GraphPlan, fewest_cores, plan_graph
from ..tiling.tensor import FusedPool, TensorOpPlan

log = logging.getLogger(__name__)


@dataclass
class CodegenOptions:
    """Options of one build: board, per-core cycle budget, pool fusion; prepared by the
    pipeline, by global symbol: the calibration values of each offloaded function's inputs
    (one array per argument, all call sites), its call sites per inference, its readable
    title (:func:`function_titles`) and the programs compiled already."""

    board: res.Board = res.SPINN_5
    cycle_budget: Optional[float] = None
    fuse_pools: bool = True
    calibration: Dict[str, List[np.ndarray]] = field(default_factory=dict)
    calls_per_inference: Dict[str, int] = field(default_factory=dict)
    programs: Dict[str, BoardProgram] = field(default_factory=dict)  # compiled by the pipeline
    calibration_settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    titles: Dict[str, str] = field(default_factory=dict)  # "function 2 (features.3 .. head)"
    replicas: Union[int, str] = 1  # copies of every function on the machine, or "auto"


def function_titles(funcs: List) -> Dict[str, str]:
    """global symbol -> readable title of each offloaded function, numbered in the given order
    (the pipeline gives the order main calls them): "function 2 (features.3 .. head)"."""
    return {str(f.attrs["global_symbol"]): f"function {k + 1} ({describe_function(f)})" for k, f in enumerate(funcs)}


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
            fused_into=p.conv.qop.name if isinstance(p, FusedPool) else None, **_tile_geometry(p)))
    return rows


def _tile_geometry(p) -> dict:
    """LayerSummary.tiles and tile_axes of one op's plan (what tvm_spinn.report.plot_tiling draws)."""
    if isinstance(p, LayerPlan):
        r, c = p.row_bounds, p.col_bounds
        return {"tiles": [(r[i], r[i + 1] - r[i], c[j], c[j + 1] - c[j], 0, 0)
                          for i in range(len(r) - 1) for j in range(len(c) - 1)],
                "tile_axes": ("output features (weight rows)", "input features (weight columns)")}
    if isinstance(p, TensorOpPlan):
        return {"tiles": [(t.c0, t.nc, t.h0, t.nh, t.ic0, t.nic) for t in p.tiles],
                "tile_axes": ("output channels", "output rows")}
    return {}


def make_program(symbol: str, plan: GraphPlan, layout: Union[GraphLayout, List[GraphLayout]], mapping: MappingResult,
                 board_functions: Optional[List[str]] = None, arg_shapes: Optional[List[Tuple[int, ...]]] = None,
                 result_shapes: Optional[List[Tuple[int, ...]]] = None, calls_per_inference: int = 1,
                 title: str = "") -> BoardProgram:
    """The board program of one tiled graph: the board's mapping, the kernel cores with the
    exact config region bytes the toolchain generated, the live IO ends, the quantised
    graph with tiling's cuts, the scales and the error bound.
    arg_shapes / result_shapes: one sample of each argument / result as the caller passes or
    receives it (default: the graph's (C, H, W)). ``layout``: the function's machine graph,
    or a list of them, one per copy of the function (BoardProgram.replicas)."""
    qgraph = plan.qgraph
    copies = layout if isinstance(layout, list) else [layout]
    layout = copies[0]
    kinds = {label: kind for lay in copies for label, kind in lay.core_kinds.items()}
    regions = {label: np.frombuffer(mapping.regions[label][CONFIG_REGION], dtype="<u4") for label in kinds}
    cores = [CoreProgram(label, kind, tuple(mapping.placements[label]), unframe_config(regions[label], label).copy(),
                         int(regions[label][HEADER_LOST_BIT]), *send_pace(regions[label]))
             for label, kind in kinds.items()]
    inputs = [InputEnd(tuple(mapping.placements[p.label][:2]), int(mapping.keys[p.label][0]), p.slot_shift,
                       p.c_shift, p.h_shift, (p.nc, p.nh, p.nw), p.label,
                       None if (p.nc, p.nh, p.nw) == tuple(p.tensor) else tuple(p.tensor), (p.c0, p.h0), arg, k,
                       packing=p.packing)
              for k, lay in enumerate(copies)
              for p, arg in zip(lay.inputs, lay.input_args or list(range(len(lay.inputs))))]
    # one gatherer decodes every copy's results, copy after copy
    rx = np.concatenate([output_receive_table(lay, mapping.partition_keys, k * lay.out_features)
                         for k, lay in enumerate(copies)])
    ops = plan.tiled_ops()
    bounds = error_bound(ops, qgraph.input_scales, qgraph.input_max_abs, qgraph.outputs)
    distinct = list(dict.fromkeys(qgraph.outputs))
    return BoardProgram(
        symbol=symbol, board=plan.board.name, n_slots=plan.n_slots,
        arg_shapes=[tuple(int(d) for d in s) for s in (arg_shapes or qgraph.input_shapes)],
        input_scales=[float(v) for v in qgraph.input_scales],
        result_shapes=[tuple(int(d) for d in s) for s in (result_shapes or [qgraph.ops[o].out_shape
                                                                              for o in qgraph.outputs])],
        result_offsets=list(layout.result_offsets),
        calls_per_inference=int(calls_per_inference),
        in_features=layout.in_features, out_features=layout.out_features,
        inputs=inputs,
        output=OutputEnd(tuple(mapping.placements[layout.output_label]), rx), replicas=len(copies),
        cores=cores, ops=ops, outputs=list(qgraph.outputs),
        layers=_layer_summaries(plan), error_bound=np.concatenate([bounds[qgraph.outputs.index(o)] for o in distinct]),
        chips=[tuple(c) for c in mapping.chips], links=dict(mapping.links),
        routing_tables={tuple(k): np.asarray(v, np.uint32) for k, v in mapping.routing_tables.items()},
        placements={k: tuple(v) for k, v in mapping.placements.items()}, mapping_seconds=mapping.mapping_seconds,
        board_functions=list(board_functions or [symbol]), n_cores=len(cores) + len(inputs) + 1,
        images=_board_images(mapping, {c.label for c in cores}), iptags=list(mapping.iptags),
        app_id=int(mapping.app_id), title=title)


def _board_images(mapping: MappingResult, own) -> list:
    """Every core of the board's mapping (the functions mapped together share one
    application, one gatherer and one IP tag, and load together), so that any of them can
    load the board. The config region of this function's own kernels is dropped: it is the
    program's core config, framed again at load time (tvm_spinn.runtime.board.loader)."""
    return [CoreImage(im.label, tuple(im.placement), im.binary, dict(im.region_sizes),
                      {k: v for k, v in im.region_data.items() if not (im.label in own and k == CONFIG_REGION)})
            for im in mapping.images]


def _static_shapes(ty, where: str) -> List[Tuple[int, ...]]:
    """Per-sample shapes (without the batch axis) of a tensor or tuple-of-tensors type."""
    from tvm import relax

    return [sample_dims(t, where) for t in (list(ty.fields) if isinstance(ty, relax.TupleType) else [ty])]


def plan_function(func, symbol: str, options: CodegenOptions, namer: Optional[LayerNamer] = None) -> GraphPlan:
    """One offloaded function -> its operator graph, quantised and tiled; ``namer`` names its
    layers (one namer for all functions of a model numbers them over the model). Planned
    for resources.MORE_SLOTS samples in flight when that takes no more cores than the
    default resources.N_SLOTS, at no larger a cycle budget: a pipeline's throughput is at
    most its samples in flight over its latency, which binds deep models."""
    graph = extract_graph(func, options.titles.get(symbol), namer)
    calibration = options.calibration.get(symbol)
    if calibration is None:
        raise CalibrationError(
            f"no calibration data for the offloaded {graph.name}: build with "
            "tvm_spinn.build(mod, calibration=...) or relax.get_pipeline('spinnaker', calibration=...)")
    qgraph = quantize_graph(graph, calibration, options.calibration_settings)
    plan = plan_graph(qgraph, options.board, options.cycle_budget, options.fuse_pools)
    try:  # more samples in flight where their input buffers cost no core
        with res.slots(res.MORE_SLOTS):
            more = plan_graph(qgraph, options.board, options.cycle_budget, options.fuse_pools)
    except ResourceError:
        return plan
    budget = lambda p: float("inf") if p.cycle_budget is None else p.cycle_budget  # noqa: E731 (None: DTCM alone)
    return more if more.n_cores <= plan.n_cores and budget(more) <= budget(plan) else plan


def _too_big(plans: List[GraphPlan], options: CodegenOptions, copies: int = 1) -> ResourceError:
    total = copies * sum(p.n_cores for p in plans)
    def largest(p: GraphPlan) -> str:
        i = max((i for i, q in enumerate(p.plans) if q is not None), key=lambda i: p.plans[i].n_cores, default=None)
        return "" if i is None else f", the largest layer {p.qgraph.ops[i].name}: {p.plans[i].n_cores}"

    parts = ", ".join(f"{p.qgraph.name}: {p.n_cores}{largest(p)}" for p in plans)
    return ResourceError(
        f"model too big for the board: its {len(plans)} offloaded functions need {total} cores together "
        f"({parts}{f'; {copies} copies of each' if copies > 1 else ''}) but a {options.board.name} has "
        f"{options.board.app_cores} application cores."
        + res.bigger_board_hint(options.board, total))


def refuse_early(funcs: List, board: res.Board, strict: bool, titles: Optional[Dict[str, str]] = None
                 ) -> Dict[str, str]:
    """The resource check before calibration, from the weight shapes alone: the offloaded
    functions whose fewest possible cores (:func:`tvm_spinn.tiling.planner.fewest_cores`, a
    lower bound, so nothing that fits is refused) cannot fit ``board`` together. With
    ``strict`` a ResourceError names the largest layer, the cores it and the model need at
    least, the cores the board has and what to do; without, the largest functions until the
    rest may fit are returned (symbol -> why) for the host. Functions that fail to extract
    are left to :func:`compile_functions`, which says why. ``titles``: symbol -> the
    function's readable title (its layers are named as the user's model names them)."""
    bounds = []
    namer = LayerNamer()
    for f in funcs:
        try:
            graph = extract_graph(f, (titles or {}).get(str(f.attrs["global_symbol"])), namer)
        except UnsupportedError:
            continue
        total, per_op = fewest_cores(graph.ops, len(graph.input_shapes))
        weights = {op.name: op.weight.shape for op in graph.ops if getattr(op, "weight", None) is not None}
        bounds.append((str(f.attrs["global_symbol"]), total, per_op, weights))
    refused: Dict[str, str] = {}
    while bounds and sum(b[1] for b in bounds) > board.app_cores:
        largest = max(bounds, key=lambda b: b[1])
        name, cores = max(largest[2], key=lambda nc: nc[1])
        shape = largest[3].get(name)
        held = "" if shape is None else (
            f" (its {' x '.join(map(str, shape))} int16 weights take {2 * int(np.prod(shape)) / 2**20:,.1f} MiB, "
            f"and a core's DTCM holds at most {WEIGHT_BYTES_PER_CORE / 1024:.1f} KiB of them)")
        error = ResourceError(
            f"model too big for the board: layer {name} alone needs at least {cores:,} cores{held}, the model at "
            f"least {sum(b[1] for b in bounds):,}, but a {board.name} has {board.app_cores} application cores. "
            f"Make the layer smaller (fewer features or channels), or leave it on the host CPU: "
            f"tvm_spinn.build(..., strict=False) keeps what does not fit on the host."
            + res.bigger_board_hint(board, sum(b[1] for b in bounds)))
        if strict:
            raise error
        refused[largest[0]] = str(error)
        bounds.remove(largest)
    return refused


def compile_functions(funcs: List, options: CodegenOptions, strict: bool = True
                      ) -> Tuple[List[BoardProgram], Dict[str, str]]:
    """All offloaded functions of a module -> one program each, mapped together on one board.

    Returns (programs, refused): with ``strict`` the first function that cannot be built
    raises its error (UnsupportedError, ResourceError, CalibrationError, MappingError);
    without, such functions are left out (``refused``: symbol -> why) so that the caller
    keeps them on the host: one that fails to extract, quantise or tile; the largest
    functions until the rest fit the board; the largest while the mapping fails."""
    refused: Dict[str, str] = {}
    kept = []  # (symbol, plan, argument shapes, result shapes, label prefix, one copy's machine graph)
    options.titles = {**function_titles(funcs), **options.titles}
    namer = LayerNamer()
    prefix = (lambda i: f"f{i + 1}.") if len(funcs) > 1 else (lambda i: "")
    for i, f in enumerate(funcs):
        symbol = str(f.attrs["global_symbol"])
        stage("tiling", f"function {i + 1} of {len(funcs)}" if len(funcs) > 1 else "")
        try:  # everything that depends on the function alone: its faults refuse only it
            plan = plan_function(f, symbol, options, namer)
            layout = build_machine_graph(plan, prefix(i))  # a function the builder refuses is refused alone
            kept.append((symbol, plan, [_static_shapes(a.ty, options.titles[symbol])[0] for a in f.params],
                         _static_shapes(f.ret_ty, options.titles[symbol]), prefix(i), layout))
        except (UnsupportedError, ResourceError, CalibrationError) as exc:
            if strict:
                raise
            refused[symbol] = str(exc)
    copies = _replicas(options, [k[1] for k in kept])
    while kept:
        try:
            if options.replicas == "auto":  # of a few counts, the one with the best modelled throughput
                choose = hooks.copies_chooser or _most_that_map
                copies, programs = choose(lambda n: _map_copies(kept, n, options), copies, options.board.boards)
            else:
                programs = _map_copies(kept, copies, options)
            return programs, refused
        except (MappingError, ResourceError) as exc:  # "auto": no count down to one copy maps
            error = exc
        if strict:
            raise error
        largest = max(range(len(kept)), key=lambda i: kept[i][1].n_cores)
        refused[kept[largest][0]] = f"left on the host so that the rest fits the board: {error}"
        del kept[largest]
    return [], refused


def mapped_counts(build: Callable[[int], Optional[List[BoardProgram]]], counts: Iterable[int]
                  ) -> Iterator[Tuple[int, List[BoardProgram]]]:
    """(n, programs) of each copy count of ``counts`` whose copies map, in turn (build(n):
    :func:`_map_copies`; a count that raises MappingError or ResourceError, or gives None,
    is skipped). Raises the last such error when no count maps."""
    error: Exception = ResourceError("replicas='auto': no number of copies fits the machine")
    mapped = False
    for n in counts:
        try:
            programs = build(n)
        except (MappingError, ResourceError) as exc:
            error = exc
            continue
        if programs is not None:
            mapped = True
            yield n, programs
    if not mapped:
        raise error


def _most_that_map(build, most: int, boards: int = 1) -> Tuple[int, List[BoardProgram]]:
    """(copies, programs) of the most copies, at most ``most``, that map: "auto" when the
    runtime's chooser (runtime.copies.choose, the same arguments) is not installed
    (hooks.copies_chooser; the package root installs it once TVM is imported)."""
    return next(mapped_counts(build, range(most, 0, -1)))


def _map_copies(kept: List, copies: int, options: CodegenOptions) -> Optional[List[BoardProgram]]:
    """The programs of ``copies`` copies of every kept function (symbol, plan, argument
    shapes, result shapes, label prefix, one copy's machine graph), mapped together. None
    for "auto" when a board of several cannot hold its copies. Raises ResourceError when
    they need more cores than the machine has, MappingError when the toolchain fails."""
    plans = [k[1] for k in kept]
    if copies * sum(p.n_cores for p in plans) > options.board.app_cores:
        raise _too_big(plans, options, copies)
    stage("mapping", f"{copies * sum(p.n_cores for p in plans)} cores")
    # each function's copies: "f1.r0.", "f1.r1.", ... (live inputs shared out among them); one
    # copy is the layout built already
    layouts = [[lay] if copies == 1 else
               [build_machine_graph(p, f"{pre}r{k}.", MAX_LIVE_INPUTS // copies) for k in range(copies)]
               for _, p, _, _, pre, lay in kept]
    spec = merge_graphs([lay for lays in layouts for lay in lays])
    assign_send_gaps(spec)
    spec.board_of = _copies_on_boards(layouts, options.board)
    if spec.board_of is None:  # a board cannot hold its copies
        if options.replicas == "auto":
            return None
        log.warning("%d copies do not fit one board each: the toolchain places them freely, "
                    "and they share the host links", copies)
        spec.board_of = {}
    mapping = map_graph(spec)
    log.info("%d offloaded function(s)%s on %d cores, mapped in %.1f s", len(kept),
             f" x {copies} copies" if copies > 1 else "", len(spec.vertices),  # the copies share a gatherer
             mapping.mapping_seconds)
    symbols = [k[0] for k in kept]
    return [make_program(s, p, lays, mapping, symbols, args, results, options.calls_per_inference.get(s, 1),
                         options.titles.get(s, ""))
            for (s, p, args, results, _, _), lays in zip(kept, layouts)]


def _copies_on_boards(layouts: List[List[GraphLayout]], board: res.Board) -> Optional[Dict[str, int]]:
    """Copy k of every function on board k % boards (machine.mapping.boards pins it there,
    its live inputs on that board's Ethernet chip): label -> board. {} for one board or one
    copy (the toolchain places freely); None when a board cannot hold its copies."""
    copies = len(layouts[0]) if layouts else 1
    if board.boards == 1 or copies == 1:
        return {}
    out = {v.label: k % board.boards for lays in layouts for k, lay in enumerate(lays)
           for v in lay.spec.vertices if v.kind != OUTPUT}
    used = np.bincount(list(out.values()), minlength=board.boards)
    used[0] += 1  # the output gatherer
    return out if used.max() <= board.app_cores // board.boards else None


def _replicas(options: CodegenOptions, plans: List[GraphPlan]) -> int:
    """Copies of every function: options.replicas, or for "auto" the most the machine's
    application cores hold (each copy needs at least one of the emulator's live inputs per
    argument), the first count runtime.copies tries."""
    if options.replicas != "auto":
        return int(options.replicas)
    if not plans:
        return 1
    # a copy's cores, and a live input more per argument (a cut input takes more: the mapping
    # retries with one copy fewer); the copies share one output gatherer
    per_copy = sum(p.n_cores for p in plans)
    inputs = max(len(p.qgraph.input_shapes) for p in plans)
    board = options.board
    fit = (board.app_cores - 1) // (per_copy + inputs)
    if board.boards > 1 and per_copy < board.app_cores // board.boards:  # whole copies per board
        fit = board.boards * ((board.app_cores // board.boards - 1) // (per_copy + inputs))
    return max(1, min(fit, MAX_LIVE_INPUTS // inputs))


def _codegen(functions, options, constant_names) -> List:
    """``relax.ext.spinnaker``: called by RunCodegen with the offloaded functions (compiled
    already by the pipeline, or here, strictly, when RunCodegen runs on its own)."""
    from .._native import make_module

    opts = getattr(_local, "options", None) or CodegenOptions()
    functions = list(functions)
    missing = [f for f in functions if str(f.attrs["global_symbol"]) not in opts.programs]
    programs = dict(opts.programs)
    if missing:
        programs.update({p.symbol: p for p in compile_functions(missing, opts, strict=True)[0]})
    return [make_module(s, dump_program(programs[s])) for s in (str(f.attrs["global_symbol"]) for f in functions)]

