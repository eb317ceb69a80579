"""The files of the command-line recordings (cli.txt, cli_ctrl_c.txt): LeNet-5 (random weights)
saved as .pt2 (torch.export.save, dynamic batch) and .onnx (a named dynamic batch axis),
calibration samples, inputs, and a batch of 19,200 for a long run."""
import warnings

import numpy as np
import torch

from tvm_spinn.zoo import LeNet5

torch.manual_seed(0)
model = LeNet5().eval()
x = np.random.default_rng(0).standard_normal((256, 1, 28, 28)).astype(np.float32)
np.save("calib.npy", x[:64])
np.save("x.npy", x[64:])
np.save("big.npy", np.tile(x, (75, 1, 1, 1)))  # 19,200 samples: a run of about half a minute
example = (torch.from_numpy(x[:2]),)
torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch")},)), "lenet5.pt2")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(model, example, "lenet5.onnx", dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
