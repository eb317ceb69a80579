#!/usr/bin/env bash
# The session of cli.txt, run by record.sh inside script(1) (a terminal: progress bars show):
# compile LeNet-5 from .onnx and from .pt2, run, report with plots, two mistakes.
cd "$1"
show() { printf '$ %s\n' "$1"; eval "$1"; printf '[exit %s]\n' "$?"; }  # the command as typed, its output, its exit code
show "python make_models.py"
show "ls"
show "python -m tvm_spinn compile lenet5.onnx -c calib.npy -o lenet5_onnx.so"
show "python -m tvm_spinn compile lenet5.pt2 -c calib.npy -o lenet5.so"
show "python -m tvm_spinn run lenet5_onnx.so x.npy -o y_onnx.npy"
show "python -m tvm_spinn run lenet5.so x.npy -o y.npy --plot plots"
show "python -c \"import numpy as np; print('.onnx and .pt2 modules: same outputs:', np.array_equal(np.load('y.npy'), np.load('y_onnx.npy')))\""
show "python -m tvm_spinn report lenet5.so --plot report_plots --format svg"
show "python -m tvm_spinn compile lenet5.onx -c calib.npy"
show "python -m tvm_spinn run lenet5.pt2 x.npy -o y.npy"
