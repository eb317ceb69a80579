"""Dense (MLP) benchmark: TVM on the CPU (float32, llvm) vs TVM on an emulated SpiNN-5.

    python benchmarks/bench_dense.py [--batch 1000] [--repeat 5] [--json PATH] [--models ...]

Models (tvm_spinn.zoo, random init, fixed seed, inputs ~ N(0, 1)):

- ``mlp784``: MLP 784-300-100-10, relu (the classic MNIST MLP; no softmax).
- ``mlp64``: the thesis' MLP-64: 64 -> 128 -> 128 relu -> 10 softmax (softmax on the host).
- ``board_filling``: the thesis' board-filling MLP: 224 -> 50 relu -> 50 softmax ->
  300 tanh -> 50 sigmoid -> 25 -> 17 softmax (the softmaxes run on the host CPU, so
  the board runs two offloaded functions).

Per model (see benchmarks/common.py for the exact definitions):

- build: ``tvm_spinn.build`` (partition, int16 calibration, tiling, mapping, compile), seconds.
- llvm: wall time of one ``main`` call of the same Relax module built with
  ``tvm.compile(mod, target="llvm")`` (float32), median of ``--repeat`` runs after a warm-up.
- spinn: wall time of one ``main`` call of the SpiNNaker build (host operators,
  quantisation, the board emulator), median of ``--repeat`` runs after a full-batch warm-up;
  ``emu`` is the part spent inside the emulator (RunStatistics.wall_seconds).
- ratio: spinn / llvm (the goal is within 10x; reported, not asserted).
- pkts/inf, cores (incl. 2 live IO cores per offloaded function), max routing entries
  on one chip (of 1023): counted.
- latency, throughput: MODELLED for a SpiNN-5 board by the timed emulation of the call
  (tvm_spinn/runtime/timing.py: calibrated ARM cycle costs, routers, links, the host link
  at the runtime's rate, the live packet gatherer), not measured; latency is the mean over
  the batch (``benchmarks/bench_board.py`` gives one sample's).
- link: the throughput the host link alone allows at the runtime's rate, MODELLED.
- bound: the board's compute bound, MODELLED::

      board MAC/s   = 808 application cores * 200 MHz / calibrated cycles per conv MAC
      bound samples/s = board MAC/s / MACs per inference

  i.e. the throughput if every application core on the board did nothing but MACs
  (no packets, no requantisation, perfect load balance). ``use`` = throughput / bound.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from tvm_spinn import zoo  # noqa: E402

MODELS: Dict[str, common.ModelSpec] = {
    "mlp784": common.ModelSpec("MLP 784-300-100-10", zoo.mlp_784, (784,)),
    "mlp64": common.ModelSpec("MLP-64 (thesis)", zoo.mlp64, (64,)),
    "board_filling": common.ModelSpec("board-filling MLP (thesis)", zoo.board_filling_mlp, (224,)),
}
COLUMNS = ("model", "build s", "llvm ms", "spinn ms", "emu ms", "ratio", "max|diff|", "pkts/inf", "cores",
           "rt/chip", "MACs/inf", "lat us*", "thru/s*", "link/s*", "bound/s*", "use*", "mJ/inf*")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main(argv, description="Dense benchmark: TVM llvm (float32) vs SpiNNaker emulator",
                       models=MODELS, default_models=list(MODELS), default_batch=1000, default_repeat=5,
                       columns=COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
