"""Helpers shared by the benchmarks (bench_dense.py, bench_cnn.py): one model's measurement,
timing, MAC counting, the board's compute bound, the table, the legend, the CLI and JSON.

A benchmark script declares its models (:class:`ModelSpec`), its table columns and its
footnotes, and calls :func:`main`.

What every row holds (keys of the JSON rows):

- build_seconds: ``tvm_spinn.build`` (partition, int16 calibration, tiling, mapping,
  compile); mapping_seconds: the mapping part of it. Measured.
- llvm_float32_seconds: one ``main`` call of the same Relax module built with
  ``tvm.compile(mod, target="llvm")`` (float32, TVM's default CPU schedules, untuned):
  median of ``repeat`` calls after a full-batch warm-up. Measured.
- spinnaker_call_seconds: one ``main`` call of the SpiNNaker build (host operators,
  quantisation, the board emulator), median of ``repeat`` calls after a warm-up;
  emulator_seconds: the part inside the emulator (``RunStatistics.wall_seconds``). Measured.
- max_abs_diff_vs_llvm: max |SpiNNaker build - llvm float32| over the batch.
- packets_per_inference, cores, routing entries, saturated_inputs,
  macs_per_inference_counted (MACs the emulated kernels did): counted.
- macs_per_inference: conv/dense MACs of the PyTorch model (:func:`count_macs`).
- modelled_*: MODELLED for a SpiNN-5 board (tvm_spinn/runtime/stats.py), not measured.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics as pystats
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_spinn  # noqa: E402
from tvm_spinn import report  # noqa: E402
from tvm_spinn.tiling import resources as res  # noqa: E402
from tvm_spinn.tiling import cycle_model  # noqa: E402

# The board's compute bound: every application core doing nothing but MACs at the modelled rate.
BOARD_MACS_PER_S = res.SPINN_5.app_cores * res.CLOCK_HZ / cycle_model.cost("conv_tile").mac
GOAL_RATIO = 10.0
CALIBRATION_SAMPLES = 256
SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    label: str
    factory: Callable[[], torch.nn.Module]
    input_shape: Tuple[int, ...]  # one sample, without the batch axis
    build_options: Dict[str, Any] = field(default_factory=dict)  # extra tvm_spinn.build arguments


# ----------------------------------------------------------------------------- measuring

def median_wall(fn: Callable[[], Any], repeat: int,
                warmup: Optional[Callable[[], Any]] = None) -> Tuple[float, Any]:
    """(median wall time of ``fn()`` over ``repeat`` runs after one warm-up run, result of the
    last run). The warm-up runs ``warmup()`` if given, else ``fn()``."""
    (warmup or fn)()
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return pystats.median(times), result


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per sample of the model's Linear and Conv layers (every kernel tap
    of every output, padding included), counted with forward hooks on one run of ``x``."""
    total = [0]

    def hook(m: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        per_output = m.in_features if isinstance(m, torch.nn.Linear) else \
            m.in_channels // m.groups * int(np.prod(m.kernel_size))
        total[0] += out[0].numel() * per_output

    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


class _Once(logging.Filter):
    """Let each distinct message through once (tvm_spinn warns on every call that saturates)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


logging.getLogger("tvm_spinn.runtime").addFilter(_Once())


def model_and_data(spec: ModelSpec, batch: int):
    """(model in eval mode, a batch of N(0, 1) inputs, CALIBRATION_SAMPLES more for
    calibration, the Relax module from tvm_spinn.from_torch), all seeded."""
    torch.manual_seed(SEED)
    model = spec.factory().eval()
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((batch,) + spec.input_shape).astype(np.float32)
    calib = rng.standard_normal((CALIBRATION_SAMPLES,) + spec.input_shape).astype(np.float32)
    return model, x, calib, tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))


def bench_model(name: str, spec: ModelSpec, batch: int, repeat: int,
                spinn_warmup_samples: Optional[int] = None) -> Dict[str, Any]:
    """Build ``spec``'s model for SpiNNaker and for llvm and measure both on one batch of
    N(0, 1) inputs (calibration: another CALIBRATION_SAMPLES of them). The SpiNNaker warm-up
    call uses the first ``spinn_warmup_samples`` samples (all if None)."""
    torch.manual_seed(SEED)
    model = spec.factory().eval()
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((batch,) + spec.input_shape).astype(np.float32)
    calib = rng.standard_normal((CALIBRATION_SAMPLES,) + spec.input_shape).astype(np.float32)

    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    t = time.perf_counter()
    ex = tvm_spinn.build(mod, calibration=calib, **spec.build_options)
    build_s = time.perf_counter() - t
    vm = relax.VirtualMachine(ex, tvm.cpu())
    vm_llvm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    x_tvm = tvm.runtime.tensor(x)
    x_warm = x_tvm if spinn_warmup_samples is None or spinn_warmup_samples >= batch else \
        tvm.runtime.tensor(x[:spinn_warmup_samples])

    emulator_times: List[float] = []

    def call_spinn() -> np.ndarray:
        y = vm["main"](x_tvm).numpy()
        emulator_times.append(tvm_spinn.statistics(vm).wall_seconds)
        return y

    llvm_s, y_llvm = median_wall(lambda: vm_llvm["main"](x_tvm).numpy(), repeat)
    spinn_s, y_spinn = median_wall(call_spinn, repeat, warmup=lambda: vm["main"](x_warm))
    emu = tvm_spinn.statistics(vm)  # counts and modelled figures of the last timed call, all functions
    resources = report.model_summary(ex)
    macs = count_macs(model, torch.from_numpy(x))
    return {
        "model": name, "label": spec.label, "batch": batch, "input_shape": list(spec.input_shape),
        "offloaded_functions": resources["functions"],
        "build_seconds": build_s, "mapping_seconds": resources["mapping_seconds"],
        "llvm_float32_seconds": llvm_s, "spinnaker_call_seconds": spinn_s,
        "emulator_seconds": pystats.median(emulator_times),
        "ratio_spinnaker_over_llvm": spinn_s / llvm_s,
        "max_abs_diff_vs_llvm": float(np.abs(y_spinn - y_llvm).max()),
        "packets_per_inference": emu.packets_per_inference, "cores": emu.cores,
        "routing_entries_max_per_chip": resources["routing_entries_max_per_chip"],
        "routing_entries_total": resources["routing_entries_total"],
        "saturated_inputs": emu.saturated_inputs,
        "macs_per_inference": macs, "macs_per_inference_counted": emu.macs / max(1, emu.samples),
        "modelled_latency_s": emu.modelled_latency_s,
        "modelled_throughput_per_s": emu.modelled_throughput_per_s,
        "modelled_host_link_limit_per_s": emu.host_link_limit_per_s,
        "modelled_compute_bound_per_s": BOARD_MACS_PER_S / macs,
        "modelled_compute_bound_latency_s": macs / BOARD_MACS_PER_S,
        "modelled_bottleneck_core": emu.bottleneck_core,
        "modelled_energy_j": emu.modelled_energy_j,
        "modelled_energy_parts_j": dict(emu.modelled_energy_parts_j),
    }


# ----------------------------------------------------------------------------- printing

# Table columns: header -> cell of a row. "*" marks MODELLED figures.
COLUMNS: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "model": lambda r: r["label"],
    "build s": lambda r: f"{r['build_seconds']:.1f}",
    "llvm ms": lambda r: f"{r['llvm_float32_seconds'] * 1e3:.1f}",
    "spinn ms": lambda r: f"{r['spinnaker_call_seconds'] * 1e3:.1f}",
    "emu ms": lambda r: f"{r['emulator_seconds'] * 1e3:.1f}",
    "ratio": lambda r: f"{r['ratio_spinnaker_over_llvm']:.2f}x",
    "max|diff|": lambda r: f"{r['max_abs_diff_vs_llvm']:.3g}",
    "pkts/inf": lambda r: f"{r['packets_per_inference']:.0f}",
    "cores": lambda r: str(r["cores"]),
    "rt/chip": lambda r: str(r["routing_entries_max_per_chip"]),
    "rt total": lambda r: str(r["routing_entries_total"]),
    "MACs/inf": lambda r: f"{r['macs_per_inference']:,}",
    "lat us*": lambda r: f"{r['modelled_latency_s'] * 1e6:.0f}",
    "thru/s*": lambda r: f"{r['modelled_throughput_per_s']:.0f}",
    "link/s*": lambda r: f"{r['modelled_host_link_limit_per_s']:.0f}",
    "bound/s*": lambda r: f"{r['modelled_compute_bound_per_s']:.0f}",
    "bound us*": lambda r: f"{r['modelled_compute_bound_latency_s'] * 1e6:.3g}",
    "use*": lambda r: f"{r['modelled_throughput_per_s'] / r['modelled_compute_bound_per_s']:.1%}",
    "mJ/inf*": lambda r: f"{r['modelled_energy_j'] * 1e3:.3g}",
}


def format_rows(rows: List[Dict[str, Any]], columns: Sequence[str]) -> str:
    return report.table(columns, [[COLUMNS[c](r) for c in columns] for r in rows])


def legend(rows: List[Dict[str, Any]], batch: int, repeat: int, spinn_warmup: str) -> str:
    """The footnote every benchmark table carries: what is measured, counted and modelled."""
    lines = [
        f"batch {batch}; times are wall-clock medians of {repeat} calls after a warm-up "
        f"(measured on this host). ratio = spinn / llvm; goal: within {GOAL_RATIO:.0f}x "
        f"({sum(r['ratio_spinnaker_over_llvm'] <= GOAL_RATIO for r in rows)}/{len(rows)} rows meet it).",
        "spinn = whole VM call of the SpiNNaker build (host ops + quantisation + emulator); "
        f"emu = inside the emulator; spinn warm-up: {spinn_warmup}.",
        "* MODELLED for a SpiNN-5 board, not measured (timed emulation, tvm_spinn/runtime/timing.py): "
        "lat = mean latency of the batch's samples, thru = throughput, "
        "link = limit of the host link alone at the runtime's rate; "
        f"bound = compute bound = {res.SPINN_5.app_cores} cores * {res.CLOCK_HZ / 1e6:.0f} MHz / "
        f"{cycle_model.cost('conv_tile').mac:.1f} cycles per MAC (calibrated conv tile) = "
        f"{BOARD_MACS_PER_S / 1e9:.1f} G MAC/s divided by MACs/inf; "
        "use = thru / bound; mJ/inf = energy per inference by the toolchain's energy figures (spinn_machine: "
        "26.84 W idle board for 1/thru, 0.034 W per core for its modelled cycles, 1 nJ per routed packet).",
        "cores include 2 live IO cores per offloaded function; rt/chip = max routing entries on one chip "
        "(limit 1023).",
    ]
    saturated = [f"{r['label']} {r['saturated_inputs']}" for r in rows if r["saturated_inputs"]]
    if saturated:
        lines.append("input values beyond the calibrated range, saturated to int16 (last call, counted): "
                     + ", ".join(saturated) + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def arg_parser(description: str, models: Dict[str, Any], default_models: Sequence[str],
               default_batch: int) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--models`` (names of ``models``, or all),
    ``--batch`` (samples per call) and ``--json PATH``; a benchmark adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", nargs="+", choices=sorted(models) + ["all"], default=list(default_models),
                        help=f"default: {' '.join(default_models)}; all: {' '.join(models)}")
    parser.add_argument("--batch", type=int, default=default_batch, help=f"samples per call (default {default_batch})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the rows to PATH as JSON")
    return parser


def model_names(args: argparse.Namespace, models: Dict[str, Any]) -> List[str]:
    """The models ``--models`` chose (all of them for "all")."""
    return list(models) if "all" in args.models else list(args.models)


def main(argv: Optional[Sequence[str]], *, description: str, models: Dict[str, ModelSpec],
         default_models: Sequence[str], default_batch: int, default_repeat: int, columns: Sequence[str],
         footnotes: Sequence[str] = (), spinn_warmup_samples: Optional[int] = None) -> int:
    """Parse ``--batch --repeat --models --json``, benchmark the models, print the table and
    its legend (plus ``footnotes``), write the JSON if asked."""
    parser = arg_parser(description, models, default_models, default_batch)
    parser.add_argument("--repeat", type=int, default=default_repeat,
                        help=f"timed runs per measurement (default {default_repeat})")
    args = parser.parse_args(argv)
    names = model_names(args, models)
    warmup = "the full batch" if spinn_warmup_samples is None else \
        f"one call on {min(spinn_warmup_samples, args.batch)} samples"

    start = time.perf_counter()
    rows = []
    for name in names:
        print(f"benchmarking {models[name].label} at batch {args.batch} ...", flush=True)
        rows.append(bench_model(name, models[name], args.batch, args.repeat, spinn_warmup_samples))
    total_s = time.perf_counter() - start
    print()
    print(format_rows(rows, columns))
    print()
    print(legend(rows, args.batch, args.repeat, warmup))
    for note in footnotes:
        print(note)
    print(f"total benchmark time {total_s:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "batch": args.batch, "repeat": args.repeat, "spinnaker_warmup": warmup,
            "board_macs_per_s": BOARD_MACS_PER_S, "goal_ratio": GOAL_RATIO,
            "total_seconds": total_s, "footnotes": list(footnotes), "rows": rows}, indent=2))
        print(f"written to {args.json}")
    return 0


def bit_exact(vm, call) -> bool:
    """Run call() recording every emulated board run; True if each offloaded function's int16
    output equals the numpy integer reference of its program on the same int16 input."""
    from tvm_spinn import integer_reference
    from tvm_spinn.runtime import executors
    from tvm_spinn.runtime.emulator import EmulatedBoard

    with EmulatedBoard.recording() as seen:
        call()
    programs = {id(e.board): e.program for e in executors(vm)}
    return bool(seen) and all(np.array_equal(y_q, integer_reference(programs[id(b)], x_q)) for b, x_q, y_q in seen)


def finish(columns: Sequence[str], cells: Dict[str, Callable[[Dict[str, Any]], str]], rows: List[Dict[str, Any]],
           note: str, start: float, json_path: Optional[Path], **header: Any) -> int:
    """Print the table of ``rows`` (one cell function per column) and ``note``, write the JSON
    (``header`` fields and the rows) if asked; exit code 1 if a row was not bit-exact."""
    print()
    print(report.table(columns, [[cells[c](r) for c in columns] for r in rows]))
    print(f"\n{note} total benchmark time {time.perf_counter() - start:.0f} s")
    if json_path:
        json_path.write_text(json.dumps({**header, "rows": rows}, indent=2, default=str) + "\n")
        print(f"written to {json_path}")
    return 0 if all(r.get("bit_exact", True) for r in rows) else 1

