"""One board against three (issue 11 item 3): a model built for ``board="spinn5"`` and for
``board="spinn5x3"``, run on the emulator with timed emulation; prints cores, the boards
its cores sit on, the modelled (timed emulation) latency of one sample and throughput of a
batch, the bottleneck, the busiest board-to-board serial link and whether both equal the
integer reference. Every time figure is MODELLED (tvm_spinn.runtime.timing).

    python benchmarks/bench_boards.py [--models resnet8] [--batch 64] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_spinn  # noqa: E402
from benchmarks import common  # noqa: E402
from tvm_spinn import zoo  # noqa: E402
from tvm_spinn.tiling import resources as res  # noqa: E402

MODELS = {"resnet8": ("ResNet-8 (3x32x32)", lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32))}


def measure(mod, x_calib: np.ndarray, x: np.ndarray, board: str) -> dict:
    ex = tvm_spinn.build(mod, calibration=x_calib, board=board, strict=True)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    vm["main"](tvm.runtime.tensor(x[:1]))
    one = tvm_spinn.statistics(vm).timed
    exact = common.bit_exact(vm, lambda: vm["main"](tvm.runtime.tensor(x)))
    stats = tvm_spinn.statistics(vm)
    program = tvm_spinn.executors(vm)[0].program
    machine = res.BOARDS[board]
    boards = {machine.ethernet_chip_of(cx, cy) for cx, cy, _ in program.placements.values()}
    serial = {k: v for k, v in stats.timed.utilisation.items() if k.startswith("link board ")}
    busiest = max(serial.items(), key=lambda kv: kv[1]) if serial else ("", 0.0)
    return {"board": board, "cores": program.n_cores, "boards used": len(boards),
            "latency_us": one.latency_s * 1e6, "throughput_per_s": stats.timed.throughput_per_s,
            "bottleneck": f"{stats.timed.bottleneck} ({stats.timed.bottleneck_utilisation:.0%})",
            "busiest board link": f"{busiest[0][5:]} ({busiest[1]:.1%})" if busiest[0] else "-",
            "packets a board would drop": stats.timed.predicted_drops, "exact": exact}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet8"], choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=64, help="samples of the throughput run")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for key in args.models:
        title, make, shape = MODELS[key]
        torch.manual_seed(0)
        model = make().eval()
        rng = np.random.default_rng(0)
        x_calib = rng.standard_normal((64, *shape)).astype(np.float32)
        x = rng.standard_normal((args.batch, *shape)).astype(np.float32)
        mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:1]),))
        for board in ("spinn5", "spinn5x3"):
            row = {"model": title, **measure(mod, x_calib, x, board)}
            rows.append(row)
            print(" | ".join(f"{k}: {v:,.0f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()),
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
