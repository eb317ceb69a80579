"""The emulated board: the C kernels and the packet router of ``c_runtime/`` via ctypes.

The emulator is built from the program a codegen produced: the toolchain's per-chip
routing tables and chip links, and for each kernel core the exact config region
bytes the toolchain generated for it.

The program's fields read here: ``chips``, ``links``, ``routing_tables``, ``cores``,
``in_features``, ``out_features``, ``n_slots`` and the live IO ends ``inputs`` and ``output``
(:class:`~tvm_spinn.program.InputEnd`, :class:`~tvm_spinn.program.OutputEnd`).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Dict, Optional, Tuple

import numpy as np

from .._native import emulator_library
from ..errors import EmulatorError, LostSamplesError
from ..progress import interruptible
from ..program import BoardProgram
from ..tiling import resources as res
from . import pacing, replicas, timing
from .timing import TimedRun

N_COUNTERS = 12  # spinn_counters_t
COUNTER_NAMES = ("packets_in", "packets_out", "computes", "outputs", "blocks", "macs_lo", "macs_hi", "dropped",
                 "saturated", "rx_general", "rx_lookups", "rx_scanned")
LINKS = 6
HOST_STREAMS = 8  # spinn_emulator.h SPINN_TM_MAX_HOSTS: host-in streams (one per board Ethernet)

_u32p = ctypes.POINTER(ctypes.c_uint32)
_i32p = ctypes.POINTER(ctypes.c_int32)
_i16p = ctypes.POINTER(ctypes.c_int16)
_u64p = ctypes.POINTER(ctypes.c_uint64)
_u8p = ctypes.POINTER(ctypes.c_uint8)
SLOT_COUNTER_NAMES = ("markers_in", "released", "lost_out")  # spinn_slots_t after its lost bits


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    if getattr(lib, "_spinn_declared", False):
        return lib
    lib.spinn_emu_create.restype = ctypes.c_void_p
    lib.spinn_emu_create.argtypes = [ctypes.c_uint32, _i32p, _u32p, _u32p]
    lib.spinn_emu_destroy.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_add_core.restype = ctypes.c_int32
    lib.spinn_emu_add_core.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                       _u32p, ctypes.c_uint32]
    lib.spinn_emu_set_input_packing.restype = ctypes.c_int
    lib.spinn_emu_set_input_packing.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.spinn_emu_set_input.restype = ctypes.c_int
    lib.spinn_emu_set_input.argtypes = [ctypes.c_void_p] + [ctypes.c_uint32] * 4
    for name in ("spinn_emu_set_input_tensor", "spinn_emu_add_input_tensor"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p] + [ctypes.c_uint32] * 8
    for name in ("spinn_emu_set_output", "spinn_emu_set_output_trx"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, _u32p,
                                       ctypes.c_uint32, ctypes.c_uint32]
    lib.spinn_emu_core_packet.restype = ctypes.c_int32
    lib.spinn_emu_core_packet.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                          _u32p, ctypes.c_uint32]
    lib.spinn_emu_run.restype = ctypes.c_int
    lib.spinn_emu_run.argtypes = [ctypes.c_void_p, _i16p, ctypes.c_uint32, _i16p, ctypes.c_uint32, _u8p, _u8p]
    lib.spinn_emu_set_copies.restype = ctypes.c_int
    lib.spinn_emu_set_copies.argtypes = [ctypes.c_void_p, ctypes.c_uint32, _u32p, ctypes.c_uint32]
    lib.spinn_emu_injected.restype = ctypes.c_uint64
    lib.spinn_emu_injected.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_cancel.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.spinn_emu_progress.restype = ctypes.c_uint32
    lib.spinn_emu_progress.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_drop_packet.restype = ctypes.c_int
    lib.spinn_emu_drop_packet.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.spinn_emu_stop_core.restype = ctypes.c_int
    lib.spinn_emu_stop_core.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
    lib.spinn_emu_fault_counts.argtypes = [ctypes.c_void_p, _u64p]
    lib.spinn_emu_core_slots.restype = ctypes.c_int
    lib.spinn_emu_core_slots.argtypes = [ctypes.c_void_p, ctypes.c_uint32, _u32p]
    lib.spinn_emu_set_output_raw.restype = ctypes.c_int
    lib.spinn_emu_set_output_raw.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.spinn_emu_inject.restype = ctypes.c_int
    lib.spinn_emu_inject.argtypes = [ctypes.c_void_p] + [ctypes.c_uint32] * 4
    lib.spinn_emu_drain.restype = ctypes.c_int64
    lib.spinn_emu_drain.argtypes = [ctypes.c_void_p, _u32p, ctypes.c_uint32]
    lib.spinn_emu_release.restype = ctypes.c_uint32
    lib.spinn_emu_release.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_encode.restype = ctypes.c_int64
    lib.spinn_emu_encode.argtypes = [ctypes.c_void_p, _i16p, ctypes.c_uint32, ctypes.c_uint32, _u32p, _u32p, _u8p,
                                     ctypes.c_uint32]
    lib.spinn_emu_decode.restype = ctypes.c_int32
    lib.spinn_emu_decode.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                     ctypes.c_uint32, _i16p, _u32p, _u8p]
    lib.spinn_emu_set_lost_bit.restype = ctypes.c_int
    lib.spinn_emu_set_lost_bit.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    lib.spinn_emu_error.restype = ctypes.c_char_p
    lib.spinn_emu_error.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_core_counters.argtypes = [ctypes.c_void_p, ctypes.c_uint32, _u32p]
    lib.spinn_emu_router_counters.argtypes = [ctypes.c_void_p, _u64p, _u64p]
    lib.spinn_emu_reset_counters.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_set_timing.restype = ctypes.c_int
    lib.spinn_emu_set_timing.argtypes = [ctypes.c_void_p, _u64p, ctypes.c_uint32]
    lib.spinn_emu_set_core_cost.restype = ctypes.c_int
    lib.spinn_emu_set_core_cost.argtypes = [ctypes.c_void_p, ctypes.c_uint32, _u64p, ctypes.c_uint32]
    lib.spinn_emu_set_sample_times.argtypes = [ctypes.c_void_p, _u64p, _u64p]
    lib.spinn_emu_timing.argtypes = [ctypes.c_void_p, _u64p]
    lib.spinn_emu_core_timing.restype = ctypes.c_int
    lib.spinn_emu_core_timing.argtypes = [ctypes.c_void_p, ctypes.c_uint32, _u64p]
    lib.spinn_emu_fabric_timing.argtypes = [ctypes.c_void_p, _u64p, _u64p, _u64p]
    lib.spinn_emu_set_board_links.restype = ctypes.c_int
    lib.spinn_emu_set_board_links.argtypes = [ctypes.c_void_p, _i32p, ctypes.c_uint32]
    lib.spinn_emu_board_link_timing.argtypes = [ctypes.c_void_p, _u64p]
    lib.spinn_emu_set_input_hosts.restype = ctypes.c_int
    lib.spinn_emu_set_input_hosts.argtypes = [ctypes.c_void_p, _u32p, ctypes.c_uint32]
    lib.spinn_emu_host_in_timing.argtypes = [ctypes.c_void_p, _u64p]
    lib._spinn_declared = True
    return lib


TIMING_ENV = "TVM_SPINN_TIMING"
_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def timing_default() -> bool:
    """Timed emulation unless TVM_SPINN_TIMING says 0/off/false/no (unset or empty: on).

    Raises EmulatorError for any other value, naming the ones it takes."""
    value = os.environ.get(TIMING_ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON or value == "":
        return True
    raise EmulatorError(f"{TIMING_ENV}={os.environ[TIMING_ENV]!r}: use one of {', '.join(_ON + _OFF)} "
                        "(timed emulation on or off)")


def _ptr(a: np.ndarray, ptype):
    return a.ctypes.data_as(ptype)


class EmulatedBoard:
    """A SpiNNaker board emulated on the host, holding one program.

    program: a :class:`~tvm_spinn.program.BoardProgram` (chips, links, routing tables,
    kernel cores with their config regions, live IO ends).
    """

    _in_order: Optional[np.ndarray] = None  # see _live_io

    def __init__(self, program: BoardProgram, ubsan: bool = False, with_cores: bool = True,
                 timed: Optional[bool] = None, host_mbps: Optional[float] = None) -> None:
        self._program, self._host_mbps = program, host_mbps  # None: the program's pace (runtime.pacing)
        self._fabric(program.chips, program.links, program.routing_tables if with_cores else {}, ubsan)
        if with_cores:
            for core in program.cores:
                self._add_core(core.label, core.placement, core.kind, core.config, core.lost_bit)
        self._live_io(program)
        if with_cores:
            for i, core in enumerate(program.cores):
                cost = timing.core_cost_ps(core.kind, core.config, core.send_gap, core.send_phase)
                if self._lib.spinn_emu_set_core_cost(self._emu, i, _ptr(cost, _u64p), len(cost)) != 0:
                    raise EmulatorError(f"core {core.label}: cannot set its cycle costs")
            self._gatherer_chip = tuple(program.output.placement[:2])
            self._ethernet_chips = timing.ethernet_chips(program.board)
            serial, self._board_link_names = timing.board_links(res.board_named(program.board), program.chips,
                                                                program.links)
            if self._lib.spinn_emu_set_board_links(self._emu, _ptr(serial, _i32p), len(self._board_link_names)) != 0:
                raise EmulatorError("could not set the board-to-board links (out of memory)")
            # each input through its own board's Ethernet (one paced host-in stream per board)
            hosts, self._host_names = timing.input_hosts(res.board_named(program.board),
                                                         [tuple(inp.chip) for inp in program.inputs])
            if self._lib.spinn_emu_set_input_hosts(self._emu, _ptr(hosts, _u32p), len(hosts)) != 0:
                raise EmulatorError(f"cannot set the host-in streams {hosts.tolist()} of the inputs")
            self._timed_setting = timed
            self._apply_timing()

    @classmethod
    def codec(cls, program: BoardProgram) -> "EmulatedBoard":
        """The live IO codec of a program's real-board run: no cores, no routes, only its
        input key layouts (:meth:`encode`) and its output receive table (:meth:`decode`),
        the very code the emulator's own host ends use."""
        return cls(program, with_cores=False)

    @classmethod
    def from_cores(cls, chips, links, routing_tables, cores, gatherer) -> "EmulatedBoard":
        """An emulated board as a board double loads it: the machine (chips, links
        (x, y, link) -> (x2, y2)), the routing tables as loaded ((x, y) -> (n, 3) uint32
        key, mask, route word), the kernel cores as loaded ((label, (x, y, p), kind,
        config words, lost-marker key bit)) and the live packet gatherer's core (x, y, p),
        whose packets are captured raw (:meth:`drain`) rather than decoded."""
        self = cls.__new__(cls)
        self._fabric(chips, links, routing_tables, False)
        for label, placement, kind, config, lost_bit in cores:
            self._add_core(label, placement, kind, config, lost_bit)
        x, y, p = gatherer
        if self._lib.spinn_emu_set_output_raw(self._emu, self.chip_index[(x, y)], p) != 0:
            raise EmulatorError(f"live packet gatherer core {gatherer} is not on the machine")
        self.n_slots = 0
        return self

    def _fabric(self, chips, links_by_chip, routing_tables, ubsan: bool) -> None:
        self._lib = _declare(emulator_library(ubsan))
        self.chip_index: Dict[Tuple[int, int], int] = {tuple(c): i for i, c in enumerate(chips)}
        n = len(chips)
        links = np.full(n * LINKS, -1, np.int32)
        for (x, y, link), (x2, y2) in links_by_chip.items():
            links[self.chip_index[(x, y)] * LINKS + link] = self.chip_index[(x2, y2)]
        tables = [np.asarray(routing_tables.get(tuple(c), np.zeros((0, 3))), np.uint32).reshape(-1, 3)
                  for c in chips]
        offsets = np.zeros(n + 1, np.uint32)
        offsets[1:] = np.cumsum([len(t) for t in tables])
        entries = np.ascontiguousarray(np.concatenate(tables) if tables else np.zeros((0, 3), np.uint32))
        self._emu = self._lib.spinn_emu_create(n, _ptr(links, _i32p), _ptr(offsets, _u32p),
                                               _ptr(entries, _u32p))
        if not self._emu:
            raise EmulatorError("could not create the emulator (out of memory)")
        self.core_labels = []
        self.timed = False
        self.last_timed: Optional[TimedRun] = None

    def _add_core(self, label: str, placement, kind: int, config, lost_bit: int = 0) -> None:
        cfg = np.ascontiguousarray(config, np.uint32)
        x, y, p = placement
        idx = self._lib.spinn_emu_add_core(self._emu, self.chip_index[(x, y)], p, kind, _ptr(cfg, _u32p), len(cfg))
        if idx < 0:
            raise EmulatorError(f"core {label}: {self._error()}")
        self._lib.spinn_emu_set_lost_bit(self._emu, idx, int(lost_bit))
        self.core_labels.append(label)

    def _live_io(self, program: BoardProgram) -> None:
        out = program.output
        # per sample; the board takes `replicas` samples at a time (runtime.replicas)
        self.in_features, self.out_features = int(program.in_features), int(program.out_features)
        self.replicas = max(1, int(program.replicas))
        n_in, n_out = self.replicas * self.in_features, self.replicas * self.out_features
        # a graph input cut into blocks (one live input each), copies: the values in their order
        self._in_order = program.input_gather()
        if len(program.inputs) == 1 and program.inputs[0].shape is None:  # a plain vector
            inp = program.inputs[0]
            rc = self._lib.spinn_emu_set_input(self._emu, self.chip_index[tuple(inp.chip)], inp.key, inp.slot_shift,
                                               n_in)
        else:
            shapes = [tuple(int(v) for v in inp.shape or ()) for inp in program.inputs]
            if any(len(s) != 3 for s in shapes) or sum(int(np.prod(s)) for s in shapes) != n_in:
                raise EmulatorError(f"input shapes {shapes} do not hold {self.replicas} x in_features={self.in_features}")
            rc = 0
            for k, (inp, (c, h, w)) in enumerate(zip(program.inputs, shapes)):
                add = self._lib.spinn_emu_add_input_tensor if k else self._lib.spinn_emu_set_input_tensor
                rc = rc or add(self._emu, self.chip_index[tuple(inp.chip)], inp.key, inp.slot_shift, inp.c_shift,
                               inp.h_shift, c, h, w)
        for k, inp in enumerate(program.inputs):  # 8-bit input: four values a packet
            rc = rc or (inp.packing and self._lib.spinn_emu_set_input_packing(self._emu, k, inp.packing))
        if rc != 0:
            raise EmulatorError("an input's key layout or packing is invalid (or more than 16 inputs)")
        # which copy each input feeds: a partial group sends only its live copies' inputs
        copy_of = np.ascontiguousarray([inp.replica for inp in program.inputs], np.uint32)
        if self._lib.spinn_emu_set_copies(self._emu, self.replicas, _ptr(copy_of, _u32p), len(copy_of)) != 0:
            raise EmulatorError(f"the inputs' copies {copy_of.tolist()} do not fit replicas={self.replicas}")
        rx = np.ascontiguousarray(out.rx, np.uint32).reshape(-1)
        x, y, p = out.placement
        if out.trx:
            rc = self._lib.spinn_emu_set_output_trx(self._emu, self.chip_index[(x, y)], p, _ptr(rx, _u32p),
                                                    len(rx) // 16, n_out)
        else:
            rc = self._lib.spinn_emu_set_output(self._emu, self.chip_index[(x, y)], p, _ptr(rx, _u32p),
                                                len(rx) // 5, n_out)
        if rc != 0:
            raise EmulatorError("the output gatherer's receive table is invalid")
        self._rx_keepalive = rx
        self.n_slots = program.n_slots

    def _error(self) -> str:
        return self._lib.spinn_emu_error(self._emu).decode()

    def run(self, x_q: np.ndarray) -> np.ndarray:
        """Stream int16 samples (n, in_features) through the board; int16 (n, out_features).

        A sample is every input's values, c-major, one input after the other (a single
        tensor input may also be given as (n, C, H, W)); the output is every distinct
        result, flattened c-major, one after the other (BoardProgram.result_offsets).

        Raises LostSamplesError (with the good rows and the lost sample indices) when
        samples were lost on the way (only with injected faults: the emulator itself
        loses nothing), EmulatorError for anything else."""
        x_q = np.asarray(x_q, np.int16)
        n_samples = x_q.shape[0]
        x_q = np.ascontiguousarray(x_q.reshape(n_samples, int(np.prod(x_q.shape[1:], dtype=np.int64))))
        if n_samples and x_q.shape[1] != self.in_features:
            raise EmulatorError(f"samples have {x_q.shape[1]} values, the program takes {self.in_features}")
        live = replicas.live_copies(n_samples, self.replicas)  # the last group may be partial
        x_q = replicas.group(x_q, self.replicas)  # one sample per copy of the function at a time
        n = x_q.shape[0]
        if self._in_order is not None:
            x_q = np.ascontiguousarray(x_q[:, self._in_order])
        y = np.zeros((n, self.replicas * self.out_features), np.int16)
        lost = np.zeros(max(n, 1), np.uint8)
        t_start, t_done = np.zeros(max(n, 1), np.uint64), np.zeros(max(n, 1), np.uint64)
        self.last_timed = None
        self._apply_timing()
        if self.timed:
            self._lib.spinn_emu_set_sample_times(self._emu, _ptr(t_start, _u64p), _ptr(t_done, _u64p))
        rc = self._stream(x_q, y, lost, live) if n else 0
        if rc != 0:
            raise EmulatorError(self._error())
        if self.timed and n:
            self.last_timed = self._timed_run(n, t_start[:n], t_done[:n], n_samples)  # per sample, not group
        y = replicas.ungroup(y, self.replicas, n_samples)
        if lost[:n].any():
            raise LostSamplesError(replicas.lost_samples(np.flatnonzero(lost[:n]).tolist(), self.replicas, n_samples),
                                   n_samples, y, "on the emulated board")
        return y

    def _stream(self, x_q: np.ndarray, y: np.ndarray, lost: np.ndarray, live: np.ndarray) -> int:
        """spinn_emu_run in a helper thread (live: uint8 per group, the copies carrying a
        sample): Ctrl-C cancels it (the samples in flight drain away, so the board is ready
        for the next run) and raises KeyboardInterrupt."""
        lib, emu, n = self._lib, self._emu, x_q.shape[0]
        live = np.ascontiguousarray(live, np.uint8)
        lib.spinn_emu_cancel(emu, 0)
        return interruptible(
            lambda: lib.spinn_emu_run(emu, _ptr(x_q, _i16p), n, _ptr(y, _i16p), self.n_slots, _ptr(lost, _u8p),
                                      _ptr(live, _u8p)),
            lambda: lib.spinn_emu_cancel(emu, 1), lambda: lib.spinn_emu_progress(emu), n, "emulated board")

    @classmethod
    @contextlib.contextmanager
    def recording(cls):
        """Within the block, every run of every emulated board is recorded: yields a list that
        gets (board, int16 input, int16 output) per run (tests, benchmarks' exactness checks)."""
        calls = []
        original = cls.run

        def run(self, x_q):
            y_q = original(self, x_q)
            calls.append((self, np.array(x_q), np.array(y_q)))
            return y_q

        cls.run = run
        try:
            yield calls
        finally:
            cls.run = original

    # -- timed emulation (runtime/timing.py) ----------------------------------------------
    def set_timed(self, on: Optional[bool]) -> None:
        """Timed emulation on or off for the next runs (see tvm_spinn.runtime.timing); None:
        as TVM_SPINN_TIMING says at each run (the default)."""
        if not hasattr(self, "_gatherer_chip"):
            raise EmulatorError("timed emulation needs a board built from a program with its cores")
        self._timed_setting = on
        self._apply_timing()

    def _apply_timing(self) -> None:
        """Timing on or off and its figures (the host link's rate: TVM_SPINN_LINK_MBPS if set, else
        the program's pace, runtime.pacing) as set now: read before every run, so a changed
        setting takes effect at the next call."""
        if not hasattr(self, "_gatherer_chip"):
            return
        on = timing_default() if self._timed_setting is None else bool(self._timed_setting)
        mbps = self._host_mbps
        if mbps is None and on:
            mbps = pacing.host_mbps(self._program, lambda rate: EmulatedBoard(self._program, timed=True, host_mbps=rate))
        p = timing.params(self._gatherer_chip, on, self._ethernet_chips, mbps)
        self._lib.spinn_emu_set_timing(self._emu, _ptr(p, _u64p), len(p))
        self.timed = on

    def _timed_run(self, n: int, t_start: np.ndarray, t_done: np.ndarray, n_samples: int) -> TimedRun:
        totals = np.zeros(14, np.uint64)
        self._lib.spinn_emu_timing(self._emu, _ptr(totals, _u64p))
        core_busy, core_late, core_ring = {}, {}, {}
        out = np.zeros(4, np.uint64)
        for i, label in enumerate(self.core_labels):
            self._lib.spinn_emu_core_timing(self._emu, i, _ptr(out, _u64p))
            core_busy[label], core_late[label], core_ring[label] = float(out[0]), int(out[1]), int(out[2])
        n_chips = len(self.chip_index)
        router, links, late = np.zeros(n_chips, np.uint64), np.zeros(n_chips * LINKS, np.uint64), \
            np.zeros(n_chips * LINKS, np.uint64)
        self._lib.spinn_emu_fabric_timing(self._emu, _ptr(router, _u64p), _ptr(links, _u64p), _ptr(late, _u64p))
        names = {i: f"{x},{y}" for (x, y), i in self.chip_index.items()}
        link_busy = {f"{names[i // LINKS]}:{i % LINKS}": float(v) for i, v in enumerate(links) if v}
        router_busy = {names[i]: float(v) for i, v in enumerate(router) if v}
        if getattr(self, "_board_link_names", None):
            serial = np.zeros(len(self._board_link_names), np.uint64)
            self._lib.spinn_emu_board_link_timing(self._emu, _ptr(serial, _u64p))
            link_busy.update({name: float(v) for name, v in zip(self._board_link_names, serial) if v})
        host_in = None
        if getattr(self, "_host_names", None):
            streams = np.zeros(HOST_STREAMS, np.uint64)
            self._lib.spinn_emu_host_in_timing(self._emu, _ptr(streams, _u64p))
            host_in = {name: float(v) for name, v in zip(self._host_names, streams)}
        return timing.summarise(n, t_start, t_done, totals, core_busy, core_late, core_ring, link_busy,
                                int(late.sum()), router_busy, self.n_slots, self.replicas, n_samples, host_in)

    # -- fault injection (tests, the board double) --------------------------------------
    def drop_packet(self, nth: Optional[int]) -> None:
        """The router drops the ``nth`` multicast packet routed from now (0 = the next; several
        may be pending); None clears every pending drop."""
        nth = 2 ** 64 - 1 if nth is None else int(nth)
        if not 0 <= nth < 2 ** 64 or self._lib.spinn_emu_drop_packet(self._emu, nth) != 0:
            raise EmulatorError(f"cannot drop packet {nth}: at most 64 drops may be pending")

    def stop_core(self, core, stopped: bool = True) -> None:
        """A kernel core (label or index) stops taking packets, as a crashed core would."""
        idx = self.core_labels.index(core) if isinstance(core, str) else int(core)
        if self._lib.spinn_emu_stop_core(self._emu, idx, int(stopped)) != 0:
            raise EmulatorError(f"no core {core!r}")

    def fault_counts(self) -> Dict[str, int]:
        """Packets routed, dropped by an injected fault, and lost at stopped cores."""
        out = np.zeros(3, np.uint64)
        self._lib.spinn_emu_fault_counts(self._emu, _ptr(out, _u64p))
        return dict(zip(("routed", "dropped", "at_stopped_cores"), (int(v) for v in out)))

    def board_counters(self) -> Dict[str, int]:
        """Board-level provenance: packets the fabric lost to injected faults, and the
        packets the host injected (counted: a partial group of copies sends only its live
        copies' packets)."""
        faults = self.fault_counts()
        return {"fabric_dropped": faults["dropped"], "lost_at_stopped_cores": faults["at_stopped_cores"],
                "packets_injected": int(self._lib.spinn_emu_injected(self._emu))}

    # -- raw streaming (the board double) and the live IO codec ---------------------------
    def inject(self, chip, key: int, payload: int, marker: bool = False) -> None:
        """One multicast packet enters the router of ``chip`` (x, y)."""
        if self._lib.spinn_emu_inject(self._emu, self.chip_index[tuple(chip)], int(key) & 0xFFFFFFFF,
                                      int(payload) & 0xFFFFFFFF, int(marker)) != 0:
            raise EmulatorError(f"no chip {chip}")

    def drain(self) -> np.ndarray:
        """Route until no packet is in flight; uint32 (k, 3) (key, payload, marker) of the
        packets that reached the live packet gatherer (from_cores boards only)."""
        cap = 1 << 16
        while True:
            out = np.zeros(3 * cap, np.uint32)
            n = self._lib.spinn_emu_drain(self._emu, _ptr(out, _u32p), cap)
            if n < 0:
                raise EmulatorError(self._error())
            if n <= cap:
                return out[:3 * n].reshape(n, 3)
            raise EmulatorError(f"more than {cap} packets reached the gatherer in one drain")

    def release(self) -> int:
        """Fire every core's lost-sample timeout (spinn_slots.h); returns the slots released."""
        return int(self._lib.spinn_emu_release(self._emu))

    def encode(self, x_q: np.ndarray, slot: int, live: Optional[int] = None):
        """The multicast packets of one int16 sample (replicas * in_features,: one per copy)
        in ``slot``: uint32 keys, uint32 payloads and the input (0..) each belongs to, in
        sending order (an 8-bit input's values, in its range as the executor quantised them,
        four a packet). live: the copies carrying a sample (the first ``live``; None: all);
        the others' inputs send nothing."""
        x_q = np.ascontiguousarray(x_q, np.int16).reshape(-1)
        if x_q.size != self.replicas * self.in_features:
            raise EmulatorError(f"a sample has {x_q.size} values, the program takes {self.replicas} x "
                                f"{self.in_features} (one sample per copy)")
        if self._in_order is not None:
            x_q = np.ascontiguousarray(x_q[self._in_order])
        cap = x_q.size // 2 + 16 * 64  # int16 pairs, or fewer 8-bit quads
        keys, payloads, which = np.zeros(cap, np.uint32), np.zeros(cap, np.uint32), np.zeros(cap, np.uint8)
        live = self.replicas if live is None else int(live)
        if not 1 <= live <= self.replicas:
            raise EmulatorError(f"a sample carries {live} copies, the program has {self.replicas}")
        n = self._lib.spinn_emu_encode(self._emu, _ptr(x_q, _i16p), int(slot), live, _ptr(keys, _u32p),
                                       _ptr(payloads, _u32p), _ptr(which, _u8p), cap)
        if n < 0 or n > cap:
            raise EmulatorError(f"cannot encode a sample in slot {slot}")
        return keys[:n], payloads[:n], which[:n]

    def decode(self, key: int, payload: int, marker: bool, bufs: np.ndarray, counts: np.ndarray,
               lost: np.ndarray) -> int:
        """Decode one output packet into bufs (16 x out_features int16), counts (16 uint32) and
        lost (16 uint8) per slot. Returns the slot, 16 for values outside the output, -1 for
        a key the output does not own."""
        return int(self._lib.spinn_emu_decode(self._emu, int(key) & 0xFFFFFFFF, int(payload) & 0xFFFFFFFF,
                                              int(marker), self.n_slots, _ptr(bufs, _i16p), _ptr(counts, _u32p),
                                              _ptr(lost, _u8p)))

    def core_packet(self, core, key: int, payload: int, cap: int = 1 << 16) -> np.ndarray:
        """Test hook: hand one packet straight to a kernel core (by label or index); it
        receives it and computes what became ready. Returns the packets it sent,
        uint32 (k, 2) of (key, payload), captured instead of routed."""
        idx = self.core_labels.index(core) if isinstance(core, str) else int(core)
        sent = np.zeros(2 * cap, np.uint32)
        n = self._lib.spinn_emu_core_packet(self._emu, idx, int(key) & 0xFFFFFFFF, int(payload) & 0xFFFFFFFF,
                                            _ptr(sent, _u32p), cap)
        if n < 0:
            raise EmulatorError(f"core {core}: packet delivery failed (bad core, send error or > {cap} packets)")
        return sent[:2 * n].reshape(n, 2)

    def reset_counters(self) -> None:
        self._lib.spinn_emu_reset_counters(self._emu)

    def core_counters(self) -> Dict[str, Dict[str, int]]:
        out = np.zeros(N_COUNTERS, np.uint32)
        slots = np.zeros(4, np.uint32)
        result = {}
        for i, label in enumerate(self.core_labels):
            self._lib.spinn_emu_core_counters(self._emu, i, _ptr(out, _u32p))
            c = dict(zip(COUNTER_NAMES, (int(v) for v in out)))
            c["macs"] = c.pop("macs_lo") + (c.pop("macs_hi") << 32)
            self._lib.spinn_emu_core_slots(self._emu, i, _ptr(slots, _u32p))
            c.update(zip(SLOT_COUNTER_NAMES, (int(v) for v in slots[1:])))
            result[label] = c
        return result

    def router_counters(self) -> Tuple[np.ndarray, np.ndarray]:
        """Packets routed by each chip (n_chips,) and sent on each link (n_chips, 6)."""
        n = len(self.chip_index)
        chips, links = np.zeros(n, np.uint64), np.zeros(n * LINKS, np.uint64)
        self._lib.spinn_emu_router_counters(self._emu, _ptr(chips, _u64p), _ptr(links, _u64p))
        return chips, links.reshape(n, LINKS)

    def __del__(self) -> None:
        emu = getattr(self, "_emu", None)
        if emu:
            self._lib.spinn_emu_destroy(emu)
            self._emu = None
