#!/usr/bin/env python3
"""What the emulator itself costs, timing on and off, and a fingerprint of everything a run
gives, so that a change to the emulator can show it is faster and changes nothing.

    python benchmarks/bench_emulator.py [--models lenet5 resnet8] [--batch 256] [--repeat 3]
                                        [--lib PATH] [--json PATH]

Per model (built and fed as benchmarks/bench_board.py does: seeded N(0, 1) inputs), each
emulated board's int16 batch is run again and again on the board alone (no TVM around it):

- MEASURED on this host: CPU seconds (``time.process_time``, every thread of the process)
  and wall seconds of ``EmulatedBoard.run``, the best of ``--repeat`` runs (the machine may
  be shared: the best is the least disturbed), timing off and on, and their ratio;
- a fingerprint (16 hex digits of a SHA-256) per mode of the outputs and the counted
  figures (per chip and per link packets, per core counters, fault counts), and with timing
  on of every timed figure: ``TimedRun``, the emulator's totals, per-core busy / late /
  ring-full / timed-out, per-router and per-link busy and late counts, board-to-board and
  host-in streams, and each sample's start and done times. The run fails if repeats differ.

``--lib PATH`` runs another build of the emulator library (e.g. the one before a change,
copied aside), so two builds can be timed back to back on the same models; their
fingerprints must then be equal.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.bench_board import MODELS  # noqa: E402


def _u64(n: int) -> np.ndarray:
    return np.zeros(n, np.uint64)


def fingerprint(board, y: np.ndarray, times: Optional[Sequence[np.ndarray]]) -> str:
    """16 hex digits over y, the board's counted figures and (times: the per-sample start and
    done times of a timed run) every timed figure of its last run."""
    from tvm_spinn.runtime.emulator import LINKS, _ptr, _u64p

    h = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    for a in board.router_counters():
        h.update(a.tobytes())
    h.update(json.dumps(board.core_counters(), sort_keys=True, default=str).encode())
    faults = {k: v for k, v in board.fault_counts().items() if k != "routed"}  # routed counts on across runs
    h.update(json.dumps(faults, sort_keys=True).encode())
    if times is None:
        return h.hexdigest()[:16]
    lib, emu = board._lib, board._emu
    h.update(json.dumps(board.last_timed.as_dict(), sort_keys=True).encode())
    arrays = [_u64(14)]
    lib.spinn_emu_timing(emu, _ptr(arrays[0], _u64p))
    for i in range(len(board.core_labels)):
        arrays.append(_u64(4))
        lib.spinn_emu_core_timing(emu, i, _ptr(arrays[-1], _u64p))
    n = len(board.chip_index)
    fabric = [_u64(n), _u64(n * LINKS), _u64(n * LINKS)]
    lib.spinn_emu_fabric_timing(emu, *(_ptr(a, _u64p) for a in fabric))
    arrays += fabric
    if getattr(board, "_board_link_names", None):
        arrays.append(_u64(len(board._board_link_names)))
        lib.spinn_emu_board_link_timing(emu, _ptr(arrays[-1], _u64p))
    for a in list(arrays) + list(times):
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def capture(name: str, batch: int) -> List[Any]:
    """(board program, int16 batch) of each emulated board of the model's call on the batch."""
    import tvm
    from tvm import relax

    import tvm_spinn
    from tvm_spinn.runtime import executors
    from tvm_spinn.runtime.emulator import EmulatedBoard

    _model, x, calib, mod = common.model_and_data(MODELS[name], batch)
    vm = relax.VirtualMachine(tvm_spinn.build(mod, calibration=calib), tvm.cpu())
    with EmulatedBoard.recording() as calls:
        vm["main"](tvm.runtime.tensor(x))
    program = {id(e.board): e.program for e in executors(vm)}
    return [(program[id(board)], x_q) for board, x_q, _ in calls]


def bench(name: str, batch: int, repeat: int) -> Dict[str, Any]:
    from tvm_spinn.runtime.emulator import EmulatedBoard

    boards = [(EmulatedBoard(program), x_q) for program, x_q in capture(name, batch)]
    row: Dict[str, Any] = {"model": name, "label": MODELS[name].label, "batch": batch}
    for mode in ("off", "on"):
        cpu, wall, prints = [], [], set()
        for _ in range(repeat):
            c = w = 0.0
            h = hashlib.sha256()
            for board, x_q in boards:
                board.set_timed(mode == "on")
                board.reset_counters()
                times: List[np.ndarray] = []
                original = board._timed_run  # keep the per-sample times it is given

                def timed_run(n, t_start, t_done, n_samples, original=original, times=times):
                    times += [t_start.copy(), t_done.copy()]
                    return original(n, t_start, t_done, n_samples)

                board._timed_run = timed_run
                c0, w0 = time.process_time(), time.perf_counter()
                try:
                    y = board.run(x_q)
                finally:
                    del board._timed_run
                c, w = c + time.process_time() - c0, w + time.perf_counter() - w0
                h.update(fingerprint(board, y, times if mode == "on" else None).encode())
            cpu.append(c)
            wall.append(w)
            prints.add(h.hexdigest()[:16])
        if len(prints) != 1:
            raise SystemExit(f"{name}, timing {mode}: repeats gave different results {sorted(prints)}")
        row.update({f"cpu_{mode}_s": min(cpu), f"wall_{mode}_s": min(wall), f"fingerprint_{mode}": prints.pop()})
    row["on_off"] = row["cpu_on_s"] / row["cpu_off_s"]
    return row


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = common.arg_parser(__doc__.split("\n")[0], MODELS, ("lenet5", "resnet8"), 256)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the best counts (default 3)")
    parser.add_argument("--lib", type=Path, metavar="PATH", help="another build of libtvm_spinn_emu.so to run")
    args = parser.parse_args(argv)
    if args.lib is not None:
        from tvm_spinn import _native

        _native._emu_libs[False] = ctypes.CDLL(str(args.lib.resolve()))
    rows = []
    print(f"{'model':10s} {'off cpu s':>9s} {'on cpu s':>9s} {'on/off':>7s}  fingerprint off / on")
    for name in common.model_names(args, MODELS):
        r = bench(name, args.batch, args.repeat)
        rows.append(r)
        print(f"{name:10s} {r['cpu_off_s']:9.3f} {r['cpu_on_s']:9.3f} {r['on_off']:6.2f}x  "
              f"{r['fingerprint_off']} / {r['fingerprint_on']}", flush=True)
    print(f"MEASURED on this host: CPU seconds of EmulatedBoard.run, best of {args.repeat}, batch {args.batch}.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
