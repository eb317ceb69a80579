"""One board against three (issue 11 item 3): a model built for ``board="spinn5"`` and for
``board="spinn5x3"``, with copies of it (``replicas``; on three boards copy k sits on board
k % 3 and takes its input through that board's Ethernet), run on the emulator with timed
emulation; prints cores, the boards its cores sit on, the modelled (timed emulation)
latency of one sample and throughput of a batch, the bottleneck, the busiest host-in
stream and board-to-board serial link and whether it equals the integer reference. Every
time figure is MODELLED (tvm_spinn.runtime.timing).

    python benchmarks/bench_boards.py [--models resnet8 lenet5] [--configs spinn5:1 spinn5x3:auto]
                                      [--input-bits 16] [--batch 64] [--json out.json]
"""
from __future__ import annotations

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

MODELS = {"resnet8": ("ResNet-8 (3x32x32)", lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32)),
          "lenet5": ("LeNet-5 (1x28x28)", lambda: zoo.LeNet5(), (1, 28, 28))}


def measure(mod, x_calib: np.ndarray, x: np.ndarray, board: str, replicas="1", input_bits: int = 16) -> dict:
    copies = replicas if replicas == "auto" else int(replicas)
    ex = tvm_spinn.build(mod, calibration=x_calib, board=board, strict=True, replicas=copies, input_bits=input_bits)
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
    streams = {k[len("host in board "):]: v for k, v in stats.timed.utilisation.items()
               if k.startswith("host in board ")}
    host_in = (", ".join(f"{v:.0%}" for v in streams.values()) if streams else
               f"{stats.timed.utilisation.get('host in', 0.0):.0%}")
    return {"board": board, "copies": f"{program.replicas}{' (auto)' if replicas == 'auto' else ''}",
            "input bits": input_bits, "cores": program.n_cores, "boards used": len(boards),
            "latency_us": one.latency_s * 1e6, "throughput_per_s": stats.timed.throughput_per_s,
            "bottleneck": f"{stats.timed.bottleneck} ({stats.timed.bottleneck_utilisation:.0%})",
            "host in busy, per board": host_in,
            "busiest board link": f"{busiest[0][5:]} ({busiest[1]:.1%})" if busiest[0] else "-",
            "packets a board would drop": stats.timed.predicted_drops, "exact": exact}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.arg_parser(__doc__.split("\n\n")[0], MODELS, ["resnet8"], 64)
    ap.add_argument("--configs", nargs="+", default=["spinn5:1", "spinn5x3:1"],
                    help="board:copies pairs (copies a number or auto)")
    ap.add_argument("--input-bits", type=int, default=16, choices=(8, 16))
    args = ap.parse_args(argv)
    rows = []
    for key in common.model_names(args, MODELS):
        title, make, shape = MODELS[key]
        torch.manual_seed(0)
        model = make().eval()
        rng = np.random.default_rng(0)
        x_calib = rng.standard_normal((64, *shape)).astype(np.float32)
        x = rng.standard_normal((args.batch, *shape)).astype(np.float32)
        mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:1]),))
        if args.input_bits == 8:  # 8-bit data: images with pixels k / 255
            x_calib, x = (np.round(np.clip(v * 40 + 128, 0, 255)) / 255 for v in (x_calib, x))
            x_calib, x = x_calib.astype(np.float32), x.astype(np.float32)
            x_calib[0].flat[0] = 1.0  # the calibration holds a 255: k / 255 travels as k
        for config in args.configs:
            board, _, copies = config.partition(":")
            row = {"model": title, **measure(mod, x_calib, x, board, copies or "1", args.input_bits)}
            rows.append(row)
            print(" | ".join(f"{k}: {v:,.0f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()),
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
