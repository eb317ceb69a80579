"""The emulated board: the C kernels and the packet router of ``c_runtime/`` via ctypes.

The emulator is built from the program a codegen produced: the toolchain's per-chip
routing tables and chip links, and for each kernel core the exact config region
bytes the toolchain generated for it.

The program's fields read here: ``chips``, ``links``, ``routing_tables``, ``cores``,
``in_features``, ``out_features``, ``n_slots`` and the live IO ends ``inputs`` and ``output``
(:class:`~tvm_spinn.program.InputEnd`, :class:`~tvm_spinn.program.OutputEnd`).
"""
from __future__ import annotations

import ctypes
from typing import Dict, Tuple

import numpy as np

from .._native import emulator_library
from ..errors import EmulatorError
from ..program import BoardProgram

N_COUNTERS = 9  # spinn_counters_t
COUNTER_NAMES = ("packets_in", "packets_out", "computes", "outputs", "blocks", "macs_lo", "macs_hi", "dropped",
                 "saturated")
LINKS = 6

_u32p = ctypes.POINTER(ctypes.c_uint32)
_i32p = ctypes.POINTER(ctypes.c_int32)
_i16p = ctypes.POINTER(ctypes.c_int16)
_u64p = ctypes.POINTER(ctypes.c_uint64)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    if getattr(lib, "_spinn_declared", False):
        return lib
    lib.spinn_emu_create.restype = ctypes.c_void_p
    lib.spinn_emu_create.argtypes = [ctypes.c_uint32, _i32p, _u32p, _u32p]
    lib.spinn_emu_destroy.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_add_core.restype = ctypes.c_int32
    lib.spinn_emu_add_core.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                       _u32p, ctypes.c_uint32]
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
    lib.spinn_emu_run.argtypes = [ctypes.c_void_p, _i16p, ctypes.c_uint32, _i16p, ctypes.c_uint32]
    lib.spinn_emu_error.restype = ctypes.c_char_p
    lib.spinn_emu_error.argtypes = [ctypes.c_void_p]
    lib.spinn_emu_core_counters.argtypes = [ctypes.c_void_p, ctypes.c_uint32, _u32p]
    lib.spinn_emu_router_counters.argtypes = [ctypes.c_void_p, _u64p, _u64p]
    lib.spinn_emu_reset_counters.argtypes = [ctypes.c_void_p]
    lib._spinn_declared = True
    return lib


def _ptr(a: np.ndarray, ptype):
    return a.ctypes.data_as(ptype)


class EmulatedBoard:
    """A SpiNNaker board emulated on the host, holding one program.

    program: a :class:`~tvm_spinn.program.BoardProgram` (chips, links, routing tables,
    kernel cores with their config regions, live IO ends).
    """

    def __init__(self, program: BoardProgram, ubsan: bool = False) -> None:
        self._lib = _declare(emulator_library(ubsan))
        chips = program.chips
        self.chip_index: Dict[Tuple[int, int], int] = {tuple(c): i for i, c in enumerate(chips)}
        n = len(chips)
        links = np.full(n * LINKS, -1, np.int32)
        for (x, y, link), (x2, y2) in program.links.items():
            links[self.chip_index[(x, y)] * LINKS + link] = self.chip_index[(x2, y2)]
        tables = [np.asarray(program.routing_tables.get(tuple(c), np.zeros((0, 3))), np.uint32).reshape(-1, 3)
                  for c in chips]
        offsets = np.zeros(n + 1, np.uint32)
        offsets[1:] = np.cumsum([len(t) for t in tables])
        entries = np.ascontiguousarray(np.concatenate(tables) if tables else np.zeros((0, 3), np.uint32))
        self._emu = self._lib.spinn_emu_create(n, _ptr(links, _i32p), _ptr(offsets, _u32p),
                                               _ptr(entries, _u32p))
        if not self._emu:
            raise EmulatorError("could not create the emulator (out of memory)")
        self.core_labels = []
        for core in program.cores:
            cfg = np.ascontiguousarray(core.config, np.uint32)
            x, y, p = core.placement
            idx = self._lib.spinn_emu_add_core(self._emu, self.chip_index[(x, y)], p, core.kind,
                                               _ptr(cfg, _u32p), len(cfg))
            if idx < 0:
                raise EmulatorError(f"core {core.label}: {self._error()}")
            self.core_labels.append(core.label)
        out = program.output
        self.in_features, self.out_features = int(program.in_features), int(program.out_features)
        if len(program.inputs) == 1 and program.inputs[0].shape is None:  # a plain vector
            inp = program.inputs[0]
            rc = self._lib.spinn_emu_set_input(self._emu, self.chip_index[tuple(inp.chip)], inp.key, inp.slot_shift,
                                               self.in_features)
        else:
            shapes = [tuple(int(v) for v in inp.shape or ()) for inp in program.inputs]
            if any(len(s) != 3 for s in shapes) or sum(int(np.prod(s)) for s in shapes) != self.in_features:
                raise EmulatorError(f"input shapes {shapes} do not hold in_features={self.in_features}")
            rc = 0
            for k, (inp, (c, h, w)) in enumerate(zip(program.inputs, shapes)):
                add = self._lib.spinn_emu_add_input_tensor if k else self._lib.spinn_emu_set_input_tensor
                rc = rc or add(self._emu, self.chip_index[tuple(inp.chip)], inp.key, inp.slot_shift, inp.c_shift,
                               inp.h_shift, c, h, w)
        if rc != 0:
            raise EmulatorError("an input's key layout is invalid (or more than 16 inputs)")
        rx = np.ascontiguousarray(out.rx, np.uint32).reshape(-1)
        x, y, p = out.placement
        if out.trx:
            rc = self._lib.spinn_emu_set_output_trx(self._emu, self.chip_index[(x, y)], p, _ptr(rx, _u32p),
                                                    len(rx) // 16, self.out_features)
        else:
            rc = self._lib.spinn_emu_set_output(self._emu, self.chip_index[(x, y)], p, _ptr(rx, _u32p),
                                                len(rx) // 5, self.out_features)
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
        result, flattened c-major, one after the other (BoardProgram.result_offsets)."""
        x_q = np.asarray(x_q, np.int16)
        n = x_q.shape[0]
        x_q = np.ascontiguousarray(x_q.reshape(n, int(np.prod(x_q.shape[1:], dtype=np.int64))))
        if n and x_q.shape[1] != self.in_features:
            raise EmulatorError(f"samples have {x_q.shape[1]} values, the program takes {self.in_features}")
        y = np.zeros((n, self.out_features), np.int16)
        if n and self._lib.spinn_emu_run(self._emu, _ptr(x_q, _i16p), n, _ptr(y, _i16p), self.n_slots) != 0:
            raise EmulatorError(self._error())
        return y

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
        result = {}
        for i, label in enumerate(self.core_labels):
            self._lib.spinn_emu_core_counters(self._emu, i, _ptr(out, _u32p))
            c = dict(zip(COUNTER_NAMES, (int(v) for v in out)))
            c["macs"] = c.pop("macs_lo") + (c.pop("macs_hi") << 32)
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
