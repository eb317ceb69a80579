"""The ``spinnaker`` Relax pipeline and :func:`build`.

``relax.get_pipeline("spinnaker", calibration=...)`` partitions the module, runs it once
on the host (llvm) over the calibration data to capture the inputs of every offloaded
function at every call site, compiles the offloaded functions (those that cannot be
built stay on the host, unless ``strict``), runs the SpiNNaker codegen, then lowers what
stays on the host with TVM's default pipeline.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import tvm
from tvm import relax

import logging
import threading

from ..errors import CalibrationError
from ..partition import CODEGEN, offloaded_functions, partition_for_spinnaker
from ..quantization.batches import CalibrationBatches, gather_batches
from ..quantization.quantize import CalibrationSettings
from ..tiling import resources as res
from ..progress import build_stages, stage
from ..machine.builder import MAX_LIVE_INPUTS
from .codegen import CodegenOptions, codegen_options, compile_functions, function_titles, refuse_early
from .offload import offload_summary

log = logging.getLogger(__name__)
_last_offload = threading.local()  # the offload summary of the build running in this thread

# An array (samples on axis 0), one per model input, or an iterable of batches (a DataLoader).
Calibration = Union[np.ndarray, Sequence[np.ndarray], Iterable, None]
# The build's stages, as its progress bar names them (tvm_spinn.progress).
STAGES = ("partition", "calibration", "tiling", "mapping", "codegen")


def _as_input_list(mod: tvm.IRModule, calibration: Calibration) -> List[np.ndarray]:
    n_params = len(mod["main"].params)
    if calibration is None:
        raise CalibrationError(
            "SpiNNaker needs calibration data to choose int16 scales: pass calibration=<array whose first "
            "axis is samples> (or a list of such arrays, one per model input)")
    if isinstance(calibration, CalibrationBatches):
        arrays = calibration.inputs(n_params)
    elif isinstance(calibration, np.ndarray) or hasattr(calibration, "numpy"):
        arrays = [calibration]
    elif isinstance(calibration, (list, tuple)):
        arrays = list(calibration)
    else:  # what gather_batches leaves: not an array, a list or an iterable of batches
        raise CalibrationError(
            f"calibration is of type {type(calibration).__name__}: pass an array whose first axis is samples, a list "
            "of such arrays (one per model input), or an iterable of batches (a DataLoader)"
            + (" (a file name? load it first: np.load(path))" if isinstance(calibration, (str, bytes)) else ""))
    arrays = [np.asarray(a.numpy() if hasattr(a, "numpy") else a) for a in arrays]
    if len(arrays) != n_params:
        raise CalibrationError(f"calibration has {len(arrays)} arrays but main takes {n_params} inputs (a list "
                               "holds one array per input; pass batches as an iterator: iter(batches))")
    if any(a.ndim == 0 for a in arrays) or len({a.shape[0] for a in arrays}) != 1 or arrays[0].shape[0] == 0:
        raise CalibrationError("calibration arrays must share a non-empty first (sample) axis")
    arrays = [_as_param(a, p, k, len(arrays)) for k, (a, p) in enumerate(zip(arrays, mod["main"].params))]
    for k, a in enumerate(arrays):
        _warn_degenerate(f"input {k} of main" if len(arrays) > 1 else "the input", a)
    return arrays


def _as_param(a: np.ndarray, param: relax.Var, k: int, n: int) -> np.ndarray:
    """Calibration array k in the dtype of main's input k: float64 (numpy's default, with a
    warning) and integers become a float input's dtype. CalibrationError, with the expected
    and the received shape and dtype, if its per-sample shape or its kind of dtype is not the
    input's."""
    which = f"calibration array {k}" if n > 1 else "calibration"
    ty = param.ty
    if not isinstance(ty, relax.TensorType):
        raise CalibrationError(f"{which}: main's input {param.name} is not a tensor")
    dtype = np.dtype(str(ty.dtype))
    shape = getattr(ty, "shape", None)
    want = [int(d.value) if isinstance(d, tvm.tirx.IntImm) else None for d in shape.values] \
        if isinstance(shape, relax.ShapeExpr) else None
    expected = "" if want is None else "(" + ", ".join(
        "samples" if i == 0 else ("?" if w is None else str(w)) for i, w in enumerate(want)) + ") "
    problem = f"{which}: expected shape {expected}{dtype} for main's input {param.name}, received " \
              f"{tuple(a.shape)} {a.dtype}"
    numeric = np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)
    if not numeric or (not np.issubdtype(dtype, np.floating) and np.issubdtype(a.dtype, np.floating)):
        raise CalibrationError(f"{problem}: pass {dtype} values")
    if want is not None and (len(want) != a.ndim or any(w is not None and w != s
                                                        for w, s in zip(want[1:], a.shape[1:]))):
        raise CalibrationError(f"{problem}: pass samples along the first axis")
    if a.dtype == np.float64 and dtype != np.float64:
        log.warning("%s is float64 (numpy's default); converted to %s, the dtype of main's input %s", which,
                    dtype, param.name)
    return np.ascontiguousarray(a, dtype=dtype)


def _warn_degenerate(what: str, x: np.ndarray) -> None:
    """A calibration that cannot set a scale: all zero, one sample, every sample the same."""
    if not np.any(x):
        log.warning("calibration: %s is zero on every calibration sample; its int16 scale is a guess "
                    "(1/32767): calibrate with data that exercises it", what)
    elif x.shape[0] == 1:
        log.warning("calibration: %s has one calibration sample; scales from one sample clip most others", what)
    elif np.all(x == x[:1]):
        log.warning("calibration: %s is the same on every calibration sample; calibrate with varied data", what)


def _main_values(main: relax.Function) -> List[relax.Var]:
    """main's parameters, then every variable it binds, in order."""
    return list(main.params) + [b.var for block in main.body.blocks for b in block.bindings]


def capture_values(mod: tvm.IRModule, inputs: List[np.ndarray]) -> List[Optional[np.ndarray]]:
    """Run main on llvm over ``inputs`` and return the value of every parameter and binding
    of main, in :func:`_main_values` order (None for non-tensors).

    A main with a static batch axis runs in chunks of that batch (the last one padded with
    repeats of the first sample), so that any number of calibration samples works."""
    main = relax.transform.ToNonDataflow()(tvm.IRModule({"main": mod["main"]}))["main"]
    every = _main_values(main)
    tensors = [i for i, v in enumerate(every) if isinstance(v.ty, relax.TensorType)]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(main.body.blocks, relax.Tuple([every[i] for i in tensors])))
    probe = tvm.IRModule({"main": relax.Function(main.params, body, attrs=main.attrs)})
    for gv, func in mod.functions.items():
        if gv.name_hint != "main":
            probe[gv] = func
    ex = tvm.compile(probe, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    n = inputs[0].shape[0]
    batch = main.params[0].ty.shape.values[0] if isinstance(getattr(main.params[0].ty, "shape", None),
                                                            relax.ShapeExpr) else None
    step = int(batch.value) if isinstance(batch, tvm.tirx.IntImm) else n
    chunks: List[List[np.ndarray]] = []
    for start in range(0, n, step):
        idx = np.arange(start, start + step) % n if start + step > n else np.arange(start, start + step)
        out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a[idx])) for a in inputs])
        chunks.append([np.asarray(v.numpy())[:min(step, n - start)] for v in out])
    values: List[Optional[np.ndarray]] = [None] * len(every)
    for k, i in enumerate(tensors):
        values[i] = np.concatenate([c[k] for c in chunks]) if step != n else chunks[0][k]
    return values


def _offloaded_calls(mod: tvm.IRModule) -> Dict[str, List[List[Optional[int]]]]:
    """global_symbol of each offloaded function -> its call sites in main, each the positions
    (:func:`_main_values`) of the values it is called with (None: not a variable)."""
    codegen_funcs = {gv: f for gv, f in mod.functions.items()
                     if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Codegen") == CODEGEN}
    position = {v: i for i, v in enumerate(_main_values(mod["main"]))}
    result: Dict[str, List[List[Optional[int]]]] = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if isinstance(call, relax.Call) and call.op in codegen_funcs:
                symbol = str(codegen_funcs[call.op].attrs["global_symbol"])
                result.setdefault(symbol, []).append([position.get(a) for a in call.args])
    return result


def _calibration_per_function(values: List[Optional[np.ndarray]], calls: Dict[str, List[List[Optional[int]]]]
                              ) -> Dict[str, List[np.ndarray]]:
    """Per offloaded function, one calibration array per argument: its values at every call
    site, one after the other along the sample axis (a function called per time step is
    calibrated on all steps). Functions whose inputs were not captured are left out."""
    result = {}
    for symbol, sites in calls.items():
        if all(i is not None and values[i] is not None for site in sites for i in site):
            result[symbol] = [np.concatenate([values[site[k]] for site in sites]) for k in range(len(sites[0]))]
    return result


def _un_offload(mod: tvm.IRModule, symbols: Sequence[str]) -> tvm.IRModule:
    """Keep the named offloaded functions on the host: drop their codegen attributes and lift
    their composites into plain functions, which the default pipeline compiles for the CPU.
    The other offloaded functions keep their local composites (what the codegen reads)."""
    chosen = {gv: func for gv, func in mod.functions.items()
              if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN
              and str(func.attrs["global_symbol"]) in set(symbols)}
    if not chosen:
        return mod
    lifted = relax.transform.LambdaLift()(
        tvm.IRModule({gv: f.without_attr("Codegen").without_attr("global_symbol") for gv, f in chosen.items()}))
    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    for gv, func in lifted.functions.items():
        if func.attrs and "Composite" in func.attrs:
            func = func.without_attr("Composite")
        existing = [g for g in out.functions if g.name_hint == gv.name_hint]
        out[existing[0] if existing else gv] = func
    return out


def _check_arguments(board, cycle_budget, convolutions, fuse_pools, strict, headroom, percentile,
                     replicas=1, input_bits=16) -> None:
    """The pipeline's arguments, before any work: TypeError (a wrong type) or ValueError (a
    value out of range), naming the argument and what it takes."""
    if isinstance(input_bits, (bool, np.bool_)) or input_bits not in (16, 8):
        raise ValueError(f"input_bits={input_bits!r}: pass 16 (the default) or 8 (8-bit data such as images: half "
                         "the bytes per sample on the host link)")
    if replicas != "auto" and (isinstance(replicas, (bool, np.bool_)) or not isinstance(replicas, (int, np.integer))
                               or replicas < 1):
        raise ValueError(f"replicas={replicas!r}: pass a number of copies >= 1, or \"auto\" (the count with the "
                         "best modelled throughput)")
    if not isinstance(board, str) or board not in res.BOARDS:
        raise ValueError(f"board={board!r}: choose one of {sorted(res.BOARDS)}")
    for name, value in (("convolutions", convolutions), ("fuse_pools", fuse_pools), ("strict", strict)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}={value!r}: pass True or False")
    numbers = (("cycle_budget", cycle_budget), ("headroom", headroom), ("percentile", percentile))
    for name, value in numbers:
        if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number))):
            raise TypeError(f"{name}={value!r}: pass a number")
    if cycle_budget is not None and not (np.isfinite(cycle_budget) and cycle_budget > 0):
        raise ValueError(f"cycle_budget={cycle_budget!r}: pass a positive number of cycles per sample per core "
                         f"(e.g. {res.DEFAULT_CYCLE_BUDGET:.0f}, 250 us at 200 MHz), or None to let the planner choose")
    if not (np.isfinite(headroom) and headroom >= 1):
        raise ValueError(f"headroom={headroom!r}: pass a finite number >= 1 (2, the default, keeps one bit for "
                         "values beyond the calibrated range)")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile={percentile!r}: pass a number in (0, 100] (100, the default: the largest "
                         "calibrated value)")


def _check_copies(funcs: List, replicas: Union[int, str], titles: Dict[str, str]) -> None:
    """ValueError if ``replicas`` copies of an offloaded function need more live inputs than
    the emulator has per function (each copy takes each argument through its own live input),
    naming the function and the most copies it can have."""
    if replicas == "auto":
        return
    for f in funcs:
        n = len(f.params)
        if int(replicas) * n > MAX_LIVE_INPUTS:
            raise ValueError(
                f"replicas={replicas!r}: {titles[str(f.attrs['global_symbol'])]} takes {n} input(s), one live "
                f"input each per copy, and a function has at most {MAX_LIVE_INPUTS} live inputs: pass replicas <= "
                f"{MAX_LIVE_INPUTS // n}, or \"auto\" (the count with the best modelled throughput)")


def spinnaker_pipeline(calibration: Calibration = None, board: str = "spinn5",
                       cycle_budget: Optional[float] = None, convolutions: bool = True,
                       fuse_pools: bool = True, strict: bool = False, headroom: float = 2.0,
                       percentile: float = 100.0, replicas: Union[int, str] = 1,
                       input_bits: int = 16) -> tvm.transform.Pass:
    """Partition for SpiNNaker, run its codegen, lower the rest for the host CPU.

    Parameters
    ----------
    calibration : array, list of arrays, or iterable of batches
        Representative inputs of ``main`` (first axis = samples), used to choose the
        int16 scales of every tensor on the board. Required if anything is offloaded.
        A list or tuple holds one array per input of ``main``; any other iterable (a
        ``torch.utils.data.DataLoader``, a generator) yields batches, each an array or
        tensor, or a tuple whose first elements are the inputs (labels after them are not
        used); it is read once, here, and the batches are joined along the sample axis.
    board : "spinn5" (one SpiNN-5 board: 48 chips, 808 application cores), "spinn5x3" (three
        SpiNN-5 boards as a triad: 144 chips, 2,424 cores; a model too big for one board is
        placed across them) or "spinn3" (4 chips).
    cycle_budget : modelled cycles per sample per core that tiles are sized to meet
        (default: resources.DEFAULT_CYCLE_BUDGET, relaxed if the model needs more cores).
    convolutions : offload conv1d/conv2d, pooling, residual adds and flatten too (not only
        dense layers).
    fuse_pools : compute a pool in the tiles of the convolution that feeds it, where that
        takes no more cores (saves the convolution output's packets); False keeps every
        pool on its own cores.
    strict : raise the error of an offloaded function that cannot be built (resources, a
        planner limit, the mapping) instead of keeping it on the host with a warning.
    headroom, percentile : a tensor's int16 range is the ``percentile`` of |x| over its
        calibration values (100: the maximum) times ``headroom`` (default 2: one bit of
        precision keeps fresh samples from saturating); see
        :class:`tvm_spinn.quantization.quantize.CalibrationSettings`.
    replicas : copies of every offloaded function on the machine (int >= 1), or "auto": of a
        few counts (the most its application cores hold, at most 16 per function, the
        emulator's live inputs; then halving down to one), the one with the best modelled
        throughput (each mapped and run in the timed emulation at its host pace:
        tvm_spinn.runtime.copies; the build takes that much longer). The runtime spreads a batch over the copies, one sample per copy at a time
        (a last, partial group goes to only as many copies as it has samples); they run
        side by side, sharing the host link and the output gatherer
        (tvm_spinn.runtime.replicas). Results are the same as with one copy.
    input_bits : 16 (default) or 8: the bits of each value the host sends to an offloaded
        function (every input the board takes from the host). 8 sends four values per
        packet instead of two: half the packets and bytes per sample on the host link, for
        8-bit data such as images. The input is quantised to uint8 (0..255) when no
        calibration value is negative, else to int8, at its calibrated range without the
        headroom (lossless for pixels k / 255 whose calibration reaches 255); the kernels
        store the values as int16, so results stay bit-exact against the integer reference
        (:mod:`tvm_spinn.quantization.input_format`). An input a concat joins with other
        tensors stays int16 (with a warning).
    """
    _check_arguments(board=board, cycle_budget=cycle_budget, convolutions=convolutions, fuse_pools=fuse_pools,
                     strict=strict, headroom=headroom, percentile=percentile, replicas=replicas,
                     input_bits=input_bits)
    settings = CalibrationSettings(headroom=headroom, percentile=percentile, input_bits=int(input_bits))
    calibration = gather_batches(calibration)  # once: a generator cannot be read twice

    @tvm.transform.module_pass(opt_level=0, name="SpiNNakerPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with build_stages(STAGES):
            return _run(mod)

    def _run(mod: tvm.IRModule) -> tvm.IRModule:
        stage("partition")
        partitioned = partition_for_spinnaker(mod, convolutions=convolutions)
        # In the order main calls them: functions are numbered, and their layers named, in run order.
        order = {symbol: k for k, symbol in enumerate(_offloaded_calls(partitioned))}
        funcs = sorted(offloaded_functions(partitioned).values(),
                       key=lambda f: order.get(str(f.attrs["global_symbol"]), len(order)))
        titles = function_titles(funcs)
        _check_copies(funcs, replicas, titles)
        # What cannot fit by its weight shapes alone goes to the host before the calibration.
        early = refuse_early(funcs, res.BOARDS[board], strict, titles)
        partitioned = _un_offload(partitioned, list(early))
        funcs = [f for f in funcs if str(f.attrs["global_symbol"]) not in early]
        calls = _offloaded_calls(partitioned)
        # The partitioned module computed on the host: main's values line up with its calls.
        stage("calibration")
        values = capture_values(_un_offload(partitioned, list(calls)), _as_input_list(mod, calibration)) \
            if calls else []
        options = CodegenOptions(board=res.BOARDS[board], cycle_budget=cycle_budget, fuse_pools=fuse_pools,
                                 replicas=replicas,
                                 calibration=_calibration_per_function(values, calls),
                                 calls_per_inference={s: len(sites) for s, sites in calls.items()},
                                 calibration_settings=settings)
        options.titles = titles
        programs, refused = compile_functions(funcs, options, strict=strict)
        # main's inputs go with the programs: a VM of the exported and loaded module checks them too.
        for program in programs:
            program.main_inputs = signature(mod).get("main", [])
        options.programs = {p.symbol: p for p in programs}
        refused = {**early, **refused}
        for symbol, why in refused.items():
            log.warning("kept on the host: %s: %s", options.titles[symbol], why)
        partitioned = _un_offload(partitioned, list(refused))
        summary = offload_summary(mod, partitioned, refused, options.titles)
        log.info("%s", summary.line())
        _last_offload.summary = summary
        stage("codegen")
        with codegen_options(options):
            lowered = relax.transform.RunCodegen()(partitioned)
        # The modules carry their own weights: drop the second copy RunCodegen keeps.
        if lowered.attrs and "const_name_to_constant" in lowered.attrs:
            lowered = lowered.without_attr("const_name_to_constant")
        return relax.get_pipeline("default")(lowered)

    return _pipeline


def build(mod: tvm.IRModule, calibration: Calibration = None, *, target: Union[str, dict] = "spinnaker",
          board: str = "spinn5", cycle_budget: Optional[float] = None, convolutions: bool = True,
          fuse_pools: bool = True, strict: bool = False, headroom: float = 2.0, percentile: float = 100.0,
          replicas: Union[int, str] = 1, input_bits: int = 16):
    """Partition, quantise, map and compile ``mod``; returns a Relax VM executable (the
    options are those of :func:`spinnaker_pipeline`).

    Example
    -------
    .. code-block:: python

        mod = tvm_spinn.from_torch(model, (x,))
        ex = tvm_spinn.build(mod, calibration=x_calib)
        vm = relax.VirtualMachine(ex, tvm.cpu())
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    """
    pipeline = spinnaker_pipeline(calibration=calibration, board=board, cycle_budget=cycle_budget,
                                  convolutions=convolutions, fuse_pools=fuse_pools, strict=strict,
                                  headroom=headroom, percentile=percentile, replicas=replicas,
                                  input_bits=input_bits)
    _last_offload.summary = None
    ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    try:  # what went where, for tvm_spinn.report.offload_report(ex)
        ex.spinnaker_offload = _last_offload.summary
    except AttributeError:  # an executable type that takes no attributes
        pass
    return ex


def signature(mod: tvm.IRModule) -> Dict[str, List[tuple]]:
    """main's inputs: {"main": [(name, dtype, shape), ...]}, a shape's symbolic dimensions
    negative, one number per variable (-1, -2, ...: inputs that share a batch variable share
    its number); {} when an input is not a tensor of known rank. Each program stores it
    (BoardProgram.main_inputs), and tvm_spinn.runtime.vm_guard checks a VM's inputs against it."""
    params, symbols = [], {}
    for p in mod["main"].params:
        ty = p.ty
        if not isinstance(ty, relax.TensorType) or not isinstance(getattr(ty, "shape", None), relax.ShapeExpr):
            return {}
        shape = tuple(int(d.value) if isinstance(d, tvm.tirx.IntImm)
                      else symbols.setdefault(str(d), -1 - len(symbols)) for d in ty.shape.values)
        params.append((p.name, str(ty.dtype), shape))
    return {"main": params}
