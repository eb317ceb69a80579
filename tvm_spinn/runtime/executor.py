"""The executor: the Python side of the ``"spinnaker"`` runtime module.

The C++ module (``codegen/spinnaker_module.cc``) calls ``tvm_spinn.runtime.create_executor``
once per module instance when a Relax VM links the function; the executor opens a
board through :func:`open_board` (the one seam between runtime and hardware: the
emulator now, a real board through live IO later) and, per call, quantises the input,
streams it through the board, and dequantises the output into the VM's buffer.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Dict, Optional

import numpy as np

from ..errors import InputError, SpinnakerError
from ..program import BoardProgram, load_program
from ..quantization.fixed_point import quantize_tensor
from ..quantization.reference import graph_reference
from .stats import RunStatistics, collect, combine

log = logging.getLogger(__name__)

BOARD_ENV = "TVM_SPINN_BOARD"  # "emulator" (default); a board's hostname is for the real-board path


def open_board(program: BoardProgram):
    """The board that runs ``program``: the emulator unless TVM_SPINN_BOARD names a board."""
    target = os.environ.get(BOARD_ENV, "emulator")
    if target == "emulator":
        from .emulator import EmulatedBoard

        return EmulatedBoard(program)
    raise SpinnakerError(
        f"{BOARD_ENV}={target!r}: running on a real SpiNNaker board is not implemented yet "
        "(the live IO path is mapped but not driven); unset it to use the emulator")


class Executor:
    """Runs one offloaded function (one program) on a board."""

    def __init__(self, symbol: str, program: BoardProgram, instance_id: int) -> None:
        self.symbol = symbol
        self.program = program
        self.instance_id = instance_id
        self.board = open_board(program)
        self.last_stats: Optional[RunStatistics] = None
        self._lock = threading.Lock()
        self._warned_saturation = False

    def _check_input(self, x: np.ndarray) -> None:
        shape = tuple(self.program.input_shape)
        first = self.program.layers[0].name
        if x.dtype != np.float32:
            raise InputError(f"{self.symbol} ({first}): input dtype must be float32, got {x.dtype}")
        if tuple(x.shape[1:]) != shape:
            raise InputError(f"{self.symbol} ({first}): input shape must be (batch, "
                             f"{', '.join(map(str, shape))}), got {tuple(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise InputError(f"{self.symbol}: input contains NaN or infinity")

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        """float32 (batch, in) -> float32 (batch, out) through the board."""
        global _last
        self._check_input(x)
        _last = self
        x = x.reshape(x.shape[0], -1)  # tensors travel c-major, as numpy stores them
        with self._lock:  # one stream at a time per board
            x_q = quantize_tensor(x, self.program.input_scale)
            # Values beyond the calibrated range saturate: count them, never hide them.
            saturated = int(np.count_nonzero(np.abs(x) > self.program.input_scale * 32767.5))
            self.board.reset_counters()
            start = time.perf_counter()
            y_q = self.board.run(x_q)
            wall = time.perf_counter() - start
            self.last_stats = collect(self.program, self.board, x.shape[0], wall)
            self.last_stats.saturated_inputs = saturated
        if saturated and not self._warned_saturation:  # once per executor; every call counts them
            self._warned_saturation = True
            log.warning("%s: %d input values exceed the calibrated range and were saturated to int16 "
                        "(counted per call in the statistics); calibrate with more representative data",
                        self.symbol, saturated)
        return (y_q.astype(np.float32) * np.float32(self.program.output_scale)).astype(np.float32)

    def __call__(self, *args) -> None:
        """VM calling convention: inputs, then the preallocated output."""
        if len(args) != 2:
            raise InputError(f"{self.symbol}: expected one input and one output tensor, got {len(args)} arguments")
        x = np.from_dlpack(args[0])
        out = np.from_dlpack(args[1])
        y = self.run_numpy(np.ascontiguousarray(x))
        if out.size != y.size:
            raise InputError(f"{self.symbol}: output buffer shape {out.shape} != result shape {y.shape}")
        out[...] = y.reshape(out.shape)


_executors: Dict[int, Executor] = {}
_last: Optional[Executor] = None


def create_executor(symbol: str, payload: bytes, instance_id: int):
    """Called by the C++ module: read the program (never unpickled: :mod:`tvm_spinn.program.format`)
    and open its board. Raises ProgramFormatError for a program of another format version."""
    program = load_program(bytes(payload))
    executor = Executor(str(symbol), program, int(instance_id))
    _executors[int(instance_id)] = executor
    return executor


def register() -> None:
    import tvm_ffi

    tvm_ffi.register_global_func("tvm_spinn.runtime.create_executor", create_executor, override=True)


def spinnaker_modules(obj) -> list:
    """The ``"spinnaker"`` runtime modules inside an executable, VM or module (once each)."""
    mod = getattr(obj, "mod", obj)
    mod = getattr(mod, "module", mod)  # VirtualMachine keeps its module in .module
    found, stack, seen = [], [mod], set()
    while stack:
        m = stack.pop()
        if getattr(m, "kind", None) == "spinnaker":
            ident = int(m["spinnaker_instance_id"]())
            if ident not in seen:
                seen.add(ident)
                found.append(m)
        stack.extend(getattr(m, "imports", []) or [])
    return found


def executors(obj=None) -> list:
    """Executors of ``obj`` (executable / VM / module) in symbol order, or all of this process."""
    if obj is None:
        return list(_executors.values())
    found = (_executors.get(int(m["spinnaker_instance_id"]())) for m in spinnaker_modules(obj))
    return sorted((e for e in found if e is not None), key=lambda e: e.symbol)


def statistics(obj=None) -> Optional[RunStatistics]:
    """Statistics of the last call: of all of ``obj``'s offloaded functions combined
    (see :func:`tvm_spinn.stats.combine`), or of the last executor used in this process."""
    if obj is None:
        return _last.last_stats if _last is not None else None
    done = [e.last_stats for e in executors(obj) if e.last_stats is not None]
    return combine(done) if done else None


def integer_reference(program: BoardProgram, x: np.ndarray) -> np.ndarray:
    """The numpy integer reference of a compiled program (:mod:`tvm_spinn.quantization.reference`
    on the program's quantised graph, tiling's cuts included): float32 (quantised with the
    program's input scale) or int16 in, int16 (batch, out_features) out."""
    x = np.asarray(x)
    y = x if x.dtype == np.int16 else quantize_tensor(x.astype(np.float32), program.input_scale)
    y = y.reshape(y.shape[0], -1)
    (out,) = graph_reference(program.ops, [y], program.input_shapes, program.outputs)
    return out.reshape(out.shape[0], -1)
