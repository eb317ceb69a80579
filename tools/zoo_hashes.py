"""Hashes of the integer (int16) board outputs of every zoo model, for refactoring checks.

    python tools/zoo_hashes.py [--json PATH] [--models ...]

Each model (tvm_spinn.zoo, fixed seed) is built with 64 N(0, 1) calibration samples and run
on 8 more; the int16 outputs every emulated board run returns are hashed (sha256), per
model and per offloaded function in call order, together with the float32 result of
``main``. Two builds of the package compute the same integers iff the hashes are equal.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_spinn  # noqa: E402
from tvm_spinn import zoo  # noqa: E402

MODELS = {
    "mlp64": (zoo.mlp64, (64,), {}),
    "board_filling_mlp": (zoo.board_filling_mlp, (224,), {}),
    "mlp_784": (zoo.mlp_784, (784,), {}),
    "conv1d_small": (zoo.Conv1DSmall, (4, 64), {}),
    "board_filling_cnn": (zoo.BoardFillingCNN, (3, 224), {}),
    "pool_net_1d": (zoo.PoolNet1D, (4, 50), {}),
    "lenet5": (zoo.LeNet5, (1, 28, 28), {}),
    "lenet5_unfused": (zoo.LeNet5, (1, 28, 28), {"fuse_pools": False}),
    "resnet8": (lambda: zoo.randomize_bn(zoo.ResNet8()), (3, 32, 32), {}),
    "wide_conv1d": (lambda: zoo.randomize_bn(zoo.WideConv1D()), (256, 64), {}),
    "wide_conv2d": (zoo.WideConv2D, (128, 20, 20), {}),
}


def model_hashes(name: str) -> dict:
    factory, shape, options = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64,) + shape).astype(np.float32)
    x = rng.standard_normal((8,) + shape).astype(np.float32)
    ex = tvm_spinn.build(tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),)), calibration=calib, **options)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    outputs = []
    boards = {type(e.board) for e in tvm_spinn.executors(vm)}
    originals = {cls: cls.run for cls in boards}

    def recorder(cls):
        def run(self, x_q):
            y_q = originals[cls](self, x_q)
            outputs.append(np.ascontiguousarray(np.asarray(y_q, np.int16)))
            return y_q
        return run

    for cls in boards:
        cls.run = recorder(cls)
    try:
        y = vm["main"](tvm.runtime.tensor(x)).numpy()
    finally:
        for cls, fn in originals.items():
            cls.run = fn
    return {"board_runs": [hashlib.sha256(o.tobytes()).hexdigest()[:16] for o in outputs],
            "main": hashlib.sha256(np.ascontiguousarray(y, np.float32).tobytes()).hexdigest()[:16]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the hashes here")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()
    result = {}
    for name in args.models:
        result[name] = model_hashes(name)
        print(f"{name:20s} main {result[name]['main']}  board {' '.join(result[name]['board_runs'])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
