#!/usr/bin/env python3
"""Fan-out: how many cores each packet reaches, with one multicast partition per sender
(``before``) and with one partition per set of readers (``after``, the default build).

    python benchmarks/bench_fanout.py [--models lenet5 resnet8 wide1d wide2d dscnn]
                                      [--batch 16] [--json PATH]

Per model and build (calibration and inputs N(0, 1)), COUNTED by the emulator:

- ``deliv/pkt``: packet arrivals at kernel cores per packet sent (the host's and the
  cores'; packets to the output gatherer count in the denominator only). Each arrival
  costs the core a packet interrupt, whether it uses the packet or drops it;
- ``pkts/inf``: packets sent per inference;
- ``rt/chip``, ``rt total``: routing entries (the most on one chip; all chips);

and MODELLED by the timed emulation (tvm_spinn.runtime.timing), not measured on a board:
throughput at ``--batch``, the bottleneck, and packets a board would drop. Both builds'
outputs are checked bit for bit against the numpy integer reference.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from benchmarks import common  # noqa: E402
from tvm_spinn import zoo  # noqa: E402

MODELS: Dict[str, common.ModelSpec] = {
    "lenet5": common.ModelSpec("LeNet-5 (1x28x28)", zoo.LeNet5, (1, 28, 28)),
    "resnet8": common.ModelSpec("ResNet-8 (3x32x32)", lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32)),
    "wide1d": common.ModelSpec("wide Conv1D (256x64)", zoo.WideConv1D, (256, 64)),
    "wide2d": common.ModelSpec("wide Conv2D (128x20x20)", zoo.WideConv2D, (128, 20, 20)),
    "dscnn": common.ModelSpec("DS-CNN (1x49x10)", lambda: zoo.randomize_bn(zoo.DSCNN()), (1, 49, 10)),
}
COLUMNS = ("model", "build", "cores", "pkts/inf", "deliv/pkt", "rt/chip", "rt total", "thru/s*",
           "bottleneck*", "drops*", "exact")


def measure(spec: common.ModelSpec, batch: int, split: bool) -> Dict[str, Any]:
    """Build ``spec`` with (split) or without per-reader partitions and run one batch."""
    import tvm
    from tvm import relax

    import tvm_spinn
    from tvm_spinn import report
    from tvm_spinn.machine import builder

    model, x, calib, mod = common.model_and_data(spec, batch)
    builder.SPLIT_PARTITIONS = split
    try:
        ex = tvm_spinn.build(mod, calibration=calib)
    finally:
        builder.SPLIT_PARTITIONS = True
    vm = relax.VirtualMachine(ex, tvm.cpu())
    exact = common.bit_exact(vm, lambda: vm["main"](tvm.runtime.tensor(x)))
    st = tvm_spinn.statistics(vm)
    resources = report.model_summary(ex)
    return {
        "label": spec.label, "build": "after" if split else "before", "batch": batch, "cores": st.cores,
        "packets_per_inference": st.packets_per_inference, "deliveries_per_packet": st.deliveries_per_packet,
        "routing_entries_max_per_chip": resources["routing_entries_max_per_chip"],
        "routing_entries_total": resources["routing_entries_total"],
        "modelled_throughput_per_s": st.modelled_throughput_per_s, "modelled_latency_s": st.modelled_latency_s,
        "bottleneck": st.bottleneck, "predicted_drops": st.predicted_drops, "bit_exact": exact,
    }


CELLS = {
    "model": lambda r: r["label"], "build": lambda r: r["build"], "cores": lambda r: str(r["cores"]),
    "pkts/inf": lambda r: f"{r['packets_per_inference']:.0f}",
    "deliv/pkt": lambda r: f"{r['deliveries_per_packet']:.2f}",
    "rt/chip": lambda r: str(r["routing_entries_max_per_chip"]), "rt total": lambda r: str(r["routing_entries_total"]),
    "thru/s*": lambda r: f"{r['modelled_throughput_per_s']:.0f}", "bottleneck*": lambda r: r["bottleneck"][:40],
    "drops*": lambda r: f"{r['predicted_drops']:,}", "exact": lambda r: "yes" if r["bit_exact"] else "NO",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = common.arg_parser(__doc__.split("\n\n")[0], MODELS, list(MODELS), 16).parse_args(argv)
    args.models = common.model_names(args, MODELS)
    start = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    for name in args.models:
        print(f"benchmarking {MODELS[name].label} ...", flush=True)
        rows += [dict(measure(MODELS[name], args.batch, split), model=name) for split in (False, True)]
    return common.finish(COLUMNS, CELLS, rows, f"batch {args.batch}; * MODELLED by the timed emulation, not measured on a board.", start, args.json, batch=args.batch)


if __name__ == "__main__":
    sys.exit(main())
