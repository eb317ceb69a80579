"""Everyday mistakes; prints one line per case: name<TAB>outcome (first line of the error, or the result)."""
import os, sys, warnings, logging
import numpy as np, torch, tvm
from tvm import relax
import tvm_spinn
logging.disable(logging.CRITICAL)
warnings.simplefilter("ignore")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
x = np.random.default_rng(0).standard_normal((16, 20)).astype(np.float32)
mod = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),))
ex = tvm_spinn.build(mod, calibration=x)

def first(e):
    text = str(e).strip().splitlines()
    line = next((l for l in text if l.strip()), "")
    return f"{type(e).__name__}: {line[:220]}"

def case(name, fn):
    try:
        out = fn()
        print(f"{name}\tOK: {out}")
    except BaseException as e:  # noqa
        print(f"{name}\t{first(e)}")

def run(arr):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(arr)).numpy()
    return f"result {y.shape} {y.dtype}"

case("calibration of the wrong shape", lambda: tvm_spinn.build(mod, calibration=x[:, :10]) and "built")
case("calibration of the wrong dtype (int32)", lambda: tvm_spinn.build(mod, calibration=x.astype(np.int32)) and "built")
case("calibration in float64 (numpy's default)", lambda: tvm_spinn.build(mod, calibration=x.astype(np.float64)) and "built")
case("input in float64", lambda: run(x.astype(np.float64)))
case("input of the wrong shape", lambda: run(x[:, :10]))
case("a batch of 0", lambda: run(x[:0]))
static = tvm_spinn.from_torch(model, (torch.from_numpy(x[:2]),), dynamic_batch=False)
case("dynamic_batch=False, calibration of another batch size", lambda: tvm_spinn.build(static, calibration=x) and "built")
case("cycle_budget=-1", lambda: tvm_spinn.build(mod, calibration=x, cycle_budget=-1) and "built")
for value in ("", "EMULATOR"):
    os.environ["TVM_SPINN_BOARD"] = value
    case(f"TVM_SPINN_BOARD={value!r}", lambda: run(x))
os.environ.pop("TVM_SPINN_BOARD")
