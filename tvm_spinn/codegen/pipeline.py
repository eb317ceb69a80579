"""The ``spinnaker`` Relax pipeline and :func:`build`.

``relax.get_pipeline("spinnaker", calibration=...)`` partitions the module, runs the
float model once on the host (llvm) over the calibration data to capture the input of
every offloaded function, runs the SpiNNaker codegen, then lowers what stays on the
host with TVM's default pipeline.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import tvm
from tvm import relax

from ..errors import CalibrationError, UnsupportedError
from ..partition import CODEGEN, partition_for_spinnaker
from ..tiling import resources as res
from .codegen import CodegenOptions, codegen_options

Calibration = Union[np.ndarray, Sequence[np.ndarray], None]


def _as_input_list(mod: tvm.IRModule, calibration: Calibration) -> List[np.ndarray]:
    n_params = len(mod["main"].params)
    if calibration is None:
        raise CalibrationError(
            "SpiNNaker needs calibration data to choose int16 scales: pass calibration=<array whose first "
            "axis is samples> (or a list of such arrays, one per model input)")
    arrays = [calibration] if isinstance(calibration, np.ndarray) or hasattr(calibration, "numpy") else \
        list(calibration)
    arrays = [np.asarray(a.numpy() if hasattr(a, "numpy") else a) for a in arrays]
    if len(arrays) != n_params:
        raise CalibrationError(f"calibration has {len(arrays)} arrays but main takes {n_params} inputs")
    if len({a.shape[0] for a in arrays}) != 1 or arrays[0].shape[0] == 0:
        raise CalibrationError("calibration arrays must share a non-empty first (sample) axis")
    return arrays


def capture_values(mod: tvm.IRModule, inputs: List[np.ndarray]) -> Dict[str, np.ndarray]:
    """Run main on llvm over ``inputs`` and return every tensor it binds, by name."""
    main = relax.transform.ToNonDataflow()(tvm.IRModule({"main": mod["main"]}))["main"]
    names, values = [], []
    for p in main.params:
        names.append(p.name)
    for block in main.body.blocks:
        for binding in block.bindings:
            if isinstance(binding.var.ty, relax.TensorType):
                names.append(binding.var.name)
                values.append(binding.var)
    body = relax.BlockBuilder().normalize(relax.SeqExpr(main.body.blocks, relax.Tuple(list(main.params) + values)))
    probe = tvm.IRModule({"main": relax.Function(main.params, body, attrs=main.attrs)})
    for gv, func in mod.functions.items():
        if gv.name_hint != "main":
            probe[gv] = func
    ex = tvm.compile(probe, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]
    out = vm["main"](*args)
    return {name: np.asarray(v.numpy()) for name, v in zip(names, out)}


def _offloaded_calls(mod: tvm.IRModule) -> Dict[str, str]:
    """global_symbol of each offloaded function -> name of the main variable it is called with."""
    codegen_funcs = {gv: f for gv, f in mod.functions.items()
                     if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Codegen") == CODEGEN}
    result = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if isinstance(call, relax.Call) and call.op in codegen_funcs:
                if len(call.args) != 1 or not isinstance(call.args[0], relax.Var):
                    raise UnsupportedError(f"offloaded function {call.op.name_hint} must take one tensor")
                result[str(codegen_funcs[call.op].attrs["global_symbol"])] = call.args[0].name
    return result


def _calibration_per_function(original: tvm.IRModule, partitioned: tvm.IRModule,
                              calibration: Calibration) -> Dict[str, np.ndarray]:
    calls = _offloaded_calls(partitioned)
    if not calls:
        return {}
    values = capture_values(original, _as_input_list(original, calibration))
    result = {}
    for symbol, var_name in calls.items():
        if var_name not in values:
            raise CalibrationError(f"could not find the calibration values of {var_name}, "
                                   f"the input of offloaded function {symbol}")
        result[symbol] = values[var_name]
    return result


def spinnaker_pipeline(calibration: Calibration = None, board: str = "spinn5",
                       cycle_budget: Optional[float] = None, convolutions: bool = True,
                       fuse_pools: bool = True) -> tvm.transform.Pass:
    """Partition for SpiNNaker, run its codegen, lower the rest for the host CPU.

    Parameters
    ----------
    calibration : array or list of arrays
        Representative inputs of ``main`` (first axis = samples), used to choose the
        int16 scales of every tensor on the board. Required if anything is offloaded.
    board : "spinn5" (48 chips) or "spinn3" (4 chips).
    cycle_budget : modelled cycles per sample per core that tiles are sized to meet
        (default: resources.DEFAULT_CYCLE_BUDGET, relaxed if the model needs more cores).
    convolutions : offload conv1d/conv2d, pooling, residual adds and flatten too (not only
        dense layers).
    fuse_pools : compute a pool in the tiles of the convolution that feeds it, where that
        takes no more cores (saves the convolution output's packets); False keeps every
        pool on its own cores.
    """
    if board not in res.BOARDS:
        raise ValueError(f"unknown board {board!r}; choose one of {sorted(res.BOARDS)}")

    @tvm.transform.module_pass(opt_level=0, name="SpiNNakerPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        partitioned = partition_for_spinnaker(mod, convolutions=convolutions)
        options = CodegenOptions(board=res.BOARDS[board], cycle_budget=cycle_budget, fuse_pools=fuse_pools,
                                 calibration=_calibration_per_function(mod, partitioned, calibration))
        with codegen_options(options):
            lowered = relax.transform.RunCodegen()(partitioned)
        # The modules carry their own weights: drop the second copy RunCodegen keeps.
        if lowered.attrs and "const_name_to_constant" in lowered.attrs:
            lowered = lowered.without_attr("const_name_to_constant")
        return relax.get_pipeline("default")(lowered)

    return _pipeline


def register() -> None:
    from tvm.relax.pipeline import PIPELINE_MAP

    if "spinnaker" not in PIPELINE_MAP:
        relax.register_pipeline("spinnaker")(spinnaker_pipeline)


def build(mod: tvm.IRModule, calibration: Calibration = None, *, target: Union[str, dict] = "spinnaker",
          board: str = "spinn5", cycle_budget: Optional[float] = None, convolutions: bool = True,
          fuse_pools: bool = True):
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
                                  convolutions=convolutions, fuse_pools=fuse_pools)
    return tvm.compile(mod, target=target, relax_pipeline=pipeline)
