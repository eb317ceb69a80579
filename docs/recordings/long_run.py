"""Recorded in docs/recordings/ctrl_c.txt: a long LeNet-5 run on the emulated board,
stopped with Ctrl-C; the next call on the same VM is exact. Run: bash record.sh"""
import signal
import time

import numpy as np
import torch
import tvm
from tvm import relax

import tvm_spinn
from tvm_spinn.zoo import LeNet5

torch.manual_seed(0)
x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
ex = tvm_spinn.build(tvm_spinn.from_torch(LeNet5().eval(), (torch.from_numpy(x[:2]),)), calibration=x)
vm = relax.VirtualMachine(ex, tvm.cpu())
want = vm["main"](tvm.runtime.tensor(x)).numpy()
big = tvm.runtime.tensor(np.tile(x, (300, 1, 1, 1)))
pressed = []


def ctrl_c(signum, frame):  # Python's own handler, plus the time it ran
    pressed.append(time.perf_counter())
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, ctrl_c)
print(f"running a batch of {big.shape[0]:,} samples (press Ctrl-C) ...", flush=True)
start = time.perf_counter()
try:
    vm["main"](big)
except KeyboardInterrupt:
    now = time.perf_counter()
    print(f"KeyboardInterrupt {now - start:.2f} s after the call started, {now - pressed[0]:.2f} s after Ctrl-C "
          "reached Python", flush=True)
y = vm["main"](tvm.runtime.tensor(x)).numpy()
print("next call on the same VM equals the one before:", np.array_equal(y, want))
