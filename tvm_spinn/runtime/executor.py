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
import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..errors import InputError, LostSamplesError, SpinnakerError
from ..program import BoardProgram, load_program
from ..quantization.reference import graph_reference
from . import vm_guard
from .vm_guard import spinnaker_modules  # noqa: F401  (tvm_spinn.runtime.spinnaker_modules)
from .stats import RunStatistics, collect, combine

log = logging.getLogger(__name__)

def open_board(program: BoardProgram, board: Optional[str] = None):
    """The board that runs ``program``: ``board`` (a ``TVM_SPINN_BOARD`` value; None: the
    variable's) names the emulator (default), a board, a spalloc server or a board double
    (:mod:`tvm_spinn.runtime.board.address`); a real one gets the program loaded and
    started. Raises BoardError (what failed and what to do) when that board cannot be used."""
    from .board import BOARD_ENV, open_session, parse_board_address

    address = parse_board_address(board if board is not None else os.environ.get(BOARD_ENV))
    if address.kind == "emulator":
        from .emulator import EmulatedBoard

        return EmulatedBoard(program)
    return open_session(program, address)


@dataclass
class CallState:
    """An executor's calls through one VM: calls so far (every calls_per_inference-th starts
    a new inference), that inference's wall time and saturated inputs, its statistics."""

    calls: int = 0
    wall: float = 0.0
    saturated: int = 0
    last_stats: Optional[RunStatistics] = None
    board_generation: int = 0  # the executor's board it counts on (use_board starts anew)


class Executor:
    """Runs one offloaded function (one program) on a board.

    Statistics cover one inference: a function that ``main`` calls k times per inference
    (``program.calls_per_inference``, e.g. a recurrent cell) adds its k calls up. They are
    kept per VM (:mod:`.vm_guard`; ``last_stats``: of the last call through any VM); the
    board is shared by the VMs of one executable, one stream at a time."""

    def __init__(self, symbol: str, program: BoardProgram, instance_id: int) -> None:
        self.symbol = symbol
        self.program = program
        self.instance_id = instance_id
        self.board = open_board(program)
        self.last_stats: Optional[RunStatistics] = None
        self.last_lost: Optional[LostSamplesError] = None
        self._lock = threading.Lock()
        self._own = CallState()  # calls that come through no guarded VM
        self._generation = 0  # boards used so far (use_board)

    def _state(self) -> CallState:
        """The call state of the VM whose call runs in this thread."""
        record = vm_guard.current()
        if record is None:
            return self._own
        state = record.states.get(self)
        if state is None or state.board_generation != self._generation:
            state = record.states[self] = CallState(board_generation=self._generation)
        return state

    def stats_of(self, record: Optional["vm_guard.VMRecord"]) -> Optional[RunStatistics]:
        """Statistics of the last call through the VM of ``record`` (None: through no VM)."""
        state = self._own if record is None else record.states.get(self)
        return None if state is None else state.last_stats

    def use_board(self, board: Optional[str] = None) -> None:
        """Run on another board from now on (see :func:`use_board`)."""
        from .board import BOARD_ENV, parse_board_address

        target = parse_board_address(board if board is not None else os.environ.get(BOARD_ENV))
        with self._lock:
            if getattr(self.board, "address", None) == target or getattr(self.board, "_closed", False):
                self.board.close()  # the same board: reload it
                self.board = open_board(self.program, board)
            else:
                new = open_board(self.program, board)  # a board that fails leaves the old one in place
                old, self.board = self.board, new
                close = getattr(old, "close", None)
                if close is not None:
                    close()
            self._generation += 1  # every VM's counts restart on the new board
            self._own = CallState(board_generation=self._generation)

    @property
    def where(self) -> str:
        """The function as errors name it: its title ("function 1 (features.0 .. head)"), or
        for a program stored without one, its symbol and first layer."""
        if self.program.title:
            return self.program.title
        first = self.program.layers[0].name if self.program.layers else self.symbol
        return f"{self.symbol} ({first})"

    def _check_inputs(self, xs: List[np.ndarray]) -> None:
        if len(xs) != len(self.program.arg_shapes):
            raise InputError(f"{self.where}: expected {len(self.program.arg_shapes)} input tensors, "
                             f"got {len(xs)}")
        batch = {x.shape[0] if x.ndim else -1 for x in xs}
        for k, (x, shape) in enumerate(zip(xs, self.program.arg_shapes)):
            which = f"input {k}" if len(xs) > 1 else "input"
            if x.dtype != np.float32:
                raise InputError(f"{self.where}: {which} dtype must be float32, got {x.dtype}")
            if tuple(x.shape[1:]) != tuple(shape) or len(batch) != 1:
                raise InputError(f"{self.where}: {which} shape must be (batch, "
                                 f"{', '.join(map(str, shape))}), got {tuple(x.shape)}")
            if not np.all(np.isfinite(x)):
                raise InputError(f"{self.where}: {which} contains NaN or infinity")

    def run_all(self, xs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """float32 inputs (batch, *arg shape) -> float32 results (batch, result size), one per
        result, through the board."""
        global _last
        xs = [np.ascontiguousarray(x) for x in xs]
        self._check_inputs(xs)
        _last = weakref.ref(self)
        n = xs[0].shape[0]
        state = self._state()
        if n == 0:  # nothing to stream, and no statistics (not those of an earlier call)
            self.last_stats = state.last_stats = None
            return [np.zeros((0, int(np.prod(s))), np.float32) for s in self.program.result_shapes]
        with self._lock:  # one stream at a time per board
            # Samples travel c-major, as numpy stores them, input after input.
            # Values beyond the calibrated range saturate (to int16, or an 8-bit input's
            # range): count them, never hide them.
            x_q, saturated = self.program.quantize_args(xs)
            if state.calls % max(1, self.program.calls_per_inference) == 0:  # a new inference
                self.board.reset_counters()
                state.wall, state.saturated = 0.0, 0
            state.calls += 1
            start = time.perf_counter()
            self.last_stats = state.last_stats = None  # a call that fails leaves no statistics of an earlier one
            try:
                y_q = self.board.run(x_q)
            except LostSamplesError as exc:
                # The counters tell where the packets went: keep them for the user.
                state.wall += time.perf_counter() - start
                self.last_stats = state.last_stats = collect(self.program, self.board, n, state.wall)
                self.last_stats.lost_samples = len(exc.lost)
                self.last_lost = exc  # with the int16 rows (partial): the FFI passes only the message
                raise LostSamplesError(exc.lost, exc.n_samples, exc.partial,
                                       f"{exc.where} in {self.where}") from None
            state.wall += time.perf_counter() - start
            state.saturated += saturated
            self.last_stats = state.last_stats = collect(self.program, self.board, n, state.wall)
            self.last_stats.saturated_inputs = state.saturated
        inside = self.last_stats.saturated_values
        if saturated or inside:  # every call that clipped anything says so
            where = ", ".join(f"{n} in {name}" for name, n in inside.items())
            log.warning("%s: values beyond the calibrated range were saturated to int16: %d of the inputs%s "
                        "(tvm_spinn.statistics counts them per tensor); calibrate with more representative data "
                        "or a larger headroom", self.symbol, saturated, f", {where}" if where else "")
        results = []
        for offset, shape, scale in zip(self.program.result_offsets, self.program.result_shapes,
                                        self.program.output_scales):
            y = y_q[:, offset:offset + int(np.prod(shape))]
            results.append((y.astype(np.float32) * np.float32(scale)).astype(np.float32))
        return results

    def run_numpy(self, *xs: np.ndarray):
        """float32 (batch, ...) inputs -> float32 (batch, result size) through the board: one
        array for a function with one result, else a list."""
        results = self.run_all(list(xs))
        return results[0] if len(results) == 1 else results

    def __call__(self, *args) -> None:
        """VM calling convention: the inputs, then one preallocated buffer per result."""
        n_in, n_out = len(self.program.arg_shapes), len(self.program.result_shapes)
        if len(args) != n_in + n_out:
            raise InputError(f"{self.where}: expected {n_in} input and {n_out} output tensors, got "
                             f"{len(args)} arguments")
        ys = self.run_all([np.from_dlpack(a) for a in args[:n_in]])
        for y, buf in zip(ys, args[n_in:]):
            out = np.from_dlpack(buf)
            if out.size != y.size:
                raise InputError(f"{self.where}: output buffer shape {out.shape} != result shape {y.shape}")
            out[...] = y.reshape(out.shape)


# Weakly: an executor lives as long as its module instance (its executable and VMs).
_executors: "weakref.WeakValueDictionary[int, Executor]" = weakref.WeakValueDictionary()
_last: Optional["weakref.ref[Executor]"] = None


def create_executor(symbol: str, payload: bytes, instance_id: int):
    """Called by the C++ module: read the program (never unpickled: :mod:`tvm_spinn.program.format`)
    and open its board. Raises ProgramFormatError for a program of another format version."""
    program = load_program(bytes(payload))
    executor = Executor(str(symbol), program, int(instance_id))
    _executors[int(instance_id)] = executor
    vm_guard.remember_signature(int(instance_id), program.main_inputs)  # for VMs of a loaded module
    weakref.finalize(executor, vm_guard.forget_signature, int(instance_id))
    return executor




def executors(obj=None) -> list:
    """Executors of ``obj`` (executable / VM / module) in the order main calls them, or all of
    this process."""
    if obj is None:
        return list(_executors.values())
    found = (_executors.get(int(m["spinnaker_instance_id"]())) for m in spinnaker_modules(obj))
    return sorted((e for e in found if e is not None), key=lambda e: (e.program.run_order, e.symbol))


def use_board(obj, board: Optional[str] = None) -> None:
    """Move the offloaded functions of ``obj`` (an executable, VM or module that has run or
    been linked by a VM) to ``board``, a ``TVM_SPINN_BOARD`` value ("emulator", a hostname,
    ``spalloc://server``, ``double://host:port``; None: the variable's current value). Each
    function's board is otherwise chosen once, when a VM first links it. The board it leaves
    is released (a real board's application is stopped); the board it is on is reloaded
    (after a fault, say). Raises BoardError if the new board cannot be used."""
    from .board import BOARD_ENV, parse_board_address

    found = executors(obj)
    if not found:
        raise SpinnakerError("use_board: no offloaded function of this object has been linked yet; "
                             "create a relax.VirtualMachine on it first")
    target = parse_board_address(board if board is not None else os.environ.get(BOARD_ENV))
    for e in found:  # a reload: every function leaves first, so the board's session really ends
        if getattr(e.board, "address", None) == target:
            e.board.close()
    for e in found:
        e.use_board(board)


def statistics(obj=None) -> Optional[RunStatistics]:
    """Statistics of the last call: of all of ``obj``'s offloaded functions combined
    (see :func:`tvm_spinn.stats.combine`): for a VM, of its own last call (VMs of one
    executable keep theirs apart); for an executable or module, of the last call through
    any VM; without ``obj``, of the last executor used in this process."""
    if obj is None:
        last = _last() if _last is not None else None
        return last.last_stats if last is not None else None
    record = vm_guard.record_of(obj)
    found = [e.stats_of(record) if record is not None else e.last_stats for e in executors(obj)]
    done = [s for s in found if s is not None]
    return combine(done) if done else None


def integer_reference(program: BoardProgram, x) -> np.ndarray:
    """The numpy integer reference of a compiled program (:mod:`tvm_spinn.quantization.reference`
    on the program's quantised graph, tiling's cuts included): float32 (quantised with the
    program's input scales) or int16 in, int16 (batch, out_features) out, as the board
    returns it. x: one array (batch, ...) per input (a list), or the inputs' values one after
    the other (batch, in_features)."""
    sizes = [int(np.prod(s)) for s in program.input_shapes]
    if isinstance(x, (list, tuple)):
        xs = [np.asarray(v).reshape(np.shape(v)[0], -1) for v in x]
    else:
        flat = np.asarray(x).reshape(np.shape(x)[0], -1)
        xs = np.split(flat, np.cumsum(sizes)[:-1], axis=1)
    xs = [v if v.dtype == np.int16 else program.arg_format(k).quantize(v.astype(np.float32), sc)
          for k, (v, sc) in enumerate(zip(xs, program.input_scales))]
    distinct = list(dict.fromkeys(program.outputs))
    outs = graph_reference(program.ops, xs, program.input_shapes, distinct)
    return np.concatenate([o.reshape(o.shape[0], -1) for o in outs], axis=1)
