#!/usr/bin/env python3
"""Copies of a model on one board (``tvm_spinn.build(replicas=...)``): throughput against one
copy, by the timed emulation.

    python benchmarks/bench_replicas.py [--models lenet5 mlp784] [--replicas 1 2 4 auto]
                                        [--input-bits 16 8] [--batch 256] [--json PATH]

Per model and number of copies (calibration and inputs N(0, 1)): cores (COUNTED), and
MODELLED by the timed emulation (tvm_spinn.runtime.timing), not measured on a board:
throughput at ``--batch``, latency of one sample (a call at batch 1), the bottleneck, and
packets a board would drop; outputs checked bit for bit against the integer reference.
The copies share the host link (in at the runtime's pacing; TVM_SPINN_LINK_MBPS sets it)
and the output gatherer: throughput grows with copies until one of those binds.
``--input-bits 16 8`` repeats every row with 8-bit input (``tvm_spinn.build(input_bits=8)``:
four values a packet, here int8 as the N(0, 1) data is signed), and the host's bytes per
sample are COUNTED by the timed emulation.
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
    "mlp784": common.ModelSpec("MLP 784-300-100-10", zoo.mlp_784, (784,)),
    "resnet8": common.ModelSpec("ResNet-8 (3x32x32)", lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32)),
}
COLUMNS = ("model", "input bits", "copies", "cores", "host B/sample", "thru/s*", "x one copy", "lat us*",
           "bottleneck*", "drops*", "exact")


def measure(spec: common.ModelSpec, batch: int, replicas, input_bits: int = 16) -> Optional[Dict[str, Any]]:
    """One row; None when that many copies do not fit the board (the build left them on the host)."""
    import tvm
    from tvm import relax

    import tvm_spinn
    from tvm_spinn.runtime import executors

    _, x, calib, mod = common.model_and_data(spec, batch)
    ex = tvm_spinn.build(mod, calibration=calib, replicas=replicas, input_bits=input_bits)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    if not executors(vm):
        return None
    vm["main"](tvm.runtime.tensor(x[:1]))
    one = tvm_spinn.statistics(vm)
    exact = common.bit_exact(vm, lambda: vm["main"](tvm.runtime.tensor(x)))
    st = tvm_spinn.statistics(vm)
    return {"label": spec.label, "replicas_asked": replicas, "copies": max(e.program.replicas for e in executors(vm)),
            "cores": st.cores, "modelled_throughput_per_s": st.modelled_throughput_per_s,
            "modelled_latency_s": one.modelled_latency_s, "bottleneck": st.bottleneck,
            "predicted_drops": st.predicted_drops, "bit_exact": exact, "batch": batch, "input_bits": input_bits,
            "host_bytes_per_sample": st.timed.bytes_in / st.samples if st.timed else None}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.arg_parser(__doc__.split("\n\n")[0], MODELS, ["lenet5"], 256)
    ap.add_argument("--replicas", nargs="+", default=["1", "2", "4", "auto"])
    ap.add_argument("--input-bits", nargs="+", type=int, choices=(16, 8), default=[16])
    args = ap.parse_args(argv)
    args.models = common.model_names(args, MODELS)
    start = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    for name in args.models:
        base = None  # one copy, the first input_bits
        for bits in args.input_bits:
            for r in args.replicas:
                print(f"benchmarking {MODELS[name].label}, input_bits={bits}, replicas={r} ...", flush=True)
                measured = measure(MODELS[name], args.batch, r if r == "auto" else int(r), bits)
                if measured is None:
                    print(f"  {r} copies do not fit the board: skipped", flush=True)
                    continue
                row = dict(measured, model=name)
                base = base or row["modelled_throughput_per_s"]
                row["speedup"] = row["modelled_throughput_per_s"] / base
                rows.append(row)
    cells = {
        "model": lambda r: r["label"], "input bits": lambda r: str(r["input_bits"]),
        "copies": lambda r: f"{r['copies']} ({r['replicas_asked']})",
        "host B/sample": lambda r: "-" if r["host_bytes_per_sample"] is None else f"{r['host_bytes_per_sample']:,.0f}",
        "cores": lambda r: str(r["cores"]), "thru/s*": lambda r: f"{r['modelled_throughput_per_s']:,.0f}",
        "x one copy": lambda r: f"{r['speedup']:.2f}", "lat us*": lambda r: f"{r['modelled_latency_s'] * 1e6:,.0f}",
        "bottleneck*": lambda r: r["bottleneck"][:48], "drops*": lambda r: f"{r['predicted_drops']:,}",
        "exact": lambda r: "yes" if r["bit_exact"] else "NO",
    }
    return common.finish(COLUMNS, cells, rows, f"batch {args.batch} (latency: batch 1); * MODELLED by the timed emulation, not measured on a board.", start, args.json, batch=args.batch)


if __name__ == "__main__":
    sys.exit(main())
