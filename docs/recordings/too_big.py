"""Recorded in docs/recordings/too_big.txt: an 8192 x 8192 layer is refused from its weight
shapes, before the calibration capture. Run: bash record.sh"""
import sys
import time

import numpy as np
import torch

import tvm_spinn

start = time.perf_counter()
model = torch.nn.Sequential(torch.nn.Linear(8192, 8192), torch.nn.ReLU()).eval()
x = np.random.default_rng(0).standard_normal((16, 8192)).astype(np.float32)
mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
try:
    tvm_spinn.build(mod, calibration=x, strict=True)
except tvm_spinn.ResourceError as exc:
    print(f"ResourceError: {exc}")
print(f"{time.perf_counter() - start:.1f} s from the model's creation to the refusal", file=sys.stderr)
