"""CNN benchmark: TVM on the CPU (float32, llvm) vs TVM on an emulated SpiNN-5.

    python benchmarks/bench_cnn.py [--batch 256] [--repeat 3] [--json PATH] [--models ...|all]

Models (tvm_spinn.zoo, random init, fixed seed, inputs ~ N(0, 1)); the default runs the two
main ones:

- ``lenet5``: LeNet-5 on 1x28x28: conv2d 5x5, max pool, conv2d 5x5, max pool, dense
  400-120-84-10.
- ``resnet8``: MLPerf Tiny ResNet-8 on 3x32x32: conv2d + BatchNorm (random running
  statistics, ``zoo.randomize_bn``, so BN folding is exercised) + residual adds,
  16/32/64 filters, average pool, dense 64-10, softmax (on the host).
- ``conv1d_small`` (extra): the thesis' Conv1D-small on 4x64.
- ``board_filling_cnn`` (extra): the thesis' board-filling CNN on 3x224.
- ``lenet5_unfused`` (extra): LeNet-5 built with ``fuse_pools=False`` (every pool on its
  own cores), to compare packets and cores with the default build.
- ``wide_conv1d``, ``wide_conv2d`` (extra): convolutions over 256 x 64 and 128 x 20 x 20,
  cut by input-channel groups (partial sums and reducers).

Per model the columns of bench_dense.py (see benchmarks/common.py for the exact
definitions), plus ``rt total`` (routing entries on all chips) and ``bound us*`` (the
MODELLED compute-bound latency: MACs/inf / board MAC/s). MACs/inf are the conv and dense
MACs of the PyTorch model (every kernel tap of every output, padding included).

The SpiNNaker build's warm-up call runs on 16 samples, not the whole batch: the emulator
runs ResNet-8 at ~0.1 s per sample, and the board is opened when the VM is created, so a
full-batch warm-up would only add time (the llvm warm-up uses the full batch).
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
    "lenet5": common.ModelSpec("LeNet-5 (1x28x28)", zoo.LeNet5, (1, 28, 28)),
    "resnet8": common.ModelSpec("ResNet-8 (MLPerf Tiny, 3x32x32)",
                                lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32)),
    "conv1d_small": common.ModelSpec("Conv1D-small (thesis, 4x64)", zoo.Conv1DSmall, (4, 64)),
    "board_filling_cnn": common.ModelSpec("board-filling CNN (thesis, 3x224)", zoo.BoardFillingCNN, (3, 224)),
    "lenet5_unfused": common.ModelSpec("LeNet-5, pools on their own cores", zoo.LeNet5, (1, 28, 28),
                                       {"fuse_pools": False}),
    "wide_conv1d": common.ModelSpec("Conv1D over 256x64 (input-channel groups)", zoo.WideConv1D, (256, 64)),
    "wide_conv2d": common.ModelSpec("Conv2D over 128x20x20 (input-channel groups)", zoo.WideConv2D, (128, 20, 20)),
}
DEFAULT_MODELS = ("lenet5", "resnet8")
COLUMNS = ("model", "build s", "llvm ms", "spinn ms", "emu ms", "ratio", "max|diff|", "pkts/inf", "cores",
           "rt/chip", "rt total", "MACs/inf", "lat us*", "thru/s*", "link/s*", "bound/s*", "bound us*", "use*", "mJ/inf*")
SPINN_WARMUP_SAMPLES = 16
# Published reference points (shared/notes/benchmarks.md): measured by others, not here.
FOOTNOTES = (
    "published reference points (not measured here): MLPerf Tiny ResNet-8 reference on a Cortex-M4 "
    "at 120 MHz: 704 ms and 29.2 mJ per inference; TVM on the same MCU: 390 ms per inference.",
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main(argv, description="CNN benchmark: TVM llvm (float32) vs SpiNNaker emulator",
                       models=MODELS, default_models=DEFAULT_MODELS, default_batch=256, default_repeat=3,
                       columns=COLUMNS, footnotes=FOOTNOTES, spinn_warmup_samples=SPINN_WARMUP_SAMPLES)


if __name__ == "__main__":
    sys.exit(main())
