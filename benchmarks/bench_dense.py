"""Dense (MLP) benchmark: TVM on the CPU (float32, llvm) vs TVM on an emulated SpiNN-5.

    python benchmarks/bench_dense.py [--batch 1000] [--repeat 5] [--json PATH] [--models ...]

Models (random init, fixed seed, inputs ~ N(0, 1)):

- ``mlp784``: MLP 784-300-100-10, relu (the classic MNIST MLP; no softmax).
- ``mlp64``: the thesis' MLP-64: 64 -> 128 -> 128 relu -> 10 softmax (softmax on the host).
- ``board_filling``: the thesis' board-filling MLP: 224 -> 50 relu -> 50 softmax ->
  300 tanh -> 50 sigmoid -> 25 -> 17 softmax (the softmaxes run on the host CPU, so
  the board runs two offloaded functions).

Per model:

- build: ``tvm_spinn.build`` (partition, int16 calibration, tiling, mapping, compile), seconds.
- llvm: wall time of one ``main`` call of the same Relax module built with
  ``tvm.compile(mod, target="llvm")`` (float32), median of ``--repeat`` runs after a warm-up.
- spinn: wall time of one ``main`` call of the SpiNNaker build (host operators,
  quantisation, the board emulator), median of ``--repeat`` runs after a warm-up;
  ``emu`` is the part spent inside the emulator (RunStatistics.wall_seconds).
- ratio: spinn / llvm (the goal is within 10x; reported, not asserted).
- pkts/inf, cores (incl. 2 live IO cores per offloaded function), max routing entries
  on one chip (of 1023): counted.
- latency, throughput: MODELLED for a SpiNN-5 board (cycle model of the ARM968 cores
  plus the 100 Mbit/s host link; see tvm_spinn/stats.py), not measured.
- link: the throughput the 100 Mbit/s host Ethernet link alone allows, MODELLED.
- bound: the board's compute bound, MODELLED::

      board MAC/s   = 48 chips * 17 cores * 200 MHz / 2.6 cycles per int16 MAC  (= 62.8 G MAC/s)
      bound samples/s = board MAC/s / MACs per inference

  i.e. the throughput if every application core on the board did nothing but MACs
  (no packets, no requantisation, perfect load balance). ``use`` = throughput / bound.
"""
from __future__ import annotations

import argparse
import json
import statistics as pystats
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_spinn  # noqa: E402
from tvm_spinn import report  # noqa: E402

from tvm_spinn import resources as res  # noqa: E402

# The board's compute bound: every application core doing nothing but MACs at the modelled rate.
BOARD_MACS_PER_S = res.SPINN_5.app_cores * res.CLOCK_HZ / res.CYCLES.mac
GOAL_RATIO = 10.0
CALIBRATION_SAMPLES = 256
SEED = 0

L = torch.nn.Linear


def mlp784() -> torch.nn.Module:
    return torch.nn.Sequential(L(784, 300), torch.nn.ReLU(), L(300, 100), torch.nn.ReLU(), L(100, 10))


def mlp64() -> torch.nn.Module:
    return torch.nn.Sequential(L(64, 128), L(128, 128), torch.nn.ReLU(), L(128, 10), torch.nn.Softmax(-1))


def board_filling() -> torch.nn.Module:
    return torch.nn.Sequential(
        L(224, 50), torch.nn.ReLU(), L(50, 50), torch.nn.Softmax(-1), L(50, 300), torch.nn.Tanh(),
        L(300, 50), torch.nn.Sigmoid(), L(50, 25), L(25, 17), torch.nn.Softmax(-1))


MODELS: Dict[str, Callable[[], torch.nn.Module]] = {"mlp784": mlp784, "mlp64": mlp64,
                                                    "board_filling": board_filling}
LABELS = {"mlp784": "MLP 784-300-100-10", "mlp64": "MLP-64 (thesis)",
          "board_filling": "board-filling MLP (thesis)"}


def median_wall(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return pystats.median(times)


def model_macs(model: torch.nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def bench_model(name: str, batch: int, repeat: int) -> Dict[str, Any]:
    torch.manual_seed(SEED)
    model = MODELS[name]().eval()
    in_features = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).in_features
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((batch, in_features)).astype(np.float32)
    calib = rng.standard_normal((CALIBRATION_SAMPLES, in_features)).astype(np.float32)

    mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
    t = time.perf_counter()
    ex = tvm_spinn.build(mod, calibration=calib)
    build_s = time.perf_counter() - t
    vm = relax.VirtualMachine(ex, tvm.cpu())
    vm_llvm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    x_tvm = tvm.runtime.tensor(x)

    emulator_times: List[float] = []

    def call_spinn() -> None:
        vm["main"](x_tvm)
        emulator_times.append(tvm_spinn.statistics(vm).wall_seconds)

    llvm_s = median_wall(lambda: vm_llvm["main"](x_tvm), repeat)
    spinn_s = median_wall(call_spinn, repeat)
    emulator_s = pystats.median(emulator_times[1:])  # without the warm-up
    y_spinn = vm["main"](x_tvm).numpy()
    y_llvm = vm_llvm["main"](x_tvm).numpy()
    emu = tvm_spinn.statistics(vm)  # counts and modelled figures of this last call, all functions
    resources = report.model_summary(ex)
    macs = model_macs(model)
    bound = BOARD_MACS_PER_S / macs
    return {
        "model": name, "label": LABELS[name], "batch": batch,
        "offloaded_functions": resources["functions"],
        "build_seconds": build_s, "mapping_seconds": resources["mapping_seconds"],
        "llvm_float32_seconds": llvm_s, "spinnaker_call_seconds": spinn_s,
        "emulator_seconds": emulator_s,
        "ratio_spinnaker_over_llvm": spinn_s / llvm_s,
        "max_abs_diff_vs_llvm": float(np.abs(y_spinn - y_llvm).max()),
        "packets_per_inference": emu.packets_per_inference, "cores": emu.cores,
        "routing_entries_max_per_chip": resources["routing_entries_max_per_chip"],
        "routing_entries_total": resources["routing_entries_total"],
        "macs_per_inference": macs, "macs_per_inference_counted": emu.macs / max(1, emu.samples),
        "modelled_latency_s": emu.modelled_latency_s,
        "modelled_throughput_per_s": emu.modelled_throughput_per_s,
        "modelled_host_link_limit_per_s": emu.host_link_limit_per_s,
        "modelled_compute_bound_per_s": bound,
        "modelled_compute_bound_latency_s": macs / BOARD_MACS_PER_S,
    }


def format_rows(rows: List[Dict[str, Any]]) -> str:
    headers = ("model", "build s", "llvm ms", "spinn ms", "emu ms", "ratio", "max|diff|", "pkts/inf", "cores",
               "rt/chip", "MACs/inf", "lat us*", "thru/s*", "link/s*", "bound/s*", "use*")
    body = [(r["label"], f"{r['build_seconds']:.1f}", f"{r['llvm_float32_seconds'] * 1e3:.1f}",
             f"{r['spinnaker_call_seconds'] * 1e3:.1f}", f"{r['emulator_seconds'] * 1e3:.1f}",
             f"{r['ratio_spinnaker_over_llvm']:.2f}x", f"{r['max_abs_diff_vs_llvm']:.3g}",
             f"{r['packets_per_inference']:.0f}", r["cores"], r["routing_entries_max_per_chip"],
             f"{r['macs_per_inference']:,}", f"{r['modelled_latency_s'] * 1e6:.0f}",
             f"{r['modelled_throughput_per_s']:.0f}", f"{r['modelled_host_link_limit_per_s']:.0f}",
             f"{r['modelled_compute_bound_per_s']:.0f}",
             f"{r['modelled_throughput_per_s'] / r['modelled_compute_bound_per_s']:.1%}") for r in rows]
    return report.table(headers, body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Dense benchmark: TVM llvm (float32) vs SpiNNaker emulator")
    parser.add_argument("--batch", type=int, default=1000, help="samples per call (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (default 5)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--json", metavar="PATH", help="write the rows to PATH as JSON")
    args = parser.parse_args(argv)

    rows = []
    for name in args.models:
        print(f"benchmarking {LABELS[name]} at batch {args.batch} ...", flush=True)
        rows.append(bench_model(name, args.batch, args.repeat))
    print()
    print(format_rows(rows))
    print(f"\nbatch {args.batch}; times are wall-clock medians of {args.repeat} calls after a warm-up "
          f"(measured on this host). ratio = spinn / llvm; goal: within {GOAL_RATIO:.0f}x "
          f"({sum(r['ratio_spinnaker_over_llvm'] <= GOAL_RATIO for r in rows)}/{len(rows)} rows meet it).\n"
          "spinn = whole VM call of the SpiNNaker build (host ops + quantisation + emulator); "
          "emu = inside the emulator.\n"
          "* MODELLED for a SpiNN-5 board, not measured: lat = latency of one sample, thru = throughput, "
          "link = limit of the 100 Mbit/s host link alone; "
          f"bound = compute bound = {res.SPINN_5.app_cores} cores * {res.CLOCK_HZ / 1e6:.0f} MHz / "
          f"{res.CYCLES.mac} cycles per MAC = {BOARD_MACS_PER_S / 1e9:.1f} G MAC/s divided by MACs/inf; "
          "use = thru / bound.\n"
          "cores include 2 live IO cores per offloaded function; rt/chip = max routing entries on one chip "
          "(limit 1023).")
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "repeat": args.repeat,
                                               "board_macs_per_s": BOARD_MACS_PER_S, "goal_ratio": GOAL_RATIO,
                                               "rows": rows}, indent=2))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
