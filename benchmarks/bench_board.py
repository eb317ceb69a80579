#!/usr/bin/env python3
"""Board performance by the timed emulation, beside the old formula, and what the
emulation costs on this host.

    python benchmarks/bench_board.py [--models mlp784 lenet5 resnet8 dscnn] [--batch 256]
                                     [--repeat 3] [--json PATH]

Per model (built with the defaults, calibration and inputs N(0, 1)):

- MODELLED board figures from the timed emulation (tvm_spinn.runtime.timing, the
  calibrated cycle model): latency of one sample (a call at batch 1), throughput at
  ``--batch``, the bottleneck (core, link or host, and which), packets a board would drop,
  mJ per inference (the toolchain's energy figures at the timed throughput);
- the same two figures by the formula the statistics used before issue 10 (hand-set
  CycleModel constants: 2.6 cycles/MAC, +1 in int64, 4 per block, 40 per output, 30 per
  packet in, 12 out, 100 per sample; a 100 Mbit/s host link): ``old``;
- MEASURED on this host (wall-clock medians of ``--repeat`` calls after a warm-up): the
  emulator with timing on and off, TVM's llvm build (float32, untuned) and PyTorch eager on
  one thread, all on the same batch;
- bit-exactness of the batch's outputs against the numpy integer reference.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from tvm_spinn import zoo  # noqa: E402

MODELS: Dict[str, common.ModelSpec] = {
    "mlp784": common.ModelSpec("MLP 784-300-100-10", zoo.mlp_784, (784,)),
    "lenet5": common.ModelSpec("LeNet-5 (1x28x28)", zoo.LeNet5, (1, 28, 28)),
    "resnet8": common.ModelSpec("ResNet-8 (3x32x32)", lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32)),
    "dscnn": common.ModelSpec("DS-CNN (1x49x10, depthwise)", lambda: zoo.randomize_bn(zoo.DSCNN()), (1, 49, 10)),
}
COLUMNS = ("model", "cores", "lat us*", "old lat us*", "thru/s*", "old thru/s*", "bottleneck*", "drops*", "t/o*",
           "mJ/inf*", "emu on s", "emu off s", "on/off", "llvm s", "torch 1t s", "emu/torch", "exact")

# The hand-set constants of the cycle model before issue 10 (tiling/resources.py at 29e1e34).
OLD = dict(mac=2.6, block=4.0, wide_mac=1.0, output=40.0, packet_in=30.0, packet_out=12.0, compute=100.0,
           hop_ns=100.0, host_bits_per_s=100e6)


def _old_host_bytes(n_values: int) -> int:
    """The old formula's bytes on the wire for n_values int16 values: 8 per pair, 2 + 66
    (EIEIO header; UDP, IP, Ethernet, FCS, preamble, gap) per message of 31 pairs."""
    pairs = (n_values + 1) // 2
    return pairs * 8 + math.ceil(pairs / 31) * (2 + 66)


def old_formula(executor) -> Dict[str, float]:
    """Latency (s) and throughput (1/s) of the executor's last call by the pre-issue-10
    formula on the same counted work: host bytes in and out at 100 Mbit/s, each stage's
    slowest core, hops; throughput min(host link, slowest core)."""
    from tvm_spinn.runtime import stats as st

    program, board = executor.program, executor.board
    counters = board.core_counters()
    n = max(1, executor.last_stats.samples)
    wide = {c.label: (c.kind == 1 and c.config[4] == 2) or c.kind == 4 for c in program.cores}
    cycles = {}
    for label, c in counters.items():
        cycles[label] = (c["macs"] * (OLD["mac"] + (OLD["wide_mac"] if wide[label] else 0)) + c["blocks"] * OLD["block"]
                         + c["outputs"] * OLD["output"] + c["packets_in"] * OLD["packet_in"]
                         + c["packets_out"] * OLD["packet_out"] + c["computes"] * OLD["compute"]) / n
    per_stage: Dict[str, float] = {}
    for label, cyc in cycles.items():
        per_stage[st._stage(label)] = max(per_stage.get(st._stage(label), 0.0), cyc)
    _, links = board.router_counters()
    sent = sum(c["packets_out"] for c in counters.values()) + n * ((program.in_features + 1) // 2)
    hops = float(links.sum()) / max(1, sent)
    link_s = 8.0 / OLD["host_bits_per_s"]
    b_in, b_out = _old_host_bytes(program.in_features), _old_host_bytes(program.out_features)
    latency = ((b_in + b_out) * link_s + sum(per_stage.values()) / 200e6
               + (len(program.layers) + 1) * hops * OLD["hop_ns"] * 1e-9)
    slowest = max(cycles.values()) if cycles else 0.0
    return {"latency_s": latency, "throughput_per_s": min(1 / (max(b_in, b_out) * link_s),
                                                           200e6 / slowest if slowest else math.inf)}


def _set_timed(vm, on: bool) -> None:
    from tvm_spinn.runtime import executors

    for e in executors(vm):
        e.board.set_timed(on)


def bench(name: str, spec: common.ModelSpec, batch: int, repeat: int) -> Dict[str, Any]:
    import tvm
    from tvm import relax

    import tvm_spinn
    from tvm_spinn.runtime import executors, timing

    model, x, calib, mod = common.model_and_data(spec, batch)
    ex = tvm_spinn.build(mod, calibration=calib)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    run = lambda xs: vm["main"](tvm.runtime.tensor(xs)).numpy()  # noqa: E731

    # batch 1: the latency of one sample through an idle board
    run(x[:1])
    one = tvm_spinn.statistics(vm)
    old_one = [old_formula(e) for e in executors(vm)]
    # the batch, timing on and off (the same model, the same boards)
    emu_on: List[float] = []
    emu_off: List[float] = []

    def call(times: List[float]):
        y = run(x)
        times.append(tvm_spinn.statistics(vm).wall_seconds)
        return y

    _set_timed(vm, False)
    common.median_wall(lambda: call(emu_off), repeat)
    _set_timed(vm, True)
    _, y = common.median_wall(lambda: call(emu_on), repeat)
    full = tvm_spinn.statistics(vm)
    old_full = [old_formula(e) for e in executors(vm)]
    exact = common.bit_exact(vm, lambda: run(x))

    llvm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    llvm_s, _ = common.median_wall(lambda: llvm["main"](tvm.runtime.tensor(x)).numpy(), repeat)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            torch_s, _ = common.median_wall(lambda: model(torch.from_numpy(x)), repeat)
    finally:
        torch.set_num_threads(threads)
    t = full.timed
    return {
        "model": name, "label": spec.label, "batch": batch, "cores": full.cores,
        "latency_s": one.modelled_latency_s, "old_latency_s": sum(o["latency_s"] for o in old_one),
        "throughput_per_s": full.modelled_throughput_per_s,
        "old_throughput_per_s": min(o["throughput_per_s"] for o in old_full),
        "bottleneck": full.bottleneck, "bottleneck_class": timing.bottleneck_class(t),
        "bottleneck_utilisation": t.bottleneck_utilisation if t else None,
        "predicted_drops": full.predicted_drops, "would_drop": dict(t.would_drop) if t else {},
        "would_time_out": t.would_time_out if t else 0,
        "energy_j": full.modelled_energy_j, "packets_per_inference": full.packets_per_inference,
        "emulator_timed_s": float(np.median(emu_on)), "emulator_untimed_s": float(np.median(emu_off)),
        "llvm_s": llvm_s, "torch_1thread_s": torch_s, "bit_exact": exact,
        "max_abs_diff_vs_torch": float(np.abs(y - model(torch.from_numpy(x)).detach().numpy()).max()),
        "top_utilisation": t.top(5) if t else [],
    }


CELLS = {
    "model": lambda r: r["label"],
    "cores": lambda r: str(r["cores"]),
    "lat us*": lambda r: f"{r['latency_s'] * 1e6:,.0f}",
    "old lat us*": lambda r: f"{r['old_latency_s'] * 1e6:,.0f}",
    "thru/s*": lambda r: f"{r['throughput_per_s']:,.0f}",
    "old thru/s*": lambda r: f"{r['old_throughput_per_s']:,.0f}",
    "bottleneck*": lambda r: f"{r['bottleneck']} ({r['bottleneck_utilisation']:.0%})",
    "drops*": lambda r: f"{r['predicted_drops']:,}",
    "t/o*": lambda r: f"{r['would_time_out']:,}",
    "mJ/inf*": lambda r: f"{r['energy_j'] * 1e3:.3g}",
    "emu on s": lambda r: f"{r['emulator_timed_s']:.3f}",
    "emu off s": lambda r: f"{r['emulator_untimed_s']:.3f}",
    "on/off": lambda r: f"{r['emulator_timed_s'] / r['emulator_untimed_s']:.2f}x",
    "llvm s": lambda r: f"{r['llvm_s']:.4f}",
    "torch 1t s": lambda r: f"{r['torch_1thread_s']:.4f}",
    "emu/torch": lambda r: f"{r['emulator_timed_s'] / r['torch_1thread_s']:.1f}x",
    "exact": lambda r: {True: "yes", False: "NO", None: "-"}[r["bit_exact"]],
}

LEGEND = (
    "* MODELLED for a SpiNN-5 board, not measured: lat = one sample through an idle board (timed emulation "
    "of a batch-1 call: host link in, every core's calibrated cycles, routers and links, the live packet "
    "gatherer's flush (on its 1 ms timer tick unless 32 events fill a message), host link out); thru = "
    "samples / duration of the timed batch; bottleneck = the busiest resource (its busy share); drops = "
    "packets a board would drop (waiting longer than the router's 1.8 us at a core or link, or a core's "
    "256-packet receive ring full); t/o = partly received samples a core would release as lost (more than "
    "the 20 ms lost-sample timeout between two of their packets); mJ/inf = the toolchain's energy figures at the timed throughput; old = "
    "the pre-issue-10 formula (hand-set cycle constants, 100 Mbit/s host link) on the same counted work.",
    "Measured on this host: emu on/off = the emulator's time for the batch with timing on/off; llvm = TVM's "
    "llvm build (float32, untuned, default threads); torch 1t = PyTorch eager, one thread; medians of "
    "--repeat calls after a warm-up. exact = every offloaded function's output equals the numpy integer "
    "reference bit for bit.",
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.arg_parser(__doc__.split("\n\n")[0], MODELS, list(MODELS), 256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    args.models = common.model_names(args, MODELS)
    start = time.perf_counter()
    rows = []
    for name in args.models:
        print(f"benchmarking {MODELS[name].label} ...", flush=True)
        rows.append(bench(name, MODELS[name], args.batch, args.repeat))
    from tvm_spinn import report

    print()
    print(report.table(COLUMNS, [[CELLS[c](r) for c in COLUMNS] for r in rows]))
    print()
    print(f"batch {args.batch} (latency: batch 1). " + "\n".join(LEGEND))
    for r in rows:
        if r["predicted_drops"]:
            print(f"{r['label']}: a board would drop packets: "
                  + ", ".join(f"{k} {v:,}" for k, v in r["would_drop"].items() if v)
                  + "; busiest: " + ", ".join(f"{k} {v:.0%}" for k, v in r["top_utilisation"]))
    print(f"total benchmark time {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "repeat": args.repeat, "legend": LEGEND,
                                         "rows": rows}, indent=2, default=str) + "\n")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
